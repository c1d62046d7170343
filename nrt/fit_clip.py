"""Fit one clip and save its bundle: the path that ``nrt fit``, ``nrt edit``, ``nrt eval`` and the sweep share."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch

from .audio import AudioClip
from .backbones.base import Backbone
from .bundle import check_target, save_bundle
from .edit import prepare_input
from .fit import FitResult, fit
from .masks import Range, ranges_to_latent_mask
from .settings import FitConfig

logger = logging.getLogger(__name__)


def latent_weight(
    backbone: Backbone, clip: AudioClip, mask: Sequence[tuple[float, float]] | None
) -> torch.Tensor | None:
    """1 on the latent frames the input covers, 0 on those an inpainting mask touches."""
    if not mask:
        return None
    num_samples = round(clip.duration * backbone.sample_rate)
    frames = backbone.latent_shape(num_samples)[1]
    region = torch.from_numpy(ranges_to_latent_mask(mask, frames, backbone.latent_frames_per_second))
    return (~region).float().view(1, 1, -1, 1)


def fit_clip(
    backbone: Backbone,
    clip: AudioClip,
    prompt: str,
    config: FitConfig,
    path: str | os.PathLike,
    *,
    edit_type: str = "addition",
    mask: Sequence[Range] | None = None,
    overwrite: bool = False,
    check: Callable[[FitResult], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Steps 1 and 2 on ``clip`` as given (any rate and channels) towards ``prompt``; the bundle goes to ``path``.

    ``mask`` holds the inpainting ranges in seconds, which the fit leaves out of its loss.
    ``check``, where given, sees the result before anything is written: an exception it raises
    leaves no bundle. ``path`` and ``edit_type`` are checked before the fit starts.
    """
    # 1. Fail before the fit on what would fail after it
    path = check_target(path, edit_type, overwrite)
    mask = None if mask is None else [(float(a), float(b)) for a, b in mask]

    # 2. Steps 1 and 2 on the input as the backbone sees it
    prepared = prepare_input(backbone, clip)
    result = fit(
        backbone,
        prepared.wave,
        prompt,
        config,
        latent_weight=latent_weight(backbone, clip, mask),
        progress=progress,
    )
    losses = result.losses
    logger.info(
        "%s: %s fit in %.1f s; probe loss %.4f (e_tgt) -> %.4f (e_opt) -> %.4f (fitted)",
        path,
        config.method,
        result.seconds,
        losses["probe_e_tgt"],
        losses["probe_e_opt"],
        losses["probe_fitted"],
    )
    if check is not None:
        check(result)

    # 3. The bundle, swapped into place whole
    save_bundle(
        path, result, backbone.info, clip, target_prompt=prompt, edit_type=edit_type, mask=mask, overwrite=overwrite
    )
    return result


__all__ = ["fit_clip", "latent_weight"]
