"""One trial: an edit of a fitted clip at (η, steps, guidance, scheduler, start, t_start), scored
by the CLAP sum.

What a trial loads stays loaded in its worker for the next trial of the same clip
(:mod:`nrt.sweep.fitted`); what one edit allocates on the GPU is freed when the trial ends.
This module loads neither torch nor the models: the clip drivers that start trials import it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ..runtime import free_accelerator, use_assigned_cpus
from ..storage import Storage
from .clips import ClipJob
from .config import sample_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one (clip, fit setting) shares."""

    storage: Storage
    clip: ClipJob
    bundle: str
    model: str
    dtype: str
    device: str
    clap: str


def edit_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's trainable: one edit with ``config`` (eta, steps, guidance, scheduler, start, t_start,
    seed), scored. A trial restored from an experiment begun before ``start`` was searched starts
    from noise, as it did then."""
    from ray import tune

    from .fitted import fitted_clip

    use_assigned_cpus()
    clip = fitted_clip(job)
    settings = sample_config(config)
    started = time.perf_counter()
    audio = None
    try:
        audio = clip.edit_one(float(config["eta"]), settings, int(config["seed"]))
        scores = clip.scorer.score([audio], clip.rate)[0]
    finally:
        del audio
        free_accelerator()
    tune.report({**scores, "edit_seconds": round(time.perf_counter() - started, 3), "bundle": job.bundle})
