"""What a sweep worker keeps loaded from one trial to the next of the same clip (Tune reuses the
worker): the backbone, the fitted UNet (the LoRA adapter attached, or the fine-tuned copy), the
input as the backbone sees it, the CLAP model and the embeddings of the reference and the prompt.
Loading a fitted TANGO UNet costs seconds and gigabytes, far more than one edit. A trial of
another clip replaces the fitted clip.

Apart from :mod:`nrt.sweep.trials` so that the sweep's driver tasks, which only pass trials
around, never import the models' stack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..edit import PreparedBundle
from ..runtime import free_accelerator, worker_device
from ..storage import fetch_dir

if TYPE_CHECKING:
    from .trials import TrialJob


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
