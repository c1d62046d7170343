"""The storage root of a sweep, and the registry inside it.

::

    clips/<clip_id>/…                  inputs as given, and clip.json (prompt, edit type, mask)
    bundles/<clip_id>/<fit_key>/…      one bundle per distinct fit setting
    fits/<clip_id>/<fit_key>/*.json    one record per fit attempt (host, state, error)
    tune/<clip_id>/<fit_key>/…         the Ray Tune experiments (restorable)
    registry/<clip_id>.json            the clip's best bundle and settings; beside it the trials
                                       (.trials.csv) and their plot (.trials.png)
    status/<clip_id>.json              queued, fitting, searching, done or failed
    jobs/<job_id>.json                 an upload through the HTTP service: its clip, state and error
    optuna.db                          Optuna's studies (SQLite; local roots only)
    results.csv                        the last sweep's table

The root is a local directory or an ``s3://``/``gs://`` URI (through fsspec where its
filesystem package is installed, else through pyarrow, which Ray already brings).

Readers never see a partial write. Locally every file is written under a temporary name and
renamed into place, and a folder is swapped in whole (:mod:`nrt.files`). Object stores have no rename, but an object appears whole or not at all:
there the payload goes first and the small JSON that makes it visible (``bundle.json``, the
registry entry) last, and readers accept only entries whose JSON is present and whose listed
files exist.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import fsspec

from . import __version__
from .errors import InputError, NrtError
from .files import atomic_file, replace_dir
from .hub import cache_dir, ensure_dir
from .manifest import validate_clip_id

logger = logging.getLogger(__name__)

REGISTRY_FORMAT = "nrt-registry"
REGISTRY_VERSION = 1
REMOTE_SCHEMES = ("s3", "gs", "gcs")


class Storage:
    """A storage root: paths inside it are relative, ``/``-separated strings."""

    def __init__(self, root: str | os.PathLike) -> None:
        text = str(root)
        if not text:
            raise InputError("the storage root is empty")
        scheme = text.split("://", 1)[0] if "://" in text else ""
        self.is_local = scheme in ("", "file")
        if self.is_local:
            path = Path(text.removeprefix("file://")).expanduser().resolve()
            self.root = str(path)
            self.fs = fsspec.filesystem("file")
            self._base = self.root
        else:
            self.root = text.rstrip("/")
            self.fs, self._base = _remote_filesystem(self.root)

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def __reduce__(self):
        return (Storage, (self.root,))

    # -- paths ------------------------------------------------------------------------------
    def uri(self, rel: str = "") -> str:
        """The full path or URI of ``rel``, for tools that take one (Ray Tune's storage_path)."""
        return self.root if not rel else f"{self.root}/{_clean(rel)}"

    def local_path(self, rel: str = "") -> Path:
        """``rel`` as a local path; only for a local root."""
        if not self.is_local:
            raise NrtError(f"{self.root} is not a local directory")
        return Path(self.root, _clean(rel)) if rel else Path(self.root)

    def _path(self, rel: str) -> str:
        return f"{self._base}/{_clean(rel)}" if rel else self._base

    # -- reading ----------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def list(self, rel: str = "") -> list[str]:
        """Names directly under ``rel`` (files and folders); empty when it does not exist."""
        try:
            entries = self.fs.ls(self._path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries})

    def get_dir(self, rel: str, local: str | os.PathLike) -> Path:
        """Copy the folder ``rel`` to the local directory ``local`` (created)."""
        local = Path(local)
        local.mkdir(parents=True, exist_ok=True)
        base = self._path(rel)
        for path in self.fs.find(base):
            target = local / str(path)[len(base) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(path, str(target))
        return local

    # -- writing ----------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one file so that a reader sees all of it or nothing."""
        if self.is_local:
            target = self.local_path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_file(target, lambda tmp: _write_synced(tmp, data))
        else:
            self.fs.pipe_file(self._path(rel), data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def put_file(self, local: str | os.PathLike, rel: str) -> None:
        """Copy a local file into the root (atomically, as :meth:`write_bytes`)."""
        if self.is_local:
            self.write_bytes(rel, Path(local).read_bytes())
        else:
            self.fs.put_file(str(local), self._path(rel))

    def put_dir(self, local: str | os.PathLike, rel: str, index: str) -> None:
        """Copy a local folder to ``rel``, its ``index`` file last (swapped into place whole locally)."""
        local = Path(local)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        names = {p.relative_to(local).as_posix() for p in files}
        if index not in names:
            raise NrtError(f"{local} has no {index}")
        if self.is_local:
            replace_dir(self.local_path(rel), lambda staging: shutil.copytree(local, staging, dirs_exist_ok=True))
            return
        for path in files:
            name = path.relative_to(local).as_posix()
            if name != index:
                self.fs.put_file(str(path), self._path(f"{rel}/{name}"))
        self.fs.put_file(str(local / index), self._path(f"{rel}/{index}"))

    def remove(self, rel: str) -> None:
        """Remove a file or folder; nothing happens when it does not exist."""
        if self.exists(rel):
            self.fs.rm(self._path(rel), recursive=True)


def _clean(rel: str) -> str:
    parts = [p for p in str(rel).replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InputError(f"path {rel!r} leaves the storage root")
    return "/".join(parts)


def _remote_filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    scheme = uri.split("://", 1)[0]
    if scheme not in REMOTE_SCHEMES and scheme != "memory":
        raise InputError(f"storage {uri!r}: use a local directory, s3://bucket/prefix or gs://bucket/prefix")
    try:
        fs, base = fsspec.core.url_to_fs(uri)
        return fs, base.rstrip("/")
    except ImportError:
        # s3fs or gcsfs is not installed: pyarrow's own filesystems do the same job
        from fsspec.implementations.arrow import ArrowFSWrapper
        from pyarrow import fs as pafs

        arrow, base = pafs.FileSystem.from_uri(uri)
        return ArrowFSWrapper(arrow), base.rstrip("/")


def local_cache(storage: Storage, rel: str) -> Path:
    """Where a worker keeps its local copy of ``rel`` from a remote root."""
    import hashlib

    root = hashlib.sha256(storage.root.encode()).hexdigest()[:12]
    return cache_dir() / "storage" / root / _clean(rel)


def fetch_dir(storage: Storage, rel: str, index: str) -> Path:
    """``rel`` as a local folder: itself on a local root, else a cached copy (downloaded once)."""
    if storage.is_local:
        return storage.local_path(rel)
    return ensure_dir(local_cache(storage, rel), lambda staging: storage.get_dir(rel, staging), index)


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# -- bundles --------------------------------------------------------------------------------
def bundle_rel(clip_id: str, fit_key: str) -> str:
    return f"bundles/{validate_clip_id(clip_id)}/{fit_key}"


def bundle_ready(storage: Storage, rel: str) -> bool:
    """A complete bundle sits at ``rel``: its ``bundle.json`` and every file it lists."""
    try:
        meta = storage.read_json(f"{rel}/bundle.json")
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return all(storage.exists(f"{rel}/{name}") for name in meta.get("files", []))


# -- the registry ---------------------------------------------------------------------------
def registry_rel(clip_id: str, suffix: str = ".json") -> str:
    return f"registry/{validate_clip_id(clip_id)}{suffix}"


def write_registry_entry(storage: Storage, entry: dict[str, Any]) -> str:
    """Publish a clip's entry. Every file it lists must already be in place: the JSON goes last."""
    clip_id = validate_clip_id(entry["clip_id"])
    missing = [f for f in entry.get("files", []) if not storage.exists(f)]
    if missing:
        raise NrtError(f"registry entry of {clip_id} lists files that are not written: {', '.join(missing)}")
    entry = {
        "format": REGISTRY_FORMAT,
        "format_version": REGISTRY_VERSION,
        **entry,
        "nrt_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    rel = registry_rel(clip_id)
    storage.write_json(rel, entry)
    return rel


def read_registry_entry(storage: Storage, clip_id: str) -> dict[str, Any] | None:
    """The clip's entry, or None unless its JSON is present, readable and every listed file exists."""
    rel = registry_rel(clip_id)
    try:
        entry = storage.read_json(rel)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("ignoring %s: not valid JSON", storage.uri(rel))
        return None
    if entry.get("format") != REGISTRY_FORMAT or not isinstance(entry.get("format_version"), int):
        logger.warning("ignoring %s: not an nrt registry entry", storage.uri(rel))
        return None
    if entry["format_version"] > REGISTRY_VERSION:
        logger.warning(
            "ignoring %s: registry format %s is newer than this nrt reads", storage.uri(rel), entry["format_version"]
        )
        return None
    if entry.get("clip_id") != clip_id:
        logger.warning("ignoring %s: it names clip %r", storage.uri(rel), entry.get("clip_id"))
        return None
    if not all(storage.exists(f) for f in entry.get("files", [])):
        logger.warning("ignoring %s: a file it lists is missing", storage.uri(rel))
        return None
    return entry


def list_registry(storage: Storage) -> list[dict[str, Any]]:
    """Every readable entry of the registry, by clip id."""
    entries = []
    for name in storage.list("registry"):
        if name.endswith(".json") and not name.startswith("."):
            try:
                clip_id = validate_clip_id(name[: -len(".json")])
            except InputError:
                continue
            entry = read_registry_entry(storage, clip_id)
            if entry is not None:
                entries.append(entry)
    return entries


def new_attempt_rel(clip_id: str, fit_key: str) -> str:
    """A fresh name for one fit attempt's record."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"fits/{validate_clip_id(clip_id)}/{fit_key}/{stamp}-{uuid.uuid4().hex[:8]}.json"
