"""Uploads: a clip that arrives over HTTP is checked as a manifest row is
(:func:`nrt.sweep.check_rows`), staged into the storage root as a manifest's clips are
(:func:`nrt.sweep.stage_clip`), then fitted and searched in the background by the sweep's own
per-clip driver (:func:`nrt.sweep.search.start_clip`: fit tasks, then a Tune experiment with Optuna).

Every upload leaves ``jobs/<job_id>.json`` in the storage root, and the sweep keeps
``status/<clip_id>.json`` up to date (queued, fitting, searching, done, failed): a job's state is
read from storage, so it survives a restart of the ingress. The drivers are started by a
:class:`JobRunner`, a detached actor that outlives ingress replicas; one that starts afresh (the
cluster came back) resumes the unfinished jobs, and the sweep's resume reuses every bundle and
restores every Tune experiment already begun.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

import ray

from ..audio import load_audio
from ..defaults import DEFAULT_CLAP, model_defaults
from ..errors import InputError
from ..inputs import EDIT_TYPES, MIN_SECONDS
from ..manifest import ManifestRow, validate_clip_id
from ..masks import merge_ranges, parse_mask
from ..runtime import NAMESPACE
from ..settings import FitConfig
from ..storage import Storage, read_registry_entry
from ..sweep import (
    PRESETS,
    ClipJob,
    ManifestClip,
    Resources,
    SweepConfig,
    check_rows,
    preset_fits,
    preset_space,
    stage_clip,
)
from ..sweep.progress import ProgressBoard, board_name, write_status
from ..sweep.search import open_study_storage, optuna_url, start_clip
from .errors import BadAudio, Conflict, Invalid, TooLarge
from .settings import ServiceSettings

logger = logging.getLogger(__name__)

ACTIVE = ("queued", "fitting", "searching")
SUFFIXES = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"  # uuid4().hex
_ROW_PREFIX = re.compile(r"^\d+ bad clips?: line \d+ \('[^']*'\): ")


# -- 1. The upload, checked and staged as a manifest's clip is -------------------------------------
@dataclass(frozen=True)
class Upload:
    """One ``POST /v1/clips`` as sent: the audio's bytes and file name, and the form's fields."""

    data: bytes
    filename: str | None
    target_prompt: str
    edit_type: str
    mask: str | None = None
    clip_id: str | None = None


def check_upload(settings: ServiceSettings, upload: Upload, directory: Path) -> ManifestClip:
    """The upload as the sweep's checked clip, its audio written into ``directory``; raises an
    :class:`ApiError` that names what is wrong."""
    data, filename, edit_type, mask = upload.data, upload.filename, upload.edit_type, upload.mask
    target_prompt, clip_id = upload.target_prompt, upload.clip_id
    # 1. The fields, and the bytes as audio
    if not data:
        raise BadAudio("the audio upload is empty (0 bytes)")
    if len(data) > settings.max_upload_bytes:
        raise TooLarge(f"the audio upload has {len(data)} bytes; at most {settings.max_upload_bytes} are accepted")
    prompt = (target_prompt or "").strip()
    if not prompt:
        raise Invalid("target_prompt is empty")
    if len(prompt) > settings.max_prompt:
        raise Invalid(f"target_prompt has {len(prompt)} characters; at most {settings.max_prompt} are accepted")
    if edit_type not in EDIT_TYPES:
        raise Invalid(f"edit_type {edit_type!r} is not one of {', '.join(EDIT_TYPES)}")
    name = PurePath(filename).name if filename else "the upload"
    try:
        clip_id = validate_clip_id(clip_id) if clip_id else new_clip_id(filename)
        ranges = None
        if mask and mask.strip():
            if edit_type != "inpainting":
                raise InputError(f"a mask applies to inpainting, but edit_type is {edit_type}")
            ranges = merge_ranges(parse_mask(mask))
    except InputError as exc:
        raise Invalid(str(exc)) from None
    try:
        audio = load_audio(data, max_seconds=math.inf, min_seconds=0.0)
    except InputError as exc:
        raise BadAudio(str(exc).replace("<audio bytes>", name)) from None
    if audio.duration > settings.max_seconds:
        raise Invalid(
            f"{name}: the audio is too long ({audio.duration:.2f} s); the limit is {settings.max_seconds:g} s"
        )
    if audio.duration < MIN_SECONDS:
        raise Invalid(f"{name}: the audio is too short ({audio.duration:.3f} s); at least {MIN_SECONDS:g} s is needed")

    # 2. The sweep's own check of a manifest row: audio read again, mask resolved, the job made
    path = directory / f"{clip_id}{_suffix(filename, audio.format)}"
    path.write_bytes(data)
    row = ManifestRow(clip_id, edit_type, path, prompt, ranges, {"source": name})
    try:
        [clip] = check_rows([row], max_seconds=settings.max_seconds)
    except InputError as exc:
        raise Invalid(_ROW_PREFIX.sub("", str(exc))) from None
    return clip


def new_clip_id(filename: str | None) -> str:
    """A fresh clip id from the upload's file name: ``dog-barking-1a2b3c4d``."""
    stem = PurePath(filename).stem if filename else ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:64] or "clip"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def _suffix(filename: str | None, container: str) -> str:
    suffix = PurePath(filename).suffix.lower() if filename else ""
    return suffix if suffix in SUFFIXES.values() else SUFFIXES.get(container.upper(), ".audio")


