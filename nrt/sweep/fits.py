"""Steps 1 and 2 of every (clip, fit setting), each once, as Ray tasks that hold a whole GPU.

A fit is skipped when its bundle is in the storage root already, and a
:class:`FitCoordinator` (one named actor per cluster) hands every caller that asks for a fit
still running the same task, so that no fit is computed twice even when two ask at once.
Every attempt leaves a small record under ``fits/<clip_id>/<fit_key>/`` (host, state, error).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import socket
import tempfile
import time
import traceback
from collections import Counter
from typing import TYPE_CHECKING, Any

import ray

from ..errors import NrtError
from ..runtime import NAMESPACE, free_accelerator, use_assigned_cpus, worker_device
from ..storage import Storage, bundle_ready, bundle_rel, new_attempt_rel
from .clips import ClipJob, load_clip_audio

if TYPE_CHECKING:
    from ..backbones import Backbone
    from ..fit import FitResult

logger = logging.getLogger(__name__)

COORDINATOR = "nrt-fit-coordinator"


class FitDiverged(NrtError):
    """A fit whose losses are not finite: its bundle would edit nothing but noise."""


def _attempt(storage: Storage, rel: str, state: str, started: float, **info: Any) -> None:
    storage.write_json(
        rel,
        {
            "state": state,
            "host": socket.gethostname(),
            "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            **info,
        },
    )


def fit_bundle(
    storage: Storage, job: ClipJob, fit: dict[str, Any], key: str, model: str, dtype: str, device: str
) -> dict[str, Any]:
    """Fit ``job`` with the settings ``fit`` and publish the bundle; reuse it when it exists."""
    from ..backbones import load_backbone
    from ..fit_clip import fit_clip
    from ..settings import FitConfig

    rel = bundle_rel(job.clip_id, key)
    if bundle_ready(storage, rel):
        return {"bundle": rel, "computed": False}
    started = time.time()
    attempt = new_attempt_rel(job.clip_id, key)
    _attempt(storage, attempt, "running", started, fit=fit)

    def refuse_diverged(result: FitResult) -> None:
        bad = [name for name, value in result.losses.items() if not math.isfinite(value)]
        if bad:
            raise FitDiverged(
                f"fit of {job.clip_id} ({key}) diverged: {', '.join(bad)} not finite; lower the learning rates"
            )

    backbone: Backbone | None = None
    try:
        use_assigned_cpus()
        config = FitConfig(**fit)
        backbone = load_backbone(model, device=worker_device(device), dtype=dtype)
        clip = load_clip_audio(storage, job)
        with tempfile.TemporaryDirectory(prefix="nrt-bundle-") as tmp:
            local = storage.local_path(rel) if storage.is_local else f"{tmp}/bundle"
            result = fit_clip(
                backbone,
                clip,
                job.target_prompt,
                config,
                local,
                edit_type=job.edit_type,
                mask=job.mask,
                overwrite=True,
                check=refuse_diverged,
                progress=False,
            )
            if not storage.is_local:
                storage.put_dir(local, rel, index="bundle.json")
    except BaseException as exc:
        _attempt(
            storage,
            attempt,
            "failed",
            started,
            fit=fit,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=20),
        )
        raise
    finally:
        backbone = None
        free_accelerator()
    _attempt(storage, attempt, "done", started, fit=fit, bundle=rel, losses=result.losses)
    return {"bundle": rel, "computed": True, "seconds": round(time.time() - started, 3), "losses": result.losses}


fit_task = ray.remote(fit_bundle)


@ray.remote(num_cpus=0)
class FitCoordinator:
    """Runs each fit once: a second caller of a fit in flight waits on the first one's task."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], Any] = {}  # Ray object refs
        self._counts: Counter[str] = Counter()

    async def ensure(self, key: tuple[str, str], fn: Any, args: tuple, options: dict[str, Any]) -> dict[str, Any]:
        owner = key not in self._running
        if owner:
            self._running[key] = fn.options(**options).remote(*args)
        else:
            self._counts["joined"] += 1
        ref = self._running[key]
        try:
            result = await ref
        except Exception:
            self._counts["failed"] += owner
            raise
        finally:
            if self._running.get(key) is ref:
                del self._running[key]
        if owner:
            self._counts["computed" if result.get("computed") else "reused"] += 1
        return result

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


def coordinator() -> ray.actor.ActorHandle:
    """The cluster's fit coordinator, started on first use. It outlives a killed driver, so a
    resumed sweep joins the fits that are still running instead of starting them again."""
    return FitCoordinator.options(  # type: ignore[attr-defined]  # a Ray actor class: .options comes with @ray.remote
        name=COORDINATOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()
