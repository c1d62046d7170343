"""Where the waveform becomes a latent and back: mel front end, VAE and vocoder.

TANGO and AudioLDM share this path (16 kHz mono, 64-bin log-mel, a KL-VAE over the mel
image, HiFi-GAN), so they share this class and differ only in how text enters the UNet.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from .base import Backbone, BackboneInfo, Loudness, place
from .mel import MelFrontEnd
from .patch import GriffinLimVocoder, PatchAutoencoder

if TYPE_CHECKING:
    from transformers import SpeechT5HifiGan

PEAK = 0.5  # the level the training data was scaled to


class KLMelCodec:
    """A diffusers ``AutoencoderKL`` seen through ``PatchAutoencoder``'s codec interface."""

    def __init__(self, vae: AutoencoderKL) -> None:
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)
        self.latent_channels = vae.config.latent_channels
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(mel).latent_dist.mode()

    def decode_latent(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents).sample


class MelLatentBackbone(Backbone):
    """A backbone whose latent is a VAE encoding of a log-mel spectrogram."""

    def __init__(
        self,
        info: BackboneInfo,
        mel: MelFrontEnd,
        vae: AutoencoderKL | PatchAutoencoder,
        vocoder: SpeechT5HifiGan | GriffinLimVocoder,
        unet: UNet2DConditionModel,
        scheduler_config: dict[str, Any],
    ) -> None:
        self.info = info
        self.mel = mel
        self.vae = vae.eval().requires_grad_(False)
        self.vocoder = vocoder.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        self.sample_rate = mel.config.sampling_rate
        # the mel <-> latent codec: a trained KL-VAE (TANGO, AudioLDM) or nrt-mini's patches
        self.codec = vae if isinstance(vae, PatchAutoencoder) else KLMelCodec(vae)
        self.scaling_factor = self.codec.scaling_factor
        self.latent_channels = self.codec.latent_channels
        self.vae_downsample = self.codec.downsample
        unet_down = 2 ** (len(unet.config.down_block_types) - 1)
        # mel frames must divide by the whole downsampling, VAE times UNet
        self.frames_multiple = self.vae_downsample * unet_down

    # -- audio ---------------------------------------------------------------------------
    def normalize(self, wave: torch.Tensor) -> tuple[torch.Tensor, Loudness]:
        offset = float(wave.mean())
        centred = wave - offset
        peak = float(centred.abs().max())
        if peak == 0.0:
            raise ValueError("cannot level an all-silent waveform")
        gain = PEAK / peak
        return centred * gain, Loudness(offset=offset, gain=gain)

    def num_mel_frames(self, num_samples: int) -> int:
        """Mel frames the latent covers: the real length rounded up to ``frames_multiple``."""
        frames = num_samples // self.mel.hop_length + 1
        return math.ceil(frames / self.frames_multiple) * self.frames_multiple

    def latent_shape(self, num_samples: int) -> tuple[int, int, int]:
        frames = self.num_mel_frames(num_samples) // self.vae_downsample
        bins = self.mel.config.n_mel_channels // self.vae_downsample
        return (self.latent_channels, frames, bins)

    @property
    def latent_frames_per_second(self) -> float:
        return self.sample_rate / self.mel.hop_length / self.vae_downsample

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        frames = self.num_mel_frames(wave.shape[-1])
        # pad with silence so the mel has frames + 1 columns, then drop the last (as TANGO does)
        padded = torch.nn.functional.pad(wave, (0, frames * self.mel.hop_length - wave.shape[-1]))
        vae_device = self.vae.device
        mel = self.mel.to(vae_device)(padded.to(vae_device))[:, :frames].unsqueeze(1).to(self.vae.dtype)
        return self.codec.encode_mel(mel) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        latents = latents.to(self.vae.device, self.vae.dtype) / self.scaling_factor
        mel = self.codec.decode_latent(latents).squeeze(1)
        wave = self.vocoder(mel.to(self.vocoder.device, self.vocoder.dtype))
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        wave = wave.float()
        if wave.shape[-1] < num_samples:
            wave = torch.nn.functional.pad(wave, (0, num_samples - wave.shape[-1]))
        return wave[..., :num_samples]

    # -- placement -----------------------------------------------------------------------
    def _frozen_modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.vocoder]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> MelLatentBackbone:
        """Move everything to ``device``; ``dtype`` applies to the UNet only.

        The VAE and vocoder stay in float32: they run once per edit, and HiFi-GAN in half
        precision audibly degrades.
        """
        place(self.unet, device, dtype)
        for module in self._frozen_modules():
            module.to(device=device)
        return self

    def offload_frozen(self, device: torch.device | str = "cpu") -> None:
        for module in self._frozen_modules():
            module.to(device)
