"""nrt: audio editing with non-rigid text prompts."""

__version__ = "0.1.0"
