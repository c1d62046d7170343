"""The interface every latent diffusion backbone implements.

A backbone turns a waveform at its own sample rate into a latent and back, turns prompts
into a :class:`Condition`, and runs its denoiser. Fitting, editing, SDEdit, the sweep and
the service only ever talk to a backbone through this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel


@dataclass
class Condition:
    """Text conditioning exactly as the denoiser receives it.

    ``embeds`` is ``[B, L, D]`` for cross-attention backbones (TANGO) or ``[B, D]`` for
    class-embedding backbones (AudioLDM). ``mask`` is ``[B, L]`` bool, True on real tokens,
    or None where the backbone has no mask.
    """

    embeds: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Condition:
        mask = None if self.mask is None else self.mask.to(device)
        return Condition(self.embeds.to(device=device, dtype=dtype), mask)

    def detach(self) -> Condition:
        return replace(self, embeds=self.embeds.detach())

    def repeat(self, n: int) -> Condition:
        """Repeat a batch-of-one condition ``n`` times along the batch axis."""
        if self.batch_size != 1:
            raise ValueError(f"repeat() needs a batch of one, got {self.batch_size}")
        reps = (n,) + (1,) * (self.embeds.dim() - 1)
        mask = None if self.mask is None else self.mask.repeat(n, 1)
        return Condition(self.embeds.repeat(*reps), mask)

    @staticmethod
    def cat(conditions: Sequence[Condition]) -> Condition:
        embeds = torch.cat([c.embeds for c in conditions])
        masks = [c.mask for c in conditions if c.mask is not None]
        mask = torch.cat(masks) if len(masks) == len(conditions) else None
        return Condition(embeds, mask)


@dataclass
class Loudness:
    """What the front end did to the level of a waveform, so that the output can undo it."""

    offset: float = 0.0
    gain: float = 1.0

    def undo(self, wave: torch.Tensor) -> torch.Tensor:
        return wave / self.gain + self.offset


@dataclass
class BackboneInfo:
    """Identity of a loaded backbone, recorded in every bundle."""

    kind: str  # "tango", "audioldm", ...
    model_id: str  # hub id, local path or built-in name as the user gave it
    revision: str | None = None  # hub commit, or a hash of the local weights
    extra: dict[str, Any] = field(default_factory=dict)


class Backbone(abc.ABC):
    """A text-to-audio latent diffusion model seen through what the method needs."""

    info: BackboneInfo
    sample_rate: int
    unet: UNet2DConditionModel
    scheduler_config: dict[str, Any]

    # -- audio ---------------------------------------------------------------------------
    @abc.abstractmethod
    def normalize(self, wave: torch.Tensor) -> tuple[torch.Tensor, Loudness]:
        """Level a mono waveform ``[T]`` at ``sample_rate`` as the model was trained."""

    @abc.abstractmethod
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``[B, T]`` (normalised, at ``sample_rate``) to latents ``[B, C, F, M]``."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Latents to waveforms ``[B, num_samples]`` at ``sample_rate``."""

    @abc.abstractmethod
    def latent_shape(self, num_samples: int) -> tuple[int, int, int]:
        """Shape ``(C, F, M)`` of the latent of a waveform of ``num_samples``."""

    @property
    @abc.abstractmethod
    def latent_frames_per_second(self) -> float:
        """Latent time steps per second of audio (for masks given in seconds)."""

    # -- text ----------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_text(self, prompts: Sequence[str]) -> Condition:
        """Prompts to the conditioning the denoiser takes."""

    @abc.abstractmethod
    def null_condition(self, like: Condition) -> Condition:
        """The unconditional (empty prompt) condition shaped like ``like``, for guidance."""

    # -- denoiser ------------------------------------------------------------------------
    @abc.abstractmethod
    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Condition,
        unet: UNet2DConditionModel | None = None,
    ) -> torch.Tensor:
        """Run the denoiser (``unet``, or the backbone's own) and return its raw output."""

    # -- placement -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @abc.abstractmethod
    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Backbone:
        """Move every component."""

    @abc.abstractmethod
    def offload_frozen(self, device: torch.device | str = "cpu") -> None:
        """Move the VAE, vocoder and text encoder to ``device`` (the UNet stays put)."""

    def restore_frozen(self) -> None:
        """Bring the frozen parts back to the UNet's device after :meth:`offload_frozen`."""
        self.offload_frozen(self.device)


def place(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Move a module, and cast it only where the dtype really changes."""
    module.to(device=device)
    if dtype is not None and next(module.parameters()).dtype != dtype:
        module.to(dtype=dtype)
    return module
