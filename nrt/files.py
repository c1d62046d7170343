"""Writing files so that a reader sees the old version or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_file(path: str | os.PathLike, write: Callable[[str], object], mode: int = 0o644) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    A failure (or an interruption) removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
