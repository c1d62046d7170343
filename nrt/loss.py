"""The diffusion loss L(z, e) of the paper's Eq. 1, shared by steps 1 and 2.

The target is whatever the scheduler's ``prediction_type`` names (noise for ``epsilon``,
velocity for ``v_prediction``), read from the loaded config, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from .backbones.base import Backbone, Condition


def prediction_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported prediction_type {kind!r}: expected epsilon, v_prediction or sample")


def diffusion_loss(
    backbone: Backbone,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    condition: Condition,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    unet: torch.nn.Module | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of the denoiser at ``timesteps``; ``weight`` broadcasts over latents."""
    latents = latents.expand(noise.shape[0], *latents.shape[1:])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = prediction_target(scheduler, latents, noise, timesteps)
    prediction = backbone.denoise(noisy.to(backbone.dtype), timesteps, condition, unet)
    error = (prediction.float() - target.float()) ** 2
    if weight is None:
        return error.mean()
    weight = weight.expand_as(error)
    return (error * weight).sum() / weight.sum().clamp(min=1)


def draw(
    shape: torch.Size, num_train_timesteps: int, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of uniformly drawn timesteps and Gaussian noise, on the CPU."""
    timesteps = torch.randint(0, num_train_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, *shape[1:]), generator=generator)
    return timesteps, noise


@dataclass
class ProbeSet:
    """A fixed, seeded set of (timestep, noise) pairs: the loss on it is comparable across runs."""

    timesteps: torch.Tensor
    noise: torch.Tensor

    @classmethod
    def make(cls, shape: torch.Size, num_train_timesteps: int, size: int = 8, seed: int = 1234) -> ProbeSet:
        generator = torch.Generator().manual_seed(seed)
        # evenly spread timesteps, so the probe covers the schedule the way training does
        timesteps = torch.linspace(0, num_train_timesteps - 1, size).round().long()
        noise = torch.randn((size, *shape[1:]), generator=generator)
        return cls(timesteps, noise)

    @torch.no_grad()
    def loss(
        self,
        backbone: Backbone,
        scheduler: DDPMScheduler,
        latents: torch.Tensor,
        condition: Condition,
        unet: torch.nn.Module | None = None,
        weight: torch.Tensor | None = None,
    ) -> float:
        device = latents.device
        total = 0.0
        for t, n in zip(self.timesteps, self.noise):
            total += diffusion_loss(
                backbone, scheduler, latents, condition, t.view(1).to(device), n.unsqueeze(0).to(device), unet, weight
            ).item()
        return total / len(self.timesteps)