def job_rel(job_id: str) -> str:
    return f"jobs/{job_id}.json"


def is_job_id(text: str) -> bool:
    return re.fullmatch(JOB_ID_PATTERN, text) is not None


def stage_upload(storage: Storage, clip: ManifestClip) -> dict[str, Any]:
    """Refuse a clip id in use, stage the input as the sweep stages a manifest's, and write the
    job's record (``jobs/<job_id>.json``). Returns the record."""
    clip_id = clip.job.clip_id
    if read_registry_entry(storage, clip_id) is not None:
        raise Conflict(f"clip {clip_id!r} is in the registry already: choose another clip_id")
    try:
        status = storage.read_json(f"status/{clip_id}.json")
    except FileNotFoundError:
        status = {}
    if status.get("state") in ACTIVE:
        raise Conflict(f"clip {clip_id!r} is being fitted already ({status['state']}): choose another clip_id")
    stage_clip(storage, clip)
    record: dict[str, Any] = {
        "job_id": uuid.uuid4().hex,
        "clip_id": clip_id,
        "state": "queued",
        "created": time.time(),
        "job": clip.job.to_dict(),
        "error": None,
    }
    storage.write_json(job_rel(record["job_id"]), record)
    write_status(storage, clip_id, "queued")
    return record


def accept_upload(settings: ServiceSettings, storage: Storage, upload: Upload) -> dict[str, Any]:
    """Check and stage one upload; its job's record."""
    with tempfile.TemporaryDirectory(prefix="nrt-upload-") as tmp:
        return stage_upload(storage, check_upload(settings, upload, Path(tmp)))


def upload_sweep(settings: ServiceSettings, gpus: float) -> SweepConfig:
    """How an upload is fitted and searched: the sweep's preset for the model, on this storage."""
    name = settings.job_preset if settings.job_preset != "auto" else model_defaults(settings.model).preset
    preset = PRESETS[name]
    fits = tuple(preset_fits(preset, FitConfig(), model=settings.model))
    device = "cpu" if settings.device == "cpu" else "cuda" if settings.device.startswith("cuda") else "auto"
    use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    config = SweepConfig(
        storage=settings.storage,
        model=settings.model,
        device=device,
        dtype=settings.dtype,
        fits=fits,
        space=preset_space(preset),
        trials=settings.job_trials or preset["trials"],
        clap=settings.clap or DEFAULT_CLAP,
        optuna_storage=settings.optuna_storage,
        max_retries=1,
        resources=Resources(
            gpu=use_gpu,
            fit_cpus=settings.job_fit_cpus,
            trial_cpus=settings.job_trial_cpus,
            trial_gpus=settings.job_trial_gpus,
        ),
    )
    return replace(config, optuna_storage=optuna_url(config, Storage(settings.storage)))


