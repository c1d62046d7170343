"""One clip's sweep, from its own driver task: fits first, then one Tune search per fitted setting.

Two levels, so that no trial holding a fraction of a GPU ever waits on a fit that needs a
whole one: the fits of the clip run as tasks with a whole GPU (each distinct setting once,
through the fit coordinator); as each is done, a Tune experiment with :class:`OptunaSearch`
runs its trials on fractional GPUs. The driver itself takes no CPU, so many clips are in flight
at once, each with its own Tune controller. The clip ends with its registry entry, written
after the trials table and plot it lists.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from ..clap_notes import describe_clap
from ..hub import cache_dir
from ..settings import FitConfig
from ..storage import (
    Storage,
    bundle_ready,
    bundle_rel,
    registry_rel,
    write_registry_entry,
)
from .clips import ClipJob, ManifestClip, stage_clip
from .config import METRIC, SETTINGS, SweepConfig, complete_settings, fit_identity, fit_key
from .failures import CrashGuard, StopWhenTripped, TrialsCrashed, describe_error
from .fits import coordinator, fit_task
from .progress import (
    TrialProgress,
    board_name,
    plot_trials,
    post,
    render_csv,
    write_status,
)
from .trials import TrialJob, edit_trial

logger = logging.getLogger(__name__)

TRIAL_COLUMNS = (
    "fit_key",
    "trial_id",
    "status",
    *SETTINGS,
    "text",
    "audio",
    "sum",
    "text_filled",
    "onset_f1",
    "edit_seconds",
    "error",
)


@dataclass(frozen=True)
class Work:
    """What a clip's driver runs: ``fit``, a Ray remote function with the signature of
    :func:`~nrt.sweep.fits.fit_bundle`, and ``trainable``, Tune's function with that of
    :func:`~nrt.sweep.trials.edit_trial`. The benchmark swaps in work that sleeps."""

    fit: Any
    trainable: Callable[..., None]


EDIT_WORK = Work(fit=fit_task, trainable=edit_trial)


class ClipFailed(Exception):
    """Nothing of the clip could be scored: every fit or every trial failed."""


def optuna_url(config: SweepConfig, storage: Storage) -> str:
    """The study database: ``--optuna-storage``, else SQLite beside the results (a local root)
    or in this machine's cache (an object store, which SQLite cannot live on)."""
    if config.optuna_storage:
        return config.optuna_storage
    if storage.is_local:
        return f"sqlite:///{storage.local_path('optuna.db')}"
    name = hashlib.sha256(storage.root.encode()).hexdigest()[:12]
    path = cache_dir() / f"optuna-{name}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_study_storage(url: str):
    """Optuna's storage for ``url``; SQLite waits for the lock instead of failing at once."""
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


