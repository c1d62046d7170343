"""Finding model files: a local directory, a built-in name, or a hub snapshot."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError
from .files import staging_dir, swap_dir

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where nrt keeps what it builds itself (the tiny model, ...): ``$NRT_CACHE`` or ``~/.cache/nrt``."""
    return Path(os.environ.get("NRT_CACHE", Path.home() / ".cache" / "nrt"))


def resolve_model_dir(
    name_or_path: str | os.PathLike,
    allow_patterns: Sequence[str] | None = None,
    revision: str | None = None,
) -> tuple[Path, str | None]:
    """Return ``(directory, revision)`` for a local directory or a hub repository id.

    A hub id is served from the local cache first; the hub is asked only when the cache
    misses and ``HF_HUB_OFFLINE`` is not set, with a short time-out, so a model that is
    neither here nor reachable fails in seconds with one line that says what to do.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, None
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(f"model {name!r} is neither a model directory nor a hub id of the form owner/name")

    from huggingface_hub import snapshot_download

    allow_patterns = list(allow_patterns) if allow_patterns is not None else None

    try:
        snapshot = snapshot_download(name, revision=revision, allow_patterns=allow_patterns, local_files_only=True)
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise ModelNotFoundError(_not_found(name, "not in the local cache and HF_HUB_OFFLINE is set")) from None
        try:
            snapshot = snapshot_download(name, revision=revision, allow_patterns=allow_patterns, etag_timeout=5)
        except Exception as exc:  # network errors, 401/404 from the hub, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(_not_found(name, reason[:200])) from None
    snapshot_path = Path(snapshot)
    return snapshot_path, snapshot_path.name


def _not_found(name: str, reason: str) -> str:
    return (
        f"model {name!r} could not be found ({reason}); on a machine with access run "
        f"`huggingface-cli download {name} --local-dir DIR` and pass --model DIR"
    )


def fingerprint(directory: Path, names: Sequence[str]) -> str:
    """A short revision for a local model directory: configs by content, weights by size."""
    digest = hashlib.sha256()
    for name in sorted(names):
        file = directory / name
        if not file.exists():
            continue
        digest.update(name.encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return "local-" + digest.hexdigest()[:16]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path} is missing: is {path.parent} a complete model directory?") from None
    except json.JSONDecodeError as exc:
        raise ModelNotFoundError(f"{path} is not valid JSON ({exc})") from None


def ensure_cached(name: str, write: Callable[[Path], Any], marker: str, root: Path | None = None) -> Path:
    """``root/name`` in nrt's cache (``root`` defaults to :func:`cache_dir`), written once by ``write``."""
    return ensure_dir((root or cache_dir()) / name, write, marker)


def ensure_dir(target: Path, write: Callable[[Path], Any], marker: str) -> Path:
    """``target``, written once by ``write`` into a staging folder that is swapped into place.

    ``marker`` is a file that exists only in a complete copy; a process that loses the race
    to another writer keeps the winner's copy.
    """
    if (target / marker).exists():
        return target
    with staging_dir(target) as staging:
        write(staging)
        if not (target / marker).exists():  # else another writer finished first
            swap_dir(staging, target)
    return target
