"""The clips of a sweep: read from a manifest, checked by row, and copied into the storage root.

Workers read a clip from the storage root, never from the path in the manifest, so that a
sweep runs the same on one machine and on a cluster whose nodes see only the shared storage.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..audio import AudioClip, load_audio, samples_sha256
from ..errors import InputError
from ..inputs import MAX_SECONDS
from ..manifest import ManifestRow, load_clips, read_manifest
from ..storage import Storage

logger = logging.getLogger(__name__)

Range = tuple[float, float]


@dataclass(frozen=True)
class ClipJob:
    """One clip as the sweep's workers see it; ``input`` is a path inside the storage root."""

    clip_id: str
    edit_type: str
    target_prompt: str
    mask: tuple[Range, ...] | None
    input: str
    sha256: str
    seconds: float

    def identity(self) -> dict[str, Any]:
        """What makes a fit of this clip differ from a fit of another (part of the fit key)."""
        mask = None if self.mask is None else [list(r) for r in self.mask]
        return {"input": self.sha256, "prompt": self.target_prompt, "edit_type": self.edit_type, "mask": mask}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mask"] = None if self.mask is None else [list(r) for r in self.mask]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipJob:
        mask = data.get("mask")
        return cls(
            clip_id=data["clip_id"],
            edit_type=data["edit_type"],
            target_prompt=data["target_prompt"],
            mask=None if mask is None else tuple((float(a), float(b)) for a, b in mask),
            input=data["input"],
            sha256=data["sha256"],
            seconds=float(data["seconds"]),
        )


@dataclass(frozen=True)
class ManifestClip:
    """A manifest row, read and checked: the job and where its audio lies on this machine."""

    job: ClipJob
    source: Path
    line: int


def read_clips(manifest: str | os.PathLike, max_seconds: float = MAX_SECONDS) -> list[ManifestClip]:
    """Every row of ``manifest`` with its audio read; one InputError lists every bad row."""
    return check_rows(read_manifest(manifest), max_seconds)


def check_rows(rows: Sequence[ManifestRow], max_seconds: float = MAX_SECONDS) -> list[ManifestClip]:
    """Rows (of a manifest, or made for one upload) with their audio read and masks resolved."""
    clips = load_clips(rows, max_seconds=max_seconds)
    out = []
    for loaded in clips:
        row = loaded.row
        job = ClipJob(
            clip_id=row.clip_id,
            edit_type=row.edit_type,
            target_prompt=row.target_prompt,
            mask=None if loaded.mask is None else tuple((float(a), float(b)) for a, b in loaded.mask),
            input=f"clips/{row.clip_id}/input{row.audio.suffix.lower() or '.wav'}",
            sha256=loaded.sha256,
            seconds=loaded.clip.duration,
        )
        out.append(ManifestClip(job, row.audio, row.line))
    return out


def stage_clip(storage: Storage, clip: ManifestClip) -> bool:
    """Copy the input into the root and write ``clips/<id>/clip.json`` last; False if it was there."""
    index = f"clips/{clip.job.clip_id}/clip.json"
    try:
        staged = storage.read_json(index)
        if staged.get("sha256") == clip.job.sha256 and storage.exists(staged.get("input", "")):
            return False
    except FileNotFoundError:
        pass
    storage.put_file(clip.source, clip.job.input)
    storage.write_json(index, {**clip.job.to_dict(), "source": str(clip.source)})
    return True


def load_clip_audio(storage: Storage, job: ClipJob) -> AudioClip:
    """The staged input of ``job``, checked against the hash it was staged with."""
    source = storage.local_path(job.input) if storage.is_local else storage.read_bytes(job.input)
    clip = load_audio(source, max_seconds=math.inf, min_seconds=0.0)
    if samples_sha256(clip.samples) != job.sha256:
        raise InputError(f"{storage.uri(job.input)} changed since it was staged (its samples' hash differs)")
    return clip
