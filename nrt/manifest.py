"""The manifest of clips: a CSV of ``id, edit_type, audio, target_prompt``, optional ``mask`` and ``reference``.

Extra columns are kept (``ManifestRow.extra``) and otherwise ignored. Relative audio paths are
relative to the manifest. ``mask`` holds inpainting ranges in seconds, ``start-end`` joined by
``;``; an inpainting row without one fills the input's silent gaps, found once the audio is
read. ``reference`` is the audio the edit should produce, where it is known (any rate, channels
and length; :mod:`nrt.reference` measures edits against it); an empty cell means none. Every
row is checked before anything heavy runs, and one :class:`InputError` lists every bad row;
:func:`load_clips` then reads the audio (and reference) of every row (``nrt eval`` and the
sweep share it).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .audio import AudioClip, load_audio, samples_sha256
from .errors import InputError
from .inputs import EDIT_TYPES, MAX_PROMPT, MAX_SECONDS
from .masks import Range, merge_ranges, parse_mask, resolve_mask

REQUIRED_COLUMNS = ("id", "edit_type", "audio", "target_prompt")
OPTIONAL_COLUMNS = ("mask", "reference")
MAX_CLIP_ID = 128
_CLIP_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
CLIP_ID_PATTERN = rf"^[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_CLIP_ID - 1}}}$"
"""The clip ids :func:`validate_clip_id` accepts, as one regular expression (for schemas): letters,
digits, ``-``, ``_``, ``.``; no leading dot; at most ``MAX_CLIP_ID`` characters."""


def validate_clip_id(text: str) -> str:
    """``text`` if it is a safe clip id: letters, digits, ``-``, ``_``, ``.``; no leading dot; at most 128."""
    if not isinstance(text, str) or not text:
        raise InputError("the clip id is empty")
    if len(text) > MAX_CLIP_ID:
        raise InputError(f"clip id {text[:40]!r}... has {len(text)} characters; at most {MAX_CLIP_ID} are accepted")
    if not _CLIP_ID.fullmatch(text):  # fullmatch: "$" alone would let a trailing newline through
        raise InputError(f"clip id {text!r} may hold only letters, digits, '-', '_' and '.'")
    if text.startswith("."):
        raise InputError(f"clip id {text!r} must not start with a dot")
    return text


@dataclass(frozen=True)
class ManifestRow:
    """One clip of a manifest, checked; ``audio`` and ``reference`` are resolved against the manifest's directory."""

    clip_id: str
    edit_type: str
    audio: Path
    target_prompt: str
    mask: list[Range] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0
    reference: Path | None = None  # the audio the edit should produce, if known


def _check_row(raw: dict[str, str | None], base: Path) -> ManifestRow:
    """One row, or an InputError naming the first thing wrong with it."""
    clip_id = validate_clip_id((raw.get("id") or "").strip())
    edit_type = (raw.get("edit_type") or "").strip()
    if edit_type not in EDIT_TYPES:
        raise InputError(f"edit_type {edit_type!r} is not one of {', '.join(EDIT_TYPES)}")
    prompt = (raw.get("target_prompt") or "").strip()
    if not prompt:
        raise InputError("target_prompt is empty")
    if len(prompt) > MAX_PROMPT:
        raise InputError(f"target_prompt has {len(prompt)} characters; at most {MAX_PROMPT} are accepted")
    audio_text = (raw.get("audio") or "").strip()
    if not audio_text:
        raise InputError("audio is empty")
    audio = _audio_path(audio_text, base, "audio")
    reference_text = (raw.get("reference") or "").strip()
    reference = _audio_path(reference_text, base, "reference") if reference_text else None
    mask_text = (raw.get("mask") or "").strip()
    mask = None
    if mask_text:
        if edit_type != "inpainting":
            raise InputError(f"a mask applies to inpainting, but edit_type is {edit_type}")
        mask = merge_ranges(parse_mask(mask_text))
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    extra = {k: (v or "") for k, v in raw.items() if k is not None and k not in known}
    return ManifestRow(clip_id, edit_type, audio, prompt, mask, extra, reference=reference)


def _audio_path(text: str, base: Path, column: str) -> Path:
    """The file a manifest cell names, relative to the manifest's directory unless absolute."""
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise InputError(f"{column} {text!r} is not a file (looked for {path})")
    return path


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """The rows of a manifest CSV, all checked; one InputError lists every bad row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise InputError(
                    f"manifest {path}: missing column(s) {', '.join(missing)}; the header must name "
                    f"{', '.join(REQUIRED_COLUMNS)} (and optionally {' and '.join(OPTIONAL_COLUMNS)})"
                )
            raws = [(reader.line_num, raw) for raw in reader]
    except UnicodeDecodeError as exc:
        raise InputError(f"manifest {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"manifest {path}: not a readable CSV ({exc})") from None

    rows: list[ManifestRow] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for line, raw in raws:
        if not any((v or "").strip() for k, v in raw.items() if k is not None):
            continue  # a blank line
        label = f"line {line}" + (f" ({raw.get('id')!r})" if raw.get("id") else "")
        if None in raw:
            errors.append(f"{label}: more fields than the header names")
            continue
        try:
            row = _check_row(raw, path.parent)
        except InputError as exc:
            errors.append(f"{label}: {exc}")
            continue
        if row.clip_id in seen:
            errors.append(f"{label}: id {row.clip_id!r} repeats line {seen[row.clip_id]}")
            continue
        seen[row.clip_id] = line
        rows.append(replace(row, line=line))
    if errors:
        plural = "row" if len(errors) == 1 else "rows"
        raise InputError(f"manifest {path}: {len(errors)} bad {plural}: " + "; ".join(errors))
    if not rows:
        raise InputError(f"manifest {path} holds no clips")
    return rows


@dataclass
class CheckedClip:
    """A manifest row with its audio (and reference) read, its inpainting mask resolved and its samples hashed."""

    row: ManifestRow
    clip: AudioClip
    mask: list[Range] | None
    sha256: str
    reference: AudioClip | None = None

    @property
    def clip_id(self) -> str:
        return self.row.clip_id


def load_clips(rows: Sequence[ManifestRow], max_seconds: float = MAX_SECONDS) -> list[CheckedClip]:
    """Read every clip (and reference) and resolve inpainting masks; one InputError lists every bad row."""
    clips, errors = [], []
    for row in rows:
        try:
            clip = load_audio(row.audio, max_seconds=max_seconds)
            mask = resolve_mask(
                row.edit_type, row.mask, clip.samples, clip.sample_rate, hint="in a mask column", name=row.clip_id
            )
            reference = None
            if row.reference is not None:
                try:
                    reference = load_audio(row.reference, max_seconds=max_seconds)
                except InputError as exc:
                    raise InputError(f"reference: {exc}") from None
            clips.append(CheckedClip(row, clip, mask, samples_sha256(clip.samples), reference))
        except InputError as exc:
            errors.append(f"line {row.line} ({row.clip_id!r}): {exc}")
    if errors:
        plural = "clip" if len(errors) == 1 else "clips"
        raise InputError(f"{len(errors)} bad {plural}: " + "; ".join(errors))
    return clips


__all__ = [
    "EDIT_TYPES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "CheckedClip",
    "ManifestRow",
    "load_clips",
    "read_manifest",
    "validate_clip_id",
]
