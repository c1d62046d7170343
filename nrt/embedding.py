"""Step 1: optimise the text embedding so the frozen UNet reconstructs the input (e_opt)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from .backbones.base import Backbone, Condition
from .loss import diffusion_loss, draw
from .optimize import compiled, optimize


def optimize_embedding(
    backbone: Backbone,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    e_tgt: Condition,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    weight: torch.Tensor | None = None,
    progress: bool = True,
    compile_unet: bool = False,
    fused_adam: bool = False,
) -> tuple[Condition, list[float]]:
    """Start from ``e_tgt`` and minimise L(z, e) over e alone; every UNet weight stays as it is.

    Every embedding of the condition is optimised: AudioLDM 2's GPT-2 and T5 sequences both.
    ``compile_unet`` runs the UNet through ``torch.compile``; ``fused_adam`` takes the fused Adam.
    """
    sequences = [s.detach().float().clone().requires_grad_(True) for s in e_tgt.sequences]
    num_train = scheduler.config.num_train_timesteps
    device = latents.device
    unet = compiled(backbone.unet) if compile_unet else None

    def current() -> Condition:
        return e_tgt.with_sequences(*(s.to(backbone.dtype) for s in sequences))

    def loss_fn(step: int) -> torch.Tensor:
        timesteps, noise = draw(latents.shape, num_train, batch_size, generator)
        condition = current().repeat(batch_size)
        with autocast(backbone):
            return diffusion_loss(
                backbone, scheduler, latents, condition, timesteps.to(device), noise.to(device), unet, weight
            )

    requires = [p.requires_grad for p in backbone.unet.parameters()]
    backbone.unet.requires_grad_(False)
    try:
        losses = optimize(sequences, loss_fn, steps, lr, desc="step 1: embedding", progress=progress, fused=fused_adam)
    finally:
        for p, r in zip(backbone.unet.parameters(), requires):
            p.requires_grad_(r)
    return current().detach(), losses


def autocast(backbone: Backbone) -> torch.autocast:
    """Mixed precision where the UNet is in half precision; trainable tensors stay float32."""
    enabled = backbone.dtype in (torch.float16, torch.bfloat16)
    return torch.autocast(backbone.device.type, dtype=backbone.dtype, enabled=enabled)
