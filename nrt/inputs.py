"""What nrt accepts from its users, defined once for every way in: CLI, manifest, sweep and HTTP."""

from __future__ import annotations

EDIT_TYPES = ("addition", "style_transfer", "inpainting")
"""The edits of the paper's Table 1; a bundle, a manifest row and an upload each name one."""

MAX_SECONDS = 30.0
"""The longest input accepted by default, in seconds (``--max-seconds``, the service's ``max_seconds``)."""

MIN_SECONDS = 0.5
"""The shortest input accepted, in seconds."""

MAX_PROMPT = 500
"""The longest target prompt accepted, in characters."""

__all__ = ["EDIT_TYPES", "MAX_PROMPT", "MAX_SECONDS", "MIN_SECONDS"]
