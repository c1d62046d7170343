"""Step 2: fine-tune the UNet on e_opt, fully or with LoRA, and put a fitted UNet back to work."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from .backbones.base import Backbone, Condition, place
from .embedding import autocast
from .loss import diffusion_loss, draw
from .optimize import compiled, optimize

ADAPTER = "nrt"


def lora_config(rank: int, alpha: float, targets: list[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights="gaussian")


def finetune_unet(
    backbone: Backbone,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    e_opt: Condition,
    *,
    method: str,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    weight: torch.Tensor | None = None,
    progress: bool = True,
    compile_unet: bool = False,
    fused_adam: bool = False,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Minimise L(z, e_opt) over the UNet; return the trained weights (full or LoRA) on the CPU.

    The backbone's own UNet is left as it was: a full fine-tune trains a float32 copy, a
    LoRA fine-tune trains an adapter that is removed again afterwards. ``compile_unet`` runs
    the trained UNet through ``torch.compile``; ``fused_adam`` takes the fused Adam.
    """
    condition = e_opt.detach().repeat(batch_size)
    num_train = scheduler.config.num_train_timesteps
    device = latents.device

    with _trainable_unet(backbone, method, lora) as unet:
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        model = compiled(unet) if compile_unet else unet

        def loss_fn(step: int) -> torch.Tensor:
            timesteps, noise = draw(latents.shape, num_train, batch_size, generator)
            with autocast(backbone):
                return diffusion_loss(
                    backbone, scheduler, latents, condition, timesteps.to(device), noise.to(device), model, weight
                )

        try:
            losses = optimize(
                unet.parameters(),
                loss_fn,
                steps,
                lr,
                desc=f"step 2: UNet ({method})",
                progress=progress,
                fused=fused_adam,
            )
        finally:
            unet.eval()
            if gradient_checkpointing:
                unet.disable_gradient_checkpointing()
        state = _trained_state(unet, method)
    return state, losses


@contextlib.contextmanager
def _trainable_unet(backbone: Backbone, method: str, lora: dict[str, Any] | None) -> Iterator[UNet2DConditionModel]:
    if method == "full":
        yield copy.deepcopy(backbone.unet).float().requires_grad_(True)
        return
    with _adapter(backbone, lora, trainable=True) as unet:
        yield unet


@contextlib.contextmanager
def _adapter(
    backbone: Backbone,
    lora: dict[str, Any] | None,
    state: dict[str, torch.Tensor] | None = None,
    trainable: bool = False,
) -> Iterator[UNet2DConditionModel]:
    """The backbone's UNet with a LoRA adapter (loaded from ``state`` if given) until the block ends."""
    from peft import set_peft_model_state_dict

    if lora is None:
        raise ValueError("a LoRA adapter needs its settings (rank, alpha, targets); none were given")
    unet = backbone.unet
    unet.add_adapter(lora_config(**lora), adapter_name=ADAPTER)
    try:
        if state is not None:
            incompatible = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER)
            unexpected = getattr(incompatible, "unexpected_keys", [])
            if unexpected:
                raise ValueError(f"LoRA weights do not match the UNet: unexpected keys {unexpected[:5]}")
        if trainable:
            for name, p in unet.named_parameters():
                is_lora = "lora_" in name
                p.requires_grad_(is_lora)
                if is_lora:  # the adapter trains in float32 whatever the UNet's precision
                    p.data = p.data.float()
        else:
            place(unet, backbone.device, backbone.dtype)
            unet.requires_grad_(False)
        yield unet
    finally:
        remove_adapter(unet)
        unet.requires_grad_(False)


def remove_adapter(unet: UNet2DConditionModel) -> None:
    """Take the adapter out and put the original layers back, so the UNet is as it was.

    diffusers' ``unload_lora`` replaces every peft wrapper by the layer it wrapped; peft's
    ``delete_adapters`` alone would leave the wrappers in place, which renames every wrapped
    weight (``to_q.weight`` becomes ``to_q.base_layer.weight``).
    """
    unet.unload_lora()


def _trained_state(unet: UNet2DConditionModel, method: str) -> dict[str, torch.Tensor]:
    if method == "full":
        return {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


@contextlib.contextmanager
def fitted_unet(
    backbone: Backbone, method: str, state: dict[str, torch.Tensor], lora: dict[str, Any] | None = None
) -> Iterator[UNet2DConditionModel]:
    """The backbone's UNet with a fit's weights applied, for as long as the block runs."""
    if method == "full":
        unet = copy.deepcopy(backbone.unet)
        unet.load_state_dict(state, strict=True)
        yield place(unet, backbone.device, backbone.dtype).eval()
        return
    with _adapter(backbone, lora, state=state) as unet:
        yield unet