class StudySearch(OptunaSearch):
    """:class:`OptunaSearch` whose study survives a killed driver. A trial that Tune's last
    experiment checkpoint shows as running may be finished in the study's database already;
    restored, Tune runs it again, and its second report must not fail the experiment."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.info("trial %s is finished in the study already; its rerun is not told again", trial_id)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def run_search(
    storage: Storage, job: ClipJob, config: SweepConfig, fit: FitConfig, key: str, bundle: str, work: Work
) -> list[dict[str, Any]]:
    """The Tune experiment of one fitted (clip, setting), restored when storage holds it."""
    trial_job = TrialJob(storage, job, bundle, config.model, config.dtype, config.device, config.clap)
    trainable = tune.with_parameters(work.trainable, job=trial_job)
    # Tune keeps trainables in a table of the Ray job by name, and every clip's driver task
    # is in the same job: with one name for all, a trial could run another clip's trainable.
    trainable.__name__ = f"{work.trainable.__name__}.{job.clip_id}.{key}"
    trainable = tune.with_resources(trainable, config.resources.trial())
    path = storage.uri(f"tune/{job.clip_id}/{key}")
    guard = CrashGuard(limit=max(2, config.concurrent_trials))
    if tune.Tuner.can_restore(path):
        logger.info("%s: restoring the experiment in %s", job.clip_id, path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        searched = config.searched
        search_alg = None
        if searched:
            search_alg = StudySearch(
                {name: p.distribution() for name, p in searched.items()},
                metric=METRIC,
                mode="max",
                study_name=f"{job.clip_id}.{key}",
                storage=open_study_storage(optuna_url(config, storage)),
                seed=config.seed,
            )
        tuner = tune.Tuner(
            trainable,
            param_space={**config.param_space(), "fit": fit_identity(fit)},
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                num_samples=config.trials if searched else 1,
                max_concurrent_trials=config.concurrent_trials,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=key,
                storage_path=storage.uri(f"tune/{job.clip_id}"),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=config.max_retries),
                callbacks=[TrialProgress(board_name(storage), job.clip_id), guard],
                stop=StopWhenTripped(guard),
            ),
        )
    results = tuner.fit()
    if guard.tripped:
        raise TrialsCrashed.from_guard(guard)
    rows = []
    for result in results:
        params, metrics = complete_settings(result.config or {}), result.metrics or {}
        row = {
            "fit_key": key,
            "trial_id": metrics.get("trial_id") or result.path.rsplit("_", 1)[-1],
            **{k: params.get(k) for k in SETTINGS},
        }
        if result.error is None and metrics.get("bundle") not in (None, bundle):
            row.update(status="failed", error=f"the trial edited {metrics['bundle']}, not {bundle}")
        elif result.error is None and METRIC in metrics:
            row.update(status="done", **{k: metrics.get(k) for k in TRIAL_COLUMNS if k in metrics and k not in row})
        else:
            row.update(status="failed", error=describe_error(result.error) if result.error else "no result")
        rows.append(row)
    return rows


def sweep_clip(job: ClipJob, config: SweepConfig, work: Work = EDIT_WORK) -> dict[str, Any]:
    """Fit, search and register one clip; return its row of the final table."""
    storage = Storage(config.storage)
    board = board_name(storage)
    clip_id = job.clip_id
    started = time.time()
    settings = [(fit, fit_key(fit, config.model, config.dtype, job.identity())) for fit in config.fits]
    total = len(settings) * (config.trials if config.searched else 1)

    # 1. The fits: each setting once, each task with a whole GPU where there is one
    write_status(storage, clip_id, "fitting", fits=len(settings))
    post(board, clip_id, state="fitting", fits=len(settings), trials_total=total)
    fits = coordinator()
    options = {**config.resources.fit_options(), "max_retries": config.max_retries, "retry_exceptions": True}
    pending: dict[ray.ObjectRef, tuple[FitConfig, str]] = {}
    for fit, key in settings:
        if bundle_ready(storage, bundle_rel(clip_id, key)):  # no GPU held just to find it done
            ref = ray.put({"bundle": bundle_rel(clip_id, key), "computed": False})
        else:
            args = (storage, job, fit.to_dict(), key, config.model, config.dtype, config.device)
            ref = fits.ensure.remote((clip_id, key), work.fit, args, options)
        pending[ref] = (fit, key)

    # 2. The searches, one per fitted setting, as soon as its fit is done
    trials: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    while pending:
        [ref], _ = ray.wait(list(pending))
        fit, key = pending.pop(ref)
        summary = {"fit_key": key, "fit": fit.to_dict()}
        try:
            fitted = ray.get(ref)
        except Exception as exc:
            logger.warning("%s: fit %s failed: %s", clip_id, key, describe_error(exc))
            summaries.append({**summary, "error": f"fit: {describe_error(exc)}"})
            continue
        write_status(storage, clip_id, "searching", trials_total=total)
        post(board, clip_id, state="searching")
        try:
            rows = run_search(storage, job, config, fit, key, fitted["bundle"], work)
        except Exception as exc:  # the experiment itself broke, not one of its trials
            logger.warning("%s: search %s failed: %s", clip_id, key, describe_error(exc))
            summaries.append({**summary, "bundle": fitted["bundle"], "error": f"search: {describe_error(exc)}"})
            continue
        trials += rows
        done = [r for r in rows if r["status"] == "done"]
        summaries.append(
            {
                **summary,
                "bundle": fitted["bundle"],
                "fit_computed": fitted.get("computed", False),
                "trials": len(rows),
                "trials_failed": len(rows) - len(done),
                "best_sum": max((r["sum"] for r in done), default=None),
            }
        )

    # 3. The best of every setting, its trials table and plot, then the registry entry
    row = register(storage, job, config, trials, summaries, seconds=round(time.time() - started, 1))
    write_status(storage, clip_id, "done", seconds=row["seconds"], sum=row["sum"])
    post(board, clip_id, state="done", seconds=row["seconds"], sum=row["sum"])
    return row


def register(
    storage: Storage,
    job: ClipJob,
    config: SweepConfig,
    trials: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """Publish the clip's best trial: trials table and plot first, the registry entry last."""

    clip_id = job.clip_id
    done = [t for t in trials if t["status"] == "done" and math.isfinite(t["sum"])]
    if not done:
        errors = [s["error"] for s in summaries if "error" in s] + sorted(
            {t["error"] for t in trials if t.get("error")}
        )
        raise ClipFailed("; ".join(errors[:3]) or "no trial gave a score")
    best = max(done, key=lambda t: t["sum"])
    best_fit = next(s for s in summaries if s["fit_key"] == best["fit_key"])
    bundle = bundle_rel(clip_id, best["fit_key"])
    trials_rel, plot_rel = registry_rel(clip_id, ".trials.csv"), registry_rel(clip_id, ".trials.png")
    storage.write_bytes(trials_rel, render_csv(trials, TRIAL_COLUMNS).encode())
    storage.write_bytes(plot_rel, plot_trials(trials, f"{clip_id}: {job.target_prompt}", describe_clap(config.clap)))
    failed = len(trials) - len(done)
    entry = {
        "clip_id": clip_id,
        "edit_type": job.edit_type,
        "target_prompt": job.target_prompt,
        "mask": job.to_dict()["mask"],
        "input": job.input,
        "input_sha256": job.sha256,
        "model": config.model,
        "dtype": config.dtype,
        "bundle": bundle,
        "fit_key": best["fit_key"],
        "fit": best_fit["fit"],
        "best": {k: best[k] for k in SETTINGS},
        "scores": {
            "text": best["text"],
            "audio": best["audio"],
            "sum": best["sum"],
            "clap": config.clap,
            **{k: best[k] for k in ("text_filled", "onset_f1") if best.get(k) is not None},
        },
        "trials": {"run": len(trials), "done": len(done), "failed": failed},
        "search": {name: p.describe() for name, p in config.space.items()},
        "settings": summaries,
        "trials_csv": trials_rel,
        "plot": plot_rel,
        "seconds": seconds,
        "files": [job.input, f"{bundle}/bundle.json", trials_rel, plot_rel],
    }
    write_registry_entry(storage, entry)
    return {
        "clip_id": clip_id,
        "status": "done",
        **entry["best"],
        **entry["scores"],
        "trials": len(trials),
        "trials_failed": failed,
        "seconds": seconds,
        "bundle": bundle,
        "fits_computed": sum(bool(s.get("fit_computed")) for s in summaries),
        "fits_reused": sum(s.get("fit_computed") is False for s in summaries),
        "fits_failed": sum("error" in s for s in summaries),
    }


