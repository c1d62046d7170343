"""The sweep's driver: check the clips, stage them, start Ray, keep clips in flight, report.

Every clip runs from its own driver task (:mod:`nrt.sweep.search`); this process only keeps a
window of them in flight, relays their progress and writes the final table. Killed and run
again with ``resume``, it skips the clips the registry holds, reuses every bundle and restores
each unfinished Tune experiment from ``tune/<clip_id>/``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ray

from ..errors import InputError
from ..runtime import connect
from ..storage import Storage, read_registry_entry
from .clips import ManifestClip, read_clips, stage_clip
from .config import SweepConfig, complete_settings
from .fits import coordinator
from .progress import describe, open_board, render_csv, write_status
from .search import EDIT_WORK, Work, open_study_storage, optuna_url, start_clip

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """One row per clip of the manifest, in its order; the fit counts of this run."""

    rows: list[dict[str, Any]]
    fits: dict[str, int]
    seconds: float
    storage: str

    @property
    def failed(self) -> list[str]:
        return [r["clip_id"] for r in self.rows if r["status"] == "failed"]


def _previous(storage: Storage, clips: Sequence[ManifestClip], model: str) -> tuple[dict[str, dict], list[str]]:
    """Clips the registry holds for this very input, prompt and model; clips begun otherwise."""
    finished, started = {}, []
    for clip in clips:
        job = clip.job
        entry = read_registry_entry(storage, job.clip_id)
        same = entry is not None and (
            entry.get("input_sha256"),
            entry.get("target_prompt"),
            entry.get("edit_type"),
            entry.get("mask"),
            entry.get("model"),
        ) == (job.sha256, job.target_prompt, job.edit_type, job.to_dict()["mask"], model)
        if same and entry is not None:
            finished[job.clip_id] = entry
        elif entry is not None or storage.exists(f"tune/{job.clip_id}"):
            started.append(job.clip_id)
    return finished, started


def _earlier_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "clip_id": entry["clip_id"],
        "status": "earlier",
        **complete_settings(entry["best"]),
        **entry["scores"],
        "trials": entry["trials"]["run"],
        "trials_failed": entry["trials"]["failed"],
        "seconds": entry.get("seconds", 0.0),
        "bundle": entry["bundle"],
    }


def run_sweep(
    manifest: str | os.PathLike,
    config: SweepConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    work: Work = EDIT_WORK,
    on_progress: Callable[[str], None] | None = None,
    log_to_driver: bool = False,
    poll_seconds: float = 1.0,
) -> SweepResult:
    """Sweep every clip of ``manifest``; see the module's docstring."""
    started = time.time()
    say = on_progress or (lambda line: logger.info("%s", line))

    # 1. Every row checked (ids, files, audio, masks) before anything heavy starts
    clips = read_clips(manifest)
    storage = Storage(config.storage)
    finished, begun = _previous(storage, clips, config.model)
    if not config.resume and (finished or begun):
        held = sorted(set(finished) | set(begun))
        raise InputError(
            f"storage {storage.root} already holds results for {', '.join(held[:5])}"
            f"{' and more' if len(held) > 5 else ''}: pass --resume to continue (finished clips are "
            "skipped, bundles reused), or choose another --storage"
        )
    todo = [c for c in clips if c.job.clip_id not in finished]
    for clip_id in finished:
        say(f"{clip_id}: done earlier, skipped (registry/{clip_id}.json)")

    # 2. The inputs into the storage root, where every worker can read them
    for clip in todo:
        stage_clip(storage, clip)
        write_status(storage, clip.job.clip_id, "queued")
    study_url = optuna_url(config, storage)
    config = replace(config, optuna_storage=study_url)
    open_study_storage(study_url)  # the schema, once, before many drivers race to make it

    # 3. Ray, and what the work may ask of it
    started_ray = connect(address, num_cpus, num_gpus, log_to_driver)
    try:
        return SweepDriver(config, storage, work, say, poll_seconds).run(todo, finished, clips, started)
    finally:
        if started_ray:
            ray.shutdown()


