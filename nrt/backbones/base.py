"""The interface every latent diffusion backbone implements.

A backbone turns a waveform at its own sample rate into a latent and back, turns prompts
into a :class:`Condition`, and runs its denoiser. Fitting, editing, SDEdit, the sweep and
the service only ever talk to a backbone through this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
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
    or None where the backbone has no mask. Backbones whose UNet attends to a second sequence
    (AudioLDM 2: ``embeds`` the GPT-2 sequence, ``embeds_1`` the T5 one) carry it in
    ``embeds_1`` ``[B, L1, D1]`` with its mask ``mask_1``; the others leave both None.
    """

    embeds: torch.Tensor
    mask: torch.Tensor | None = None
    embeds_1: torch.Tensor | None = None
    mask_1: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    @property
    def sequences(self) -> tuple[torch.Tensor, ...]:
        """The embeddings, without their masks: ``(embeds,)`` or ``(embeds, embeds_1)``."""
        return (self.embeds,) if self.embeds_1 is None else (self.embeds, self.embeds_1)

    def with_sequences(self, *sequences: torch.Tensor) -> Condition:
        """The same masks with other embeddings, one per entry of :attr:`sequences` (step 1, step 3)."""
        if len(sequences) != len(self.sequences):
            raise ValueError(f"this condition has {len(self.sequences)} embeddings, got {len(sequences)}")
        return replace(self, embeds=sequences[0], embeds_1=sequences[1] if len(sequences) > 1 else None)

    def _apply(
        self, embeds: Callable[[torch.Tensor], torch.Tensor], mask: Callable[[torch.Tensor], torch.Tensor]
    ) -> Condition:
        return Condition(
            embeds(self.embeds), _maybe(mask, self.mask), _maybe(embeds, self.embeds_1), _maybe(mask, self.mask_1)
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Condition:
        return self._apply(lambda e: e.to(device=device, dtype=dtype), lambda m: m.to(device))

    def detach(self) -> Condition:
        return self._apply(torch.Tensor.detach, lambda m: m)

    def repeat(self, n: int) -> Condition:
        """Repeat a batch-of-one condition ``n`` times along the batch axis."""
        if self.batch_size != 1:
            raise ValueError(f"repeat() needs a batch of one, got {self.batch_size}")
        return self._apply(lambda e: e.repeat(n, *(1,) * (e.dim() - 1)), lambda m: m.repeat(n, 1))

    @staticmethod
    def cat(conditions: Sequence[Condition]) -> Condition:
        if len({c.embeds_1 is None for c in conditions}) > 1:
            raise ValueError("cannot batch conditions with and without a second sequence (embeds_1)")
        return Condition(
            torch.cat([c.embeds for c in conditions]),
            _cat_all([c.mask for c in conditions]),
            _cat_all([c.embeds_1 for c in conditions]),
            _cat_all([c.mask_1 for c in conditions]),
        )


def _maybe(fn: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else fn(tensor)


def _cat_all(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The tensors concatenated along the batch, or None unless every one is present."""
    present = [t for t in tensors if t is not None]
    return torch.cat(present) if present and len(present) == len(tensors) else None


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
