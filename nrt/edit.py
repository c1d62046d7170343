"""Step 3: generate from e(η) = η·e_tgt + (1-η)·e_opt with the fitted UNet, and the whole edit.

An edit comes back at the input's sample rate, length and channel count. For inpainting,
only the masked ranges come from the model; the rest is the input, sample for sample,
apart from a short crossfade inside each range's borders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio import AudioClip, prepare_for_model, restore_from_model
from .backbones.base import Backbone, Condition, Loudness
from .bundle import Bundle
from .finetune import fitted_unet
from .masks import composite, ranges_to_latent_mask
from .sample import Inpaint, invert, sample
from .settings import SampleConfig, check_etas, check_seed

logger = logging.getLogger(__name__)


@dataclass
class PreparedInput:
    """The input as the backbone sees it: mono, at its rate, levelled; and how to undo the level."""

    wave: torch.Tensor
    loudness: Loudness


def prepare_input(backbone: Backbone, clip: AudioClip) -> PreparedInput:
    wave = torch.from_numpy(prepare_for_model(clip, backbone.sample_rate).copy())
    wave, loudness = backbone.normalize(wave)
    return PreparedInput(wave, loudness)


def interpolate(e_tgt: Condition, e_opt: Condition, etas: Sequence[float]) -> Condition:
    """Step 3 of the method: ``e(η) = η·e_tgt + (1-η)·e_opt``, one row per η.

    Every embedding of the condition is interpolated (AudioLDM 2 has two sequences). ``e_opt``
    starts from ``e_tgt`` in step 1, so both have the same token masks.
    """
    rows = e_tgt.repeat(len(etas))
    eta = torch.tensor(list(etas), dtype=e_tgt.embeds.dtype, device=e_tgt.embeds.device)
    blended = []
    for tgt, opt in zip(rows.sequences, e_opt.sequences, strict=True):
        weight = eta.view(-1, *([1] * (tgt.dim() - 1)))
        blended.append(weight * tgt + (1 - weight) * opt.to(tgt.device))
    return rows.with_sequences(*blended)


def decode_outputs(
    backbone: Backbone,
    latents: torch.Tensor,
    prepared: PreparedInput,
    clip: AudioClip,
    mask: Sequence[tuple[float, float]] | None,
) -> list[np.ndarray]:
    """Latents to audio at the input's rate, length and channels; the context kept when inpainting."""
    waves = backbone.decode(latents, prepared.wave.shape[-1])
    outputs = []
    for wave in waves:
        audio = restore_from_model(prepared.loudness.undo(wave).cpu().numpy(), backbone.sample_rate, clip)
        if mask:
            audio = composite(clip.samples, audio, mask, clip.sample_rate)
        outputs.append(audio)
    return outputs


def keep_recording(
    clip: AudioClip,
    mask: Sequence[tuple[float, float]] | None,
    outputs: list[np.ndarray],
    keep_db: float,
    codec: Callable[[], np.ndarray],
) -> list[np.ndarray]:
    """``outputs`` merged with the recording at ``keep_db`` (:mod:`nrt.keep`); as they are at 0 and
    for inpainting (``mask``), whose context is the recording already and whose gap is all edit.

    ``codec`` gives the codec's round trip of the input (its latent decoded, as every output is);
    it is called only when a merge is made.
    """
    if not keep_db or mask:
        return outputs
    from .keep import keep_input

    round_trip = codec()
    return [keep_input(clip.samples, output, round_trip, clip.sample_rate, keep_db) for output in outputs]


def input_round_trip(
    backbone: Backbone,
    latent: torch.Tensor,
    prepared: PreparedInput,
    clip: AudioClip,
    mask: Sequence[tuple[float, float]] | None,
) -> Callable[[], np.ndarray]:
    """The codec's round trip of the input for :func:`keep_recording`, decoded when asked for."""
    return lambda: decode_outputs(backbone, latent, prepared, clip, mask)[0]


def inpaint_context(
    backbone: Backbone, prepared: PreparedInput, mask: Sequence[tuple[float, float]] | None
) -> Inpaint | None:
    if not mask:
        return None
    known = backbone.encode(prepared.wave.unsqueeze(0))
    region = ranges_to_latent_mask(mask, known.shape[2], backbone.latent_frames_per_second)
    return Inpaint(known=known, region=torch.from_numpy(region))


def encode_input(
    backbone: Backbone, clip: AudioClip, mask: Sequence[tuple[float, float]] | None = None
) -> tuple[PreparedInput, torch.Tensor, Inpaint | None]:
    """The input as the backbone sees it, its latent ``[1, C, F, M]``, and the inpainting context (one encode)."""
    prepared = prepare_input(backbone, clip)
    inpaint = inpaint_context(backbone, prepared, mask)
    latent = inpaint.known if inpaint is not None else backbone.encode(prepared.wave.unsqueeze(0))
    return prepared, latent, inpaint


