"""Where sampling happens: the reverse diffusion with classifier-free guidance.

Every random draw of an output (its initial noise, each DDPM step's noise, the noise put
on an inpainting context) comes from that output's own generator, so an output made with
seed s is the same whether it was made alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from .backbones.base import Backbone, Condition
from .errors import InputError

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
MAX_SEED = 2**32 - 1


@dataclass
class SampleConfig:
    """Settings of the reverse diffusion. Field names are the CLI's flags and the HTTP fields."""

    steps: int = field(default=200, metadata={"help": "diffusion steps T (1-1000)"})
    guidance: float = field(default=3.0, metadata={"help": "classifier-free guidance scale (0-20)"})
    scheduler: str = field(default="ddpm", metadata={"help": "'ddpm' or 'ddim'"})

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise InputError(f"steps must be a whole number in 1-1000, got {self.steps!r}")
        if not 0 <= float(self.guidance) <= 20:
            raise InputError(f"guidance must lie in 0-20, got {self.guidance!r}")
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be a whole number in 0 to 2^32-1, got {seed!r}")
    return seed


def make_scheduler(backbone: Backbone, kind: str, steps: int) -> DDPMScheduler | DDIMScheduler:
    scheduler = SCHEDULERS[kind].from_config(backbone.scheduler_config)
    if steps > scheduler.config.num_train_timesteps:
        raise InputError(
            f"steps ({steps}) exceed the model's {scheduler.config.num_train_timesteps} training timesteps"
        )
    scheduler.set_timesteps(steps, device=backbone.device)
    return scheduler


@dataclass
class Inpaint:
    """Latents to keep and where: ``known`` ``[1, C, F, M]``, ``region`` ``[F]`` True where to generate."""

    known: torch.Tensor
    region: torch.Tensor


@torch.no_grad()
def sample(
    backbone: Backbone,
    condition: Condition,
    shape: Sequence[int],
    config: SampleConfig,
    seeds: Sequence[int],
    *,
    unet: torch.nn.Module | None = None,
    init: torch.Tensor | None = None,
    strength: float | None = None,
    inpaint: Inpaint | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Denoise one latent per row of ``condition``; return latents ``[B, *shape]``.

    With ``init`` (a latent ``[1, *shape]``) and ``strength`` s, start from ``init`` noised to
    the fraction s of the schedule instead of pure noise (SDEdit). With ``inpaint``, the
    latent outside the region is reset to the known latent, noised to the current level,
    after every step.
    """
    batch = condition.batch_size
    if len(seeds) != batch:
        raise ValueError(f"need one seed per output: {len(seeds)} seeds for {batch} outputs")
    device, dtype = backbone.device, backbone.dtype
    generators = [torch.Generator().manual_seed(check_seed(int(s))) for s in seeds]
    scheduler = make_scheduler(backbone, config.scheduler, config.steps)
    timesteps = scheduler.timesteps

    # 1. Initial latents: pure noise, or the input noised to the start of the schedule (SDEdit)
    noise = _noise(generators, shape).to(device)
    if init is None:
        latents = noise * scheduler.init_noise_sigma
        start = 0
    else:
        fraction = float(strength if strength is not None else 1.0)
        if not 0 < fraction <= 1:
            raise InputError(f"strength must lie in (0, 1], got {fraction}")
        start = min(int(round(config.steps * (1 - fraction))), config.steps - 1)
        t0 = timesteps[start].repeat(batch)
        latents = scheduler.add_noise(init.to(device).expand(batch, *shape), noise, t0)

    # 2. Guidance: the unconditional rows go first, in one batch with the conditional ones
    guided = config.guidance != 1.0
    if guided:
        condition = Condition.cat([backbone.null_condition(condition), condition])
    condition = condition.to(device, dtype)
    region = None
    if inpaint is not None:
        region = inpaint.region.to(device).view(1, 1, -1, 1)
        known = inpaint.known.to(device).expand(batch, *shape)

    # 3. Denoising loop
    for i, t in enumerate(tqdm(timesteps[start:], desc="sampling", disable=None if progress else True, leave=False)):
        model_in = torch.cat([latents] * 2) if guided else latents
        model_in = scheduler.scale_model_input(model_in, t)
        output = backbone.denoise(model_in.to(dtype), t.repeat(model_in.shape[0]), condition, unet).float()
        if guided:
            uncond, cond = output.chunk(2)
            output = uncond + config.guidance * (cond - uncond)
        step_kwargs = {"generator": generators} if isinstance(scheduler, DDPMScheduler) else {}
        latents = scheduler.step(output, t, latents, **step_kwargs).prev_sample
        if region is not None:
            later = timesteps[start + i + 1] if start + i + 1 < len(timesteps) else None
            context = (
                known
                if later is None
                else scheduler.add_noise(known, _noise(generators, shape).to(device), later.repeat(batch))
            )
            latents = torch.where(region, latents, context)
    return latents


def _noise(generators: list[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])