# -- 2. Run in the background --------------------------------------------------------------------
@ray.remote(num_cpus=0, max_restarts=-1)
class JobRunner:
    """Starts each upload's sweep driver and records how it ended. One per storage root."""

    def __init__(self, storage: str) -> None:
        self.storage = Storage(storage)
        self.board = ProgressBoard.options(  # type: ignore[attr-defined]  # a Ray actor class: .options comes with @ray.remote
            name=board_name(self.storage), namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
        ).remote()
        self.running: dict[str, tuple[str, asyncio.Task]] = {}
        self.studies: set[str] = set()

    async def submit(self, record: dict[str, Any], config: SweepConfig) -> None:
        job_id = record["job_id"]
        if job_id in self.running:
            return
        url = config.optuna_storage or optuna_url(config, self.storage)
        if url not in self.studies:  # the schema, once, before drivers race to make it
            open_study_storage(url)
            self.studies.add(url)
        job = ClipJob.from_dict(record["job"])
        self.board.post.remote(
            job.clip_id, state="queued", trials_done=0, trials_failed=0, best_sum=float("-inf"), best_eta=None
        )
        # SQLite studies live on this node: the driver runs here too
        node = ray.get_runtime_context().get_node_id() if url.startswith("sqlite") else None
        ref = start_clip(job, config, node_id=node)
        self.running[job_id] = (job.clip_id, asyncio.get_running_loop().create_task(self._watch(record, ref)))

    async def _watch(self, record: dict[str, Any], ref: ray.ObjectRef) -> None:
        try:
            row = await ref
        except Exception as exc:  # the driver task itself died (its node went away)
            row = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
            write_status(self.storage, record["clip_id"], "failed", error=row["error"])
        record = {
            **record,
            "state": "done" if row.get("status") == "done" else "failed",
            "error": row.get("error"),
            "finished": time.time(),
        }
        self.storage.write_json(job_rel(record["job_id"]), record)
        self.running.pop(record["job_id"], None)
        logger.info("job %s (%s): %s", record["job_id"], record["clip_id"], record["state"])

    def active(self) -> list[str]:
        """Clip ids of the jobs running now."""
        return [clip_id for clip_id, _ in self.running.values()]

    async def resume(self, config: SweepConfig) -> list[str]:
        """Start again every job that storage shows unfinished and nothing here runs."""
        resumed = []
        for name in self.storage.list("jobs"):
            job_id = name.removesuffix(".json")
            if not is_job_id(job_id) or job_id in self.running:
                continue
            try:
                record = self.storage.read_json(job_rel(job_id))
            except (FileNotFoundError, ValueError):
                continue
            if record.get("state") in ("done", "failed") or read_registry_entry(self.storage, record["clip_id"]):
                continue
            await self.submit(record, config)
            resumed.append(job_id)
        if resumed:
            logger.info("resumed %d unfinished job(s): %s", len(resumed), ", ".join(resumed))
        return resumed


def runner_name(storage: Storage) -> str:
    return "nrt-jobs-" + hashlib.sha256(storage.root.encode()).hexdigest()[:12]


def job_runner(storage: Storage) -> ray.actor.ActorHandle:
    """The storage root's job runner, started on first use; it outlives the ingress replicas."""
    return JobRunner.options(  # type: ignore[attr-defined]  # a Ray actor class: .options comes with @ray.remote
        name=runner_name(storage), namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(storage.root)


# -- 3. Read back --------------------------------------------------------------------------------
def read_job(storage: Storage, job_id: str) -> dict[str, Any] | None:
    if not is_job_id(job_id):
        return None
    try:
        return storage.read_json(job_rel(job_id))
    except (FileNotFoundError, ValueError):
        return None


def job_status(storage: Storage, record: dict[str, Any], board: dict[str, Any] | None) -> dict[str, Any]:
    """The job's state from its record, the sweep's status file and (while it runs) the progress board."""
    clip_id = record["clip_id"]
    state, updated, error = record["state"], record.get("finished"), record.get("error")
    if state not in ("done", "failed"):
        try:
            status = storage.read_json(f"status/{clip_id}.json")
        except (FileNotFoundError, ValueError):
            status = {}
        if status.get("time", 0) >= record["created"] - 1:  # not a status of an earlier upload of the id
            state, updated, error = status.get("state", state), status.get("time"), status.get("error")
    board = board or {}
    done, failed = int(board.get("trials_done", 0)), int(board.get("trials_failed", 0))
    total = board.get("trials_total")
    best = board.get("best_sum")
    progress = {
        "fits": board.get("fits"),
        "trials_done": done,
        "trials_failed": failed,
        "trials_total": total,
        "fraction": 1.0 if state == "done" else (min(1.0, (done + failed) / total) if total else 0.0),
        "best_sum": best if isinstance(best, (int, float)) and math.isfinite(best) else None,
    }
    if state == "done":
        entry = read_registry_entry(storage, clip_id)
        if entry is not None:
            progress.update(
                trials_done=entry["trials"]["done"],
                trials_failed=entry["trials"]["failed"],
                trials_total=entry["trials"]["run"],
                best_sum=entry["scores"]["sum"],
            )
    links = {"self": f"/v1/jobs/{record['job_id']}"}
    if state == "done":
        links.update(clip=f"/v1/clips/{clip_id}", edits=f"/v1/clips/{clip_id}/edits")
    return {
        "job_id": record["job_id"],
        "clip_id": clip_id,
        "state": state,
        "progress": progress,
        "created": record["created"],
        "updated": updated,
        "error": error if state == "failed" else None,
        "links": links,
    }
