"""nrt-mini's edit cases on disk: input and reference wavs and the manifest ``nrt eval`` reads.

Each case of :func:`nrt.mini.scenes.edit_cases` becomes ``audio/<id>.wav`` (the input: the
source scene, or for inpainting the target with the gap silenced) and ``reference/<id>.wav``
(the target scene, the audio the edit should produce), both 16-bit at the scenes' rate, and a
row of ``manifest.csv`` with its edit type, target prompt, inpainting mask and reference.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from ..audio import write_audio
from ..files import atomic_file
from ..masks import format_mask
from .scenes import SAMPLE_RATE, EditCase

MANIFEST_COLUMNS = ("id", "edit_type", "audio", "target_prompt", "mask", "reference")


def write_cases(cases: Sequence[EditCase], root: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write ``cases`` under ``root`` (wavs and ``manifest.csv``) and return the manifest's path."""
    root = Path(root)
    for folder in ("audio", "reference"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for case in cases:
        audio, reference = f"audio/{case.id}.wav", f"reference/{case.id}.wav"
        write_audio(root / audio, case.source_audio(sample_rate), sample_rate, subtype="PCM_16")
        write_audio(root / reference, case.target.render(sample_rate), sample_rate, subtype="PCM_16")
        mask = format_mask([case.mask]) if case.mask else ""
        writer.writerow([case.id, case.edit_type, audio, case.target_prompt, mask, reference])
    text = table.getvalue()
    return atomic_file(root / "manifest.csv", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


__all__ = ["MANIFEST_COLUMNS", "write_cases"]
