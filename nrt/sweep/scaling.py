"""Stand-in work for measuring how the sweep fills a cluster: fits and trials that sleep as a
GPU stage would, on GPUs that Ray only pretends to have (``ray.init(num_gpus=G)``).

The orchestration is the sweep's own (:func:`~nrt.sweep.runner.run_sweep`: clip driver tasks,
the fit coordinator, one Tune experiment per clip with OptunaSearch); only the work is swapped.
Each piece of work records when it held its GPU share, so the report compares the measured
time with the ideal one: all GPU-seconds spread over the G GPUs, or the longest clip's own
chain of fit and trials if that is longer.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import soundfile as sf

from ..runtime import connect
from ..settings import FitConfig
from ..storage import Storage, bundle_ready, bundle_rel
from .config import Resources, SweepConfig, parse_param
from .runner import run_sweep
from .search import Work


@dataclass(frozen=True)
class ScalingSetup:
    clips: int = 8
    gpus: int = 4
    fit_seconds: float = 20.0
    trial_seconds: float = 8.0
    trials: int = 4
    trial_gpus: float = 0.5
    concurrent_trials: int = 2

    @property
    def gpu_seconds(self) -> float:
        return self.clips * (self.fit_seconds + self.trials * self.trial_seconds * self.trial_gpus)

    @property
    def chain_seconds(self) -> float:
        """One clip alone: its fit, then its trials in waves of ``concurrent_trials``."""
        return self.fit_seconds + math.ceil(self.trials / self.concurrent_trials) * self.trial_seconds

    @property
    def ideal_seconds(self) -> float:
        return max(self.gpu_seconds / self.gpus, self.chain_seconds)


def sleeping_work(setup: ScalingSetup) -> Work:
    """A fit that sleeps ``fit_seconds`` holding a whole GPU; trials that sleep ``trial_seconds``."""

    def sleep_fit(storage: Storage, job, fit: dict, key: str, model: str, dtype: str, device: str) -> dict:
        rel = bundle_rel(job.clip_id, key)
        if bundle_ready(storage, rel):
            return {"bundle": rel, "computed": False}
        started = time.time()
        time.sleep(setup.fit_seconds)
        storage.write_json(f"{rel}/bundle.json", {"format": "nrt-stand-in", "files": []})
        storage.write_json(f"spans/fit-{job.clip_id}-{key}.json", {"start": started, "end": time.time(), "gpus": 1})
        return {"bundle": rel, "computed": True}

    def sleep_trial(config: dict[str, Any], job) -> None:
        from ray import tune

        started = time.time()
        time.sleep(setup.trial_seconds)
        eta = float(config["eta"])
        text, audio = 0.4 * eta, 0.6 * (1 - eta * eta)  # a smooth optimum for Optuna to find
        trial = tune.get_context().get_trial_id()
        job.storage.write_json(
            f"spans/trial-{job.clip.clip_id}-{trial}.json",
            {"start": started, "end": time.time(), "gpus": setup.trial_gpus},
        )
        tune.report({"text": text, "audio": audio, "sum": text + audio, "bundle": job.bundle})

    return Work(fit=ray.remote(sleep_fit), trainable=sleep_trial)


def _clips(directory: Path, count: int) -> Path:
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    lines = ["id,edit_type,audio,target_prompt"]
    for i in range(count):
        sf.write(directory / f"clip{i}.wav", tone, rate, subtype="PCM_16")
        lines.append(f"clip{i:03d},addition,clip{i}.wav,a tone {i}")
    (directory / "manifest.csv").write_text("\n".join(lines) + "\n")
    return directory / "manifest.csv"


def busy_gpu_seconds(storage: Storage) -> float:
    return sum(
        (s["end"] - s["start"]) * s["gpus"] for s in (storage.read_json(f"spans/{n}") for n in storage.list("spans"))
    )


def run_scaling(setup: ScalingSetup, on_progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Sweep ``setup.clips`` stand-in clips on ``setup.gpus`` stand-in GPUs; time it."""
    with tempfile.TemporaryDirectory(prefix="nrt-scaling-") as tmp:
        manifest = _clips(Path(tmp), setup.clips)
        storage = Storage(Path(tmp) / "root")
        config = SweepConfig(
            storage=storage.root,
            fits=(FitConfig(),),
            trials=setup.trials,
            concurrent_trials=setup.concurrent_trials,
            space={"eta": parse_param("eta", "0:1"), "steps": parse_param("steps", "10")},
            max_retries=0,
            max_clips=setup.clips,
            resources=Resources(fit_cpus=0.05, trial_cpus=0.05, trial_gpus=setup.trial_gpus),
        )
        # Enough CPUs that the stand-in GPUs, not the CPUs, limit what runs at once
        started_ray = connect(num_cpus=max(4, setup.clips), num_gpus=setup.gpus)
        try:
            started = time.time()
            result = run_sweep(manifest, config, work=sleeping_work(setup), on_progress=on_progress)
            measured = time.time() - started
        finally:
            if started_ray:
                ray.shutdown()
        failed = result.failed
        busy = busy_gpu_seconds(storage)
    return {
        "clips": setup.clips,
        "gpus": setup.gpus,
        "failed": len(failed),
        "gpu_seconds": setup.gpu_seconds,
        "busy_gpu_seconds": busy,
        "ideal_seconds": setup.ideal_seconds,
        "measured_seconds": measured,
        "efficiency": setup.ideal_seconds / measured,
        "utilisation": busy / (setup.gpus * measured),
    }
