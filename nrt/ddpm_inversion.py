"""The DDPM-inversion baseline (ZETA, Manor & Michaeli, ICML 2024): no fit, the base model.

The input is inverted by the base UNet under a source prompt (the empty prompt by default)
with its own guidance, then regenerated from ``t_start`` under the target prompt with the
inversion's per-step noise. It runs through the same sampler as step 3's ``inversion`` start
(:func:`nrt.sample.invert`); only the UNet and the two conditions differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .audio import AudioClip
from .backbones.base import Backbone
from .edit import decode_outputs, encode_input, input_round_trip, keep_recording
from .sample import invert, sample
from .settings import SampleConfig, check_fractions, check_seed, start_index

DEFAULT_T_STARTS = (0.25, 0.5, 0.75)


def check_t_starts(values: Sequence[float]) -> list[float]:
    return check_fractions(values, "t_start", allow_zero=False)


def ddpm_inversion(
    backbone: Backbone,
    clip: AudioClip,
    prompt: str,
    t_starts: Sequence[float],
    config: SampleConfig | None = None,
    seed: int = 0,
    *,
    source_prompt: str = "",
    source_guidance: float | None = None,
    mask: Sequence[tuple[float, float]] | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """One edit per ``t_start``, each at the input's rate, length and channels.

    ``config.guidance`` is the target prompt's guidance; ``source_guidance`` (default: the same)
    the inversion's. With the source prompt equal to the target and equal guidance, every
    output is the input through the backbone's codec.
    """
    t_starts = check_t_starts(t_starts)
    config = config or SampleConfig()
    check_seed(seed)
    source_config = replace(config, guidance=config.guidance if source_guidance is None else source_guidance)
    prepared, latent, inpaint = encode_input(backbone, clip, mask)
    # one inversion from the earliest start serves every later one
    first = replace(source_config, t_start=max(t_starts))
    inversion = invert(backbone, backbone.encode_text([source_prompt]), latent, first, seed, progress=progress)
    condition = backbone.encode_text([prompt])
    outputs = []
    for t_start in t_starts:
        edited = sample(
            backbone,
            condition,
            latent.shape[1:],
            config,
            [seed],
            inversion=inversion.from_index(start_index(config.steps, t_start)),
            inpaint=inpaint,
            progress=progress,
        )
        outputs.extend(decode_outputs(backbone, edited, prepared, clip, mask))
    codec = input_round_trip(backbone, latent, prepared, clip, mask)
    return keep_recording(clip, mask, outputs, config.keep_db, codec)