class PreparedBundle:
    """A bundle made ready to edit on a backbone: the input as the backbone sees it, the
    inpainting context encoded, the embeddings placed. Made once, it serves any number of edits
    (the sweep's trials and the service keep one per loaded clip)."""

    def __init__(self, backbone: Backbone, bundle: Bundle) -> None:
        self.backbone = backbone
        self.bundle = bundle
        self.prepared = prepare_input(backbone, bundle.input)
        self.shape = backbone.latent_shape(self.prepared.wave.shape[-1])
        self.inpaint = inpaint_context(backbone, self.prepared, bundle.mask)
        self.e_tgt = bundle.e_tgt.to(backbone.device, backbone.dtype)
        self.e_opt = bundle.e_opt.to(backbone.device, backbone.dtype)
        self._latent: torch.Tensor | None = None
        self._round_trip: np.ndarray | None = None

    @property
    def rate(self) -> int:
        """The sample rate of the input, and of every edit."""
        return self.bundle.input.sample_rate

    @property
    def latent(self) -> torch.Tensor:
        """The input's latent ``[1, C, F, M]``, encoded on first use."""
        if self._latent is None:
            self._latent = (
                self.inpaint.known
                if self.inpaint is not None
                else self.backbone.encode(self.prepared.wave.unsqueeze(0))
            )
        return self._latent

    def round_trip(self) -> np.ndarray:
        """The codec's round trip of the input, decoded on first use: what ``keep_db`` merges against."""
        if self._round_trip is None:
            input, mask = self.bundle.input, self.bundle.mask
            self._round_trip = input_round_trip(self.backbone, self.latent, self.prepared, input, mask)()
        return self._round_trip

    def edit(
        self,
        etas: Sequence[float],
        config: SampleConfig,
        seed: int,
        unet: torch.nn.Module,
        *,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """One edit per η with the fitted ``unet``, in one batched pass, each seeded with ``seed``.

        ``config.start`` says where step 3 starts: pure noise, the input noised to
        ``config.t_start``, or the input's inversion by the fitted UNet at e_opt. Inpainting
        starts from noise whatever the start: the context is kept from the input anyway, and
        inside the gap there is no input to start from (starting from its silence returns it).
        """
        condition = interpolate(self.e_tgt, self.e_opt, check_etas(etas))
        seeds = [check_seed(seed)] * condition.batch_size
        start = "noise" if self.inpaint is not None else config.start
        starts: dict[str, Any] = {}
        if start == "input":
            starts = {"init": self.latent, "strength": config.t_start}
        elif start == "inversion":
            starts = {
                "inversion": invert(self.backbone, self.e_opt, self.latent, config, seed, unet=unet, progress=progress)
            }
        latents = sample(
            self.backbone,
            condition,
            self.shape,
            config,
            seeds,
            unet=unet,
            inpaint=self.inpaint,
            progress=progress,
            **starts,
        )
        outputs = decode_outputs(self.backbone, latents, self.prepared, self.bundle.input, self.bundle.mask)
        return keep_recording(self.bundle.input, self.bundle.mask, outputs, config.keep_db, self.round_trip)


def generate(
    backbone: Backbone,
    bundle: Bundle,
    etas: Sequence[float],
    config: SampleConfig | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
) -> list[np.ndarray]:
    """One edit per η from a fitted bundle, in one batched pass; each output seeded with ``seed``."""
    etas = check_etas(etas)
    config = config or SampleConfig()
    check_seed(seed)
    ready = PreparedBundle(backbone, bundle)
    with fitted_unet(backbone, bundle.method, bundle.unet_state, bundle.lora) as unet:
        return ready.edit(etas, config, seed, unet, progress=progress)


def text_to_audio(
    backbone: Backbone,
    prompt: str,
    clip: AudioClip,
    config: SampleConfig | None = None,
    seed: int = 0,
    *,
    mask: Sequence[tuple[float, float]] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Plain generation from the prompt with the base model, shaped like ``clip`` (a reference ceiling).

    With ``mask``, only the masked ranges are generated and the rest of ``clip`` is kept: the
    base model filling a gap from the prompt, with no fit (the inpainting baseline).
    """
    config = config or SampleConfig()
    prepared = prepare_input(backbone, clip)
    shape = backbone.latent_shape(prepared.wave.shape[-1])
    condition: Condition = backbone.encode_text([prompt])
    inpaint = inpaint_context(backbone, prepared, mask)
    latents = sample(backbone, condition, shape, config, [check_seed(seed)], inpaint=inpaint, progress=progress)
    return decode_outputs(backbone, latents, prepared, clip, mask)[0]
