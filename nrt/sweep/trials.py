"""One trial: an edit of a fitted clip at (η, steps, guidance, scheduler, start, t_start), scored
by the CLAP sum.

What a trial loads stays loaded in its worker for the next trial of the same clip (Tune reuses
the worker): the backbone, the fitted UNet (the LoRA adapter attached, or the fine-tuned copy),
the input as the backbone sees it, the CLAP model and the embeddings of the reference and the
prompt. Loading a fitted TANGO UNet costs seconds and gigabytes, far more than one edit. A
trial of another clip replaces the fitted clip; what one edit allocates on the GPU is freed
when the trial ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..edit import PreparedBundle
from ..runtime import free_accelerator, use_assigned_cpus, worker_device
from ..storage import Storage, fetch_dir
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


class FittedClip(PreparedBundle):
    """A prepared bundle with its fitted UNet in place and its reference scorer."""

    def __init__(self, backbone, bundle, scorer) -> None:
        from ..finetune import fitted_unet
        from ..scoring import ReferenceScorer

        super().__init__(backbone, bundle)
        self._stack = contextlib.ExitStack()
        self.unet = self._stack.enter_context(fitted_unet(backbone, bundle.method, bundle.unet_state, bundle.lora))
        self.scorer = ReferenceScorer(
            scorer, bundle.input.samples, bundle.input.sample_rate, bundle.prompt, bundle.mask
        )

    def edit_one(self, eta: float, config, seed: int) -> np.ndarray:
        """The edit that ``nrt generate`` makes for this η, settings and seed."""
        return self.edit([eta], config, seed, self.unet)[0]

    def close(self) -> None:
        self._stack.close()


# What this worker holds, by slot: (key, value). A module global, so that it outlives a trial.
_held: dict[str, tuple[Any, Any]] = {}


def _hold(slot: str, key: Any, make: Callable[[], Any]) -> Any:
    held = _held.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    release(slot)
    value = make()
    _held[slot] = (key, value)
    return value


def release(*slots: str) -> None:
    """Drop what this worker holds in ``slots`` (all of it when none is named)."""
    for slot in slots or ("clip", "clap", "backbone"):
        held = _held.pop(slot, None)
        if held is not None and hasattr(held[1], "close"):
            held[1].close()
    free_accelerator()


def fitted_clip(job: TrialJob) -> FittedClip:
    """The worker's fitted clip for ``job``, loaded on the first trial that needs it."""
    from ..backbones import load_backbone
    from ..bundle import load_bundle
    from ..scoring import load_scorer

    device = worker_device(job.device)
    backbone_key = (job.model, job.dtype, device)
    if _held.get("backbone", (None,))[0] != backbone_key:
        release("clip")  # its adapter sits on the old backbone
    backbone = _hold("backbone", backbone_key, lambda: load_backbone(job.model, device=device, dtype=job.dtype))
    scorer = _hold(
        "clap",
        (job.clap, device, backbone.sample_rate),
        lambda: load_scorer(job.clap, device=device, band_limit_rate=backbone.sample_rate),
    )

    def load() -> FittedClip:
        bundle = load_bundle(fetch_dir(job.storage, job.bundle, "bundle.json"), backbone.info)
        return FittedClip(backbone, bundle, scorer)

    return _hold("clip", (job.storage.root, job.bundle, backbone_key), load)


def edit_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's trainable: one edit with ``config`` (eta, steps, guidance, scheduler, start, t_start,
    seed), scored. A trial restored from an experiment begun before ``start`` was searched starts
    from noise, as it did then."""
    from ray import tune

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
