"""Steps 1 and 2 on one clip: from a waveform and a target prompt to e_tgt, e_opt and a UNet delta."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from .backbones.base import Backbone, Condition
from .embedding import optimize_embedding
from .finetune import finetune_unet, fitted_unet
from .loss import ProbeSet
from .settings import FitConfig

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What steps 1 and 2 leave behind, ready for a bundle."""

    e_tgt: Condition
    e_opt: Condition
    unet_state: dict[str, torch.Tensor]
    config: FitConfig
    losses: dict[str, float]
    seconds: float


def fit(
    backbone: Backbone,
    wave: torch.Tensor,
    prompt: str,
    config: FitConfig | None = None,
    *,
    latent_weight: torch.Tensor | None = None,
    progress: bool = True,
) -> FitResult:
    """Fit one clip: ``wave`` is mono at the backbone's rate, already levelled by ``normalize``.

    ``latent_weight`` (broadcastable to the latent, 1 where the input is observed) keeps an
    inpainting gap out of the loss, so the fit does not learn the gap as silence.
    """
    config = config or FitConfig()
    started = time.perf_counter()

    # 1. Encode the input and the prompt once; the frozen parts then leave the accelerator
    latents = backbone.encode(wave.unsqueeze(0)).to(backbone.device)
    e_tgt = backbone.encode_text([prompt])
    offload = backbone.device.type != "cpu"
    if offload:
        backbone.offload_frozen("cpu")
    try:
        return _fit_latents(backbone, latents, e_tgt, config, latent_weight, progress, started)
    finally:
        if offload:
            backbone.restore_frozen()


def _fit_latents(
    backbone: Backbone,
    latents: torch.Tensor,
    e_tgt: Condition,
    config: FitConfig,
    latent_weight: torch.Tensor | None,
    progress: bool,
    started: float,
) -> FitResult:
    scheduler = DDPMScheduler.from_config(backbone.scheduler_config)
    weight = None if latent_weight is None else latent_weight.to(backbone.device)
    probe = ProbeSet.make(latents.shape, scheduler.config.num_train_timesteps, seed=config.seed + 1)
    generator = torch.Generator().manual_seed(config.seed)
    losses = {"probe_e_tgt": probe.loss(backbone, scheduler, latents, e_tgt, weight=weight)}

    # 2. Step 1: the embedding, UNet frozen
    e_opt, step1 = optimize_embedding(
        backbone,
        scheduler,
        latents,
        e_tgt,
        steps=config.embed_steps,
        lr=config.embed_lr,
        batch_size=config.batch_size,
        generator=generator,
        weight=weight,
        progress=progress,
        compile_unet=config.compile_unet,
        fused_adam=config.fused_adam,
    )
    losses["probe_e_opt"] = probe.loss(backbone, scheduler, latents, e_opt, weight=weight)

    # 3. Step 2: the UNet on e_opt
    state, step2 = finetune_unet(
        backbone,
        scheduler,
        latents,
        e_opt,
        method=config.method,
        steps=config.tune_steps,
        lr=config.resolved_tune_lr,
        batch_size=config.batch_size,
        generator=generator,
        lora=config.lora,
        gradient_checkpointing=config.gradient_checkpointing,
        weight=weight,
        progress=progress,
        compile_unet=config.compile_unet,
        fused_adam=config.fused_adam,
    )
    with fitted_unet(backbone, config.method, state, config.lora) as unet:
        losses["probe_fitted"] = probe.loss(backbone, scheduler, latents, e_opt, unet=unet, weight=weight)
    losses.update(_tail("step1", step1))
    losses.update(_tail("step2", step2))
    return FitResult(e_tgt, e_opt, state, config, losses, time.perf_counter() - started)


def _tail(name: str, losses: list[float], window: int = 20) -> dict[str, float]:
    """Mean of the first and last few training losses (the draws are random, so smooth them)."""
    if not losses:
        return {}
    return {
        f"{name}_first": sum(losses[:window]) / len(losses[:window]),
        f"{name}_last": sum(losses[-window:]) / len(losses[-window:]),
    }
