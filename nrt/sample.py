"""Where sampling happens: the reverse diffusion with classifier-free guidance.

Every random draw of an output (its initial noise, each DDPM step's noise, the noise put
on an inpainting context) comes from that output's own generator, so an output made with
seed s is the same whether it was made alone or in a batch.

Step 3 can start three ways (``SampleConfig.start``):

- ``noise``: pure noise, the paper's start;
- ``input``: the input latent noised to ``t_start`` (as SDEdit starts);
- ``inversion``: edit-friendly DDPM inversion of the input (:func:`invert`), then the reverse
  diffusion from ``t_start`` driven by the inversion's per-step noise.

``t_start`` is the fraction of the sampling schedule that is run: 1 starts at its noisiest
step, 0.5 halfway down. It is SDEdit's strength, under the name every start shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from .backbones.base import Backbone, Condition
from .errors import InputError
from .settings import SampleConfig, check_seed, start_index

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


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


@dataclass
class Inversion:
    """An edit-friendly DDPM inversion of one latent, from ``start`` down the schedule.

    ``trajectory[k]`` is x at schedule index ``start + k`` (the last entry is x_0, the input);
    ``residuals[k]`` is what the step from index ``start + k`` adds to the posterior mean to
    land on the next entry. For a DDPM step that is σ_t·z_t, z_t the step's noise map; storing
    it whole also covers the last step, whose σ is zero, and deterministic schedulers.
    """

    start: int
    trajectory: list[torch.Tensor]
    residuals: list[torch.Tensor]

    @property
    def latent(self) -> torch.Tensor:
        """Where regeneration starts: x at ``start``, ``[1, C, F, M]``."""
        return self.trajectory[0]

    def from_index(self, start: int) -> Inversion:
        """The same inversion seen from a later ``start`` (what :func:`invert` gives for it)."""
        if start < self.start:
            raise ValueError(f"the inversion begins at index {self.start}, not before it ({start})")
        k = start - self.start
        return Inversion(start, self.trajectory[k:], self.residuals[k:])


class _Denoiser:
    """The backbone's denoiser with classifier-free guidance, one condition batch bound."""

    def __init__(self, backbone: Backbone, condition: Condition, guidance: float, unet: torch.nn.Module | None) -> None:
        self.backbone, self.guidance, self.unet = backbone, float(guidance), unet
        self.guided = self.guidance != 1.0
        if self.guided:
            condition = Condition.cat([backbone.null_condition(condition), condition])
        self.condition = condition.to(backbone.device, backbone.dtype)

    def __call__(
        self, scheduler: DDPMScheduler | DDIMScheduler, latents: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        model_in = torch.cat([latents] * 2) if self.guided else latents
        model_in = scheduler.scale_model_input(model_in, t)
        dtype = self.backbone.dtype
        output = self.backbone.denoise(model_in.to(dtype), t.repeat(model_in.shape[0]), self.condition, self.unet)
        output = output.float()
        if self.guided:
            uncond, cond = output.chunk(2)
            output = uncond + self.guidance * (cond - uncond)
        return output


def posterior_mean(
    scheduler: DDPMScheduler | DDIMScheduler, output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor
) -> torch.Tensor:
    """The mean of the step from ``t`` to the schedule's next timestep, without its noise.

    For DDPM this is μ(x_t) of Ho et al.'s eq. 7 (what ``DDPMScheduler.step`` adds its noise
    to); for DDIM the deterministic step (η = 0).
    """
    if isinstance(scheduler, DDIMScheduler):
        return scheduler.step(output, t, latents, eta=0.0).prev_sample
    config = scheduler.config
    prev_t = scheduler.previous_timestep(t)
    alpha_t = scheduler.alphas_cumprod[t].to(latents.device)
    alpha_prev = scheduler.alphas_cumprod[prev_t].to(latents.device) if prev_t >= 0 else scheduler.one
    beta_t, beta_prev = 1 - alpha_t, 1 - alpha_prev
    step_alpha = alpha_t / alpha_prev
    if config.prediction_type == "epsilon":
        x0 = (latents - beta_t**0.5 * output) / alpha_t**0.5
    elif config.prediction_type == "v_prediction":
        x0 = alpha_t**0.5 * latents - beta_t**0.5 * output
    elif config.prediction_type == "sample":
        x0 = output
    else:
        raise ValueError(f"unknown prediction_type {config.prediction_type!r}")
    if config.thresholding:
        raise ValueError("inversion does not support a thresholding scheduler")
    if config.clip_sample:
        x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return (alpha_prev**0.5 * (1 - step_alpha) / beta_t) * x0 + (step_alpha**0.5 * beta_prev / beta_t) * latents


@torch.no_grad()
def invert(
    backbone: Backbone,
    condition: Condition,
    latent: torch.Tensor,
    config: SampleConfig,
    seed: int,
    *,
    unet: torch.nn.Module | None = None,
    progress: bool = True,
) -> Inversion:
    """Edit-friendly DDPM inversion of ``latent`` (``[1, C, F, M]``) under ``condition``.

    Following Huberman-Spiegelglas et al. (CVPR 2024): draw x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε_t
    independently for every timestep from ``config.t_start`` down, then take each step's
    residual against the posterior mean under the guidance ``config.guidance`` and set
    x_{t−1} to mean plus residual, so errors do not build up. Regenerating with the same
    condition and guidance (:func:`sample` with ``inversion=``) returns ``latent`` exactly.
    """
    if condition.batch_size != 1 or latent.shape[0] != 1:
        raise ValueError("invert() takes one latent and one condition")
    generator = torch.Generator().manual_seed(check_seed(int(seed)))
    scheduler = make_scheduler(backbone, config.scheduler, config.steps)
    timesteps = scheduler.timesteps
    start = start_index(config.steps, config.t_start)
    x0 = latent.to(backbone.device).float()
    shape = tuple(x0.shape[1:])
    # 1. Independent noisy versions of x_0 at every timestep, drawn for the whole schedule so that
    #    an inversion seen from a later start (``from_index``) is the one made there
    draws = [_noise([generator], shape).to(x0.device) for _ in timesteps]
    trajectory = [scheduler.add_noise(x0, draws[i], timesteps[i].reshape(1)) for i in range(start, len(timesteps))]
    trajectory.append(x0)
    # 2. The residual of each step, with x_{t-1} reset to mean plus residual
    denoiser = _Denoiser(backbone, condition, config.guidance, unet)
    residuals = []
    steps = timesteps[start:]
    for k, t in enumerate(tqdm(steps, desc="inverting", disable=None if progress else True, leave=False)):
        mean = posterior_mean(scheduler, denoiser(scheduler, trajectory[k], t), t, trajectory[k])
        residuals.append(trajectory[k + 1] - mean)
    return Inversion(start, trajectory, residuals)


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
    inversion: Inversion | None = None,
    inpaint: Inpaint | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Denoise one latent per row of ``condition``; return latents ``[B, *shape]``.

    With ``init`` (a latent ``[1, *shape]``) and ``strength`` s, start from ``init`` noised to
    the fraction s of the schedule instead of pure noise (SDEdit, and the ``input`` start).
    With ``inversion`` (from :func:`invert`, made with the same ``config``), start where it
    starts and let each step land on its posterior mean plus the inversion's residual. With
    ``inpaint``, the latent outside the region is reset to the known latent, noised to the
    current level (with an inversion: its trajectory), after every step.
    """
    batch = condition.batch_size
    if len(seeds) != batch:
        raise ValueError(f"need one seed per output: {len(seeds)} seeds for {batch} outputs")
    if init is not None and inversion is not None:
        raise ValueError("give init or inversion, not both")
    device = backbone.device
    generators = [torch.Generator().manual_seed(check_seed(int(s))) for s in seeds]
    scheduler = make_scheduler(backbone, config.scheduler, config.steps)
    timesteps = scheduler.timesteps

    # 1. Initial latents: pure noise, the input noised to a point of the schedule, or an inversion's start
    noise = _noise(generators, shape).to(device)
    if inversion is not None:
        if len(inversion.residuals) != len(timesteps) - inversion.start:
            raise ValueError("the inversion was made with another schedule")
        start = inversion.start
        latents = inversion.latent.to(device).expand(batch, *shape).clone()
    elif init is None:
        latents = noise * scheduler.init_noise_sigma
        start = 0
    else:
        fraction = float(strength if strength is not None else 1.0)
        if not 0 < fraction <= 1:
            raise InputError(f"strength must lie in (0, 1], got {fraction}")
        start = start_index(config.steps, fraction)
        t0 = timesteps[start].repeat(batch)
        latents = scheduler.add_noise(init.to(device).expand(batch, *shape), noise, t0)

    # 2. Guidance: the unconditional rows go first, in one batch with the conditional ones
    denoiser = _Denoiser(backbone, condition, config.guidance, unet)
    region = None
    if inpaint is not None:
        region = inpaint.region.to(device).view(1, 1, -1, 1)
        known = inpaint.known.to(device).expand(batch, *shape)

    # 3. Denoising loop
    step_kwargs = {"generator": generators} if isinstance(scheduler, DDPMScheduler) else {}
    for i, t in enumerate(tqdm(timesteps[start:], desc="sampling", disable=None if progress else True, leave=False)):
        output = denoiser(scheduler, latents, t)
        if inversion is not None:
            latents = posterior_mean(scheduler, output, t, latents) + inversion.residuals[i].to(device)
        else:
            latents = scheduler.step(output, t, latents, **step_kwargs).prev_sample
        if region is not None:
            later = timesteps[start + i + 1] if start + i + 1 < len(timesteps) else None
            if inversion is not None:
                context = inversion.trajectory[i + 1].to(device).expand(batch, *shape)
            elif later is None:
                context = known
            else:
                context = scheduler.add_noise(known, _noise(generators, shape).to(device), later.repeat(batch))
            latents = torch.where(region, latents, context)
    return latents


def _noise(generators: list[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])