@ray.remote(num_cpus=0, max_retries=1)
def clip_task(job: ClipJob, config: SweepConfig, work: Work = EDIT_WORK) -> dict[str, Any]:
    """:func:`sweep_clip` as a driver task: a failure becomes the clip's failed row, so that
    one clip's trouble never stops the others."""
    started = time.time()
    try:
        return sweep_clip(job, config, work)
    except Exception as exc:
        error = describe_error(exc)
        logger.error("%s failed: %s\n%s", job.clip_id, error, traceback.format_exc(limit=10))
        storage = Storage(config.storage)
        write_status(storage, job.clip_id, "failed", error=error)
        post(board_name(storage), job.clip_id, state="failed", error=error)
        return {"clip_id": job.clip_id, "status": "failed", "error": error, "seconds": round(time.time() - started, 1)}


def start_clip(job: ClipJob, config: SweepConfig, work: Work = EDIT_WORK, node_id: str | None = None) -> ray.ObjectRef:
    """Start the driver task of a staged clip (on ``node_id``, where the study database is)."""
    options: dict[str, Any] = {}
    if node_id is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return clip_task.options(**options).remote(job, config, work)


def submit_clip(clip: ManifestClip, config: SweepConfig, work: Work = EDIT_WORK) -> ray.ObjectRef:
    """Sweep one checked clip (:func:`~nrt.sweep.clips.check_rows`) on the running Ray, from
    this node: stage its input, then start its driver task. The ref gives the clip's row of
    the table; ``status/<clip_id>.json`` in the storage root tells its state meanwhile."""
    storage = Storage(config.storage)
    stage_clip(storage, clip)
    write_status(storage, clip.job.clip_id, "queued")
    url = optuna_url(config, storage)
    config = replace(config, optuna_storage=url)
    open_study_storage(url)
    return start_clip(clip.job, config, work, node_id=ray.get_runtime_context().get_node_id())
