"""The SDEdit baseline: noise the input's latent to strength s, denoise towards the target prompt.

It runs through the same backbone and sampler as the method, with the base UNet and
``e_tgt``, no fitting. (AudioLDM's own style transfer is this on the AudioLDM backbone.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .audio import AudioClip
from .backbones.base import Backbone
from .edit import decode_outputs, encode_input, input_round_trip, keep_recording
from .sample import sample
from .settings import SampleConfig, check_fractions, check_seed


def check_strengths(strengths: Sequence[float]) -> list[float]:
    return check_fractions(strengths, "strength", allow_zero=False)


def sdedit(
    backbone: Backbone,
    clip: AudioClip,
    prompt: str,
    strengths: Sequence[float],
    config: SampleConfig | None = None,
    seed: int = 0,
    *,
    mask: Sequence[tuple[float, float]] | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """One edit per strength, each at the input's rate, length and channels."""
    strengths = check_strengths(strengths)
    config = config or SampleConfig()
    check_seed(seed)
    prepared, latents, inpaint = encode_input(backbone, clip, mask)
    condition = backbone.encode_text([prompt])
    outputs = []
    for strength in strengths:
        edited = sample(
            backbone,
            condition,
            latents.shape[1:],
            config,
            [seed],
            init=latents,
            strength=strength,
            inpaint=inpaint,
            progress=progress,
        )
        outputs.extend(decode_outputs(backbone, edited, prepared, clip, mask))
    codec = input_round_trip(backbone, latents, prepared, clip, mask)
    return keep_recording(clip, mask, outputs, config.keep_db, codec)