class SweepDriver:
    """Keeps a window of clip driver tasks in flight, relays their progress, gathers their rows."""

    def __init__(
        self, config: SweepConfig, storage: Storage, work: Work, say: Callable[[str], None], poll_seconds: float
    ) -> None:
        gpus = ray.cluster_resources().get("GPU", 0)
        self.use_gpu = config.device == "cuda" or (config.device == "auto" and gpus > 0)
        self.config = replace(config, resources=replace(config.resources, gpu=self.use_gpu))
        self.storage = storage
        self.work = work
        self.say = say
        self.poll_seconds = poll_seconds
        self._version = -1
        self._shown: dict[str, str] = {}

    def window(self) -> int:
        """Clips in flight: two per GPU (one fitting, one searching), or one per CPU without GPUs.
        Counted again as an autoscaler adds nodes."""
        if self.config.max_clips:
            return self.config.max_clips
        now = ray.cluster_resources()
        return max(2, int(2 * now.get("GPU", 0)) if self.use_gpu else int(now.get("CPU", 1)))

    def run(
        self,
        todo: Sequence[ManifestClip],
        finished: dict[str, dict[str, Any]],
        clips: Sequence[ManifestClip],
        started: float,
    ) -> SweepResult:
        """Sweep ``todo``; the result has a row for every clip of ``clips``, ``finished`` ones as they were."""
        storage = self.storage
        resources = ray.cluster_resources()
        if storage.is_local and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            logger.warning(
                "storage %s is a local directory on a cluster of several nodes: every node must "
                "see it at the same path (or use s3:// or gs://)",
                storage.root,
            )
        self.say(
            f"sweeping {len(todo)} clip(s) on {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} "
            f"GPUs, {self.window()} at a time; results in {storage.root}"
        )

        fits = coordinator()
        counts_before = ray.get(fits.counts.remote())
        board = open_board(storage)
        node = ray.get_runtime_context().get_node_id()
        queue = list(todo)
        running: dict[ray.ObjectRef, str] = {}
        rows: dict[str, dict[str, Any]] = {cid: _earlier_row(entry) for cid, entry in finished.items()}
        while queue or running:
            while queue and len(running) < self.window():
                clip = queue.pop(0)
                board.post.remote(clip.job.clip_id, state="queued")
                running[start_clip(clip.job, self.config, self.work, node_id=node)] = clip.job.clip_id
            ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_seconds)
            for ref in ready:
                clip_id = running.pop(ref)
                try:
                    rows[clip_id] = ray.get(ref)
                except Exception as exc:  # the driver task itself died (its node went away)
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    rows[clip_id] = {"clip_id": clip_id, "status": "failed", "error": error}
                    write_status(storage, clip_id, "failed", error=error)
                    board.post.remote(clip_id, state="failed", error=error)
            self._show(board)
        self._show(board)

        counts_after = ray.get(fits.counts.remote())
        ordered = [rows[c.job.clip_id] for c in clips]
        storage.write_bytes("results.csv", render_csv(ordered).encode())
        counts = {k: sum(r.get(f"fits_{k}", 0) for r in rows.values()) for k in ("computed", "reused", "failed")}
        counts["joined"] = counts_after.get("joined", 0) - counts_before.get("joined", 0)
        return SweepResult(ordered, counts, round(time.time() - started, 1), storage.root)

    def _show(self, board: ray.actor.ActorHandle) -> None:
        """Say each clip's line from the progress board when it changed since last shown."""
        self._version, snapshot = ray.get(board.snapshot.remote(self._version))
        for clip_id, state in snapshot.items():
            line = describe(clip_id, state)
            if self._shown.get(clip_id) != line:
                self._shown[clip_id] = line
                self.say(line)
