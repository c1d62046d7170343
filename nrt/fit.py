"""Steps 1 and 2 on one clip: from a waveform and a target prompt to e_tgt, e_opt and a UNet delta."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import DDPMScheduler

from .backbones.base import Backbone, Condition
from .embedding import optimize_embedding
from .errors import InputError
from .finetune import finetune_unet, fitted_unet
from .loss import ProbeSet

logger = logging.getLogger(__name__)

METHODS = ("full", "lora")
# The paper's 1e-6 is for the full fine-tune. LoRA's B matrix starts at zero, so the same
# rate would leave a LoRA fit where it began; 3e-4 is the rate at which LoRA lowered the
# probe loss as much per step as the full fine-tune at 1e-6 (benchmarks/tune_lr.py, README).
DEFAULT_TUNE_LR = {"full": 1e-6, "lora": 3e-4}
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class FitConfig:
    """Settings of steps 1 and 2. Field names are the CLI's flags and the sweep's parameters."""

    method: str = field(default="lora", metadata={"help": "step 2: 'full' fine-tune or 'lora' adapters"})
    embed_steps: int = field(default=500, metadata={"help": "step 1 optimisation steps"})
    embed_lr: float = field(default=2e-3, metadata={"help": "step 1 Adam learning rate"})
    tune_steps: int = field(default=1500, metadata={"help": "step 2 optimisation steps"})
    tune_lr: float | None = field(
        default=None, metadata={"help": "step 2 Adam learning rate (None: 1e-6 full, 3e-4 LoRA)"}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (None: equal to the rank)"})
    lora_targets: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS, metadata={"help": "UNet modules LoRA adapts"})
    batch_size: int = field(default=1, metadata={"help": "(timestep, noise) draws per optimisation step"})
    seed: int = field(default=0, metadata={"help": "seed of the timestep and noise draws"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory in step 2"})
    # Speed settings: off by default on every device until benchmarks/gpu_edit.py has measured
    # them on a GPU; the CUDA defaults will be chosen from that measurement.
    compile_unet: bool = field(default=False, metadata={"help": "run the UNet through torch.compile in steps 1 and 2"})
    fused_adam: bool = field(default=False, metadata={"help": "PyTorch's fused Adam in steps 1 and 2"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("embed_steps", "tune_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in ("embed_lr", "tune_lr"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise InputError(f"{name} must lie in (0, 1), got {value!r}")
        if not 1 <= self.lora_rank <= 1024:
            raise InputError(f"lora_rank must lie in 1-1024, got {self.lora_rank}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"seed must lie in 0 to 2^32-1, got {self.seed}")
        self.lora_targets = tuple(self.lora_targets)

    @property
    def resolved_tune_lr(self) -> float:
        return self.tune_lr if self.tune_lr is not None else DEFAULT_TUNE_LR[self.method]

    @property
    def lora(self) -> dict[str, Any]:
        alpha = self.lora_alpha if self.lora_alpha is not None else float(self.lora_rank)
        return {"rank": self.lora_rank, "alpha": alpha, "targets": list(self.lora_targets)}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_targets"] = list(self.lora_targets)
        data["tune_lr"] = self.resolved_tune_lr
        return data


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
