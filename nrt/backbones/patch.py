"""A latent without a VAE, and a vocoder without weights: nrt-mini's codec.

``PatchAutoencoder`` standardises the log-mel (a per-bin mean and one scale, stored as
weights) and folds each ``p x p`` patch of (frames, mels) into ``p * p`` channels
(space-to-depth). It is exactly invertible, so there is nothing to train and nothing lost:
the diffusion model does all the modelling. ``GriffinLimVocoder`` turns a log-mel back into a
waveform with non-negative least squares onto the linear spectrum and fast Griffin-Lim
(Perraudin et al., 2013) from a fixed phase, so decoding is deterministic.

Both are chosen in ``vae_config.json`` (``"kind": "patch"``; ``"vocoder": {"kind":
"griffin-lim"}``), documented extensions of TANGO's layout that the TANGO loader reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .mel import MelFrontEnd, StftConfig

PATCH_KIND = "patch"
GRIFFIN_LIM_KIND = "griffin-lim"


class PatchAutoencoder(torch.nn.Module):
    """Log-mel ``[B, 1, frames, mels]`` <-> latent ``[B, p*p, frames/p, mels/p]``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_mels: int, patch: int = 4, scaling_factor: float = 1.0) -> None:
        super().__init__()
        if patch < 1 or n_mels % patch:
            raise ValueError(f"the patch size ({patch}) must divide the number of mels ({n_mels})")
        self.n_mels = n_mels
        self.patch = patch
        self.latent_channels = patch * patch
        self.downsample = patch
        self.scaling_factor = scaling_factor
        # standardisation, measured on training data and stored with the weights
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(()))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PatchAutoencoder:
        return cls(int(config["n_mels"]), int(config.get("patch", 4)), float(config.get("scaling_factor", 1.0)))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        b, _, frames, mels = mel.shape
        p = self.patch
        if frames % p or mels != self.n_mels:
            raise ValueError(
                f"a mel of {frames} frames x {mels} bins does not fold into {p}x{p} patches of {self.n_mels} bins"
            )
        x = (mel[:, 0] - self.mean) / self.std
        x = x.reshape(b, frames // p, p, mels // p, p).permute(0, 2, 4, 1, 3)
        return x.reshape(b, p * p, frames // p, mels // p)

    def decode_latent(self, latents: torch.Tensor) -> torch.Tensor:
        b, _, f, m = latents.shape
        p = self.patch
        x = latents.reshape(b, p, p, f, m).permute(0, 3, 1, 4, 2).reshape(b, f * p, m * p)
        return (x * self.std + self.mean).unsqueeze(1)


class GriffinLimVocoder(torch.nn.Module):
    """Log-mel ``[B, frames, mels]`` (``MelFrontEnd``'s output) to waveforms ``[B, frames * hop]``."""

    mel_basis: torch.Tensor
    window: torch.Tensor

    def __init__(self, stft: StftConfig, n_iter: int = 32, momentum: float = 0.99, nnls_iter: int = 20) -> None:
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"n_iter must be at least 1, got {n_iter}")
        self.stft = stft
        self.n_iter = n_iter
        self.momentum = momentum
        self.nnls_iter = nnls_iter
        front = MelFrontEnd(stft)
        self.register_buffer("mel_basis", front.mel_basis.clone(), persistent=False)
        self.register_buffer("window", front.window.clone(), persistent=False)

    @classmethod
    def from_config(cls, stft: StftConfig, config: Mapping[str, Any]) -> GriffinLimVocoder:
        return cls(
            stft, int(config.get("n_iter", 32)), float(config.get("momentum", 0.99)), int(config.get("nnls_iter", 20))
        )

    @property
    def device(self) -> torch.device:
        return self.mel_basis.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mel_basis.dtype

    def linear_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The non-negative linear magnitude ``[B, bins, frames]`` whose mel is closest to ``log_mel``."""
        mel = log_mel.float().exp().transpose(1, 2)  # [B, mels, frames]
        basis = self.mel_basis
        gram = basis.T @ basis
        target = basis.T @ mel
        magnitude = target.clamp(min=1e-8)
        # multiplicative updates keep every entry non-negative and never increase the error
        for _ in range(self.nnls_iter):
            magnitude = magnitude * target / (gram @ magnitude).clamp(min=1e-8)
        return magnitude

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.stft
        return torch.stft(
            wave,
            cfg.filter_length,
            cfg.hop_length,
            cfg.win_length,
            self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        cfg = self.stft
        return torch.istft(
            spec, cfg.filter_length, cfg.hop_length, cfg.win_length, self.window, center=True, length=length
        )

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        magnitude = self.linear_magnitude(log_mel)
        length = (magnitude.shape[-1] - 1) * self.stft.hop_length
        generator = torch.Generator(device="cpu").manual_seed(0)
        phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * 2 * torch.pi
        angles = torch.polar(torch.ones_like(magnitude), phase)
        previous = torch.zeros_like(angles)
        for _ in range(self.n_iter):
            rebuilt = self._stft(self._istft(magnitude * angles, length))
            accelerated = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            angles = accelerated / accelerated.abs().clamp(min=1e-8)
            previous = rebuilt
        return self._istft(magnitude * angles, length)
