"""Writing files and directories so that a reader sees the old version or the new one, never a part.

A file (:func:`atomic_file`) is written under a temporary name beside its target and renamed
over it: ``rename(2)`` replaces a file atomically on every POSIX file system.

A directory (:func:`replace_dir`, :func:`swap_dir`) is written whole into a staging directory
beside its target, then put in the target's place. What a reader of the target can see:

- **no target yet**: one ``rename(2)``; the directory appears whole or not at all, everywhere.
- **a target to replace, on Linux** where the file system supports
  ``renameat2(RENAME_EXCHANGE)`` (ext4, xfs, btrfs, tmpfs and others; not NFS): the two names
  are exchanged in one step, so every lookup of the target finds a whole directory, the old one
  or the new one; the old one, left under the staging name, is removed afterwards.
- **a target to replace, anywhere else** (another kernel, NFS, most FUSE file systems, macOS,
  Windows): the old directory is renamed aside and the new one renamed in. Each rename is atomic,
  so no reader ever sees a partial directory, but between the two a lookup can find no target.

The guarantee is per lookup of the target path: a reader that opens several files of the
directory one by one while a swap lands may take them from both versions, or find the old ones
gone. Readers that must agree across files check what the index file records (a bundle's
``bundle.json`` lists its files and the hash of its input).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# A rename onto one of these fails because the target is there (a directory that is not empty,
# or another kind of file); the swap then exchanges the two or moves the old one aside.
_TARGET_EXISTS = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}
# renameat2 fails with these where the kernel, the C library or the file system lacks the exchange.
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP}
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_SWAP_ATTEMPTS = 8


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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (its folder made): readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def json_safe(data: Any) -> Any:
    """``data`` with NaN and infinities as None, which JSON can hold."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically; NaN and infinities become null."""
    return write_text(path, json.dumps(json_safe(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike, mode: int = 0o755) -> Iterator[Path]:
    """A fresh hidden directory beside ``target`` (its parents made), removed on exit if still there.

    Fill it, then :func:`swap_dir` it into place; anything that leaves the block first (an
    error, an interruption, a decision not to swap) leaves no trace of it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(staging, mode)
        yield staging
    finally:
        _remove(staging)


def swap_dir(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the complete directory ``staging`` at ``target`` (same file system), replacing what is there.

    Atomic as the module notes say: one rename where ``target`` is absent, an exchange of the two
    names where Linux and the file system allow it, else the old one renamed aside first. The
    replaced directory is removed; on a failure ``target`` is left as it was.
    """
    staging, target = Path(staging), Path(target)
    for _ in range(_SWAP_ATTEMPTS):
        try:
            os.rename(staging, target)  # no target, or an empty directory: one atomic step
            return target
        except OSError as exc:
            if exc.errno not in _TARGET_EXISTS:
                raise
        try:
            exchanged = exchange(staging, target)
        except FileNotFoundError:
            if not staging.exists():
                raise
            continue  # the target went away since the rename failed: rename again
        if exchanged:
            _remove(staging)  # the old directory, now under the staging name
            return target
        _replace_aside(staging, target)
        return target
    raise OSError(errno.EBUSY, f"{target} kept changing while {staging} was swapped in", str(target))


def replace_dir(target: str | os.PathLike, write: Callable[[Path], object], mode: int = 0o755) -> Path:
    """Have ``write`` fill a staging directory beside ``target``, then swap it in whole (:func:`swap_dir`).

    A failure in ``write`` leaves ``target`` as it was and no staging directory behind.
    """
    with staging_dir(target, mode) as staging:
        write(staging)
        return swap_dir(staging, target)


def exchange(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Exchange two existing names in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, having changed nothing, where the platform or the file system cannot.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), os.fspath(first), None, os.fspath(second))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (glibc 2.28 and later), or None where it has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _replace_aside(staging: Path, target: Path) -> None:
    """The portable swap: the old directory renamed aside, the new one renamed in, the old one removed."""
    aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _remove(aside)


def _remove(path: Path) -> None:
    """Remove a directory tree or a file; nothing when it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
