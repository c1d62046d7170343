"""The one optimisation loop behind steps 1 (the embedding) and 2 (the UNet)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import cast

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def optimize(
    params: Iterable[torch.nn.Parameter | torch.Tensor],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    *,
    desc: str,
    progress: bool = True,
    fused: bool = False,
) -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` with Adam; return the loss of every step.

    ``fused`` takes PyTorch's fused Adam (one kernel for every tensor's update) instead of
    its default implementation: the same rule, other rounding.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: nothing to optimise (no parameter requires grad)")
    optimizer = torch.optim.Adam(params, lr=lr, fused=True if fused else None)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=None if progress else True, leave=False, dynamic_ncols=True)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{desc}: the loss became {value} at step {step}; lower the learning rate ({lr:g})"
            )
        loss.backward()
        optimizer.step()
        losses.append(value)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{value:.4f}")
    bar.close()
    if losses:
        logger.info("%s: %d steps, loss %.4f -> %.4f", desc, steps, losses[0], losses[-1])
    return losses


def compiled(module: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
    """``module`` through ``torch.compile`` (``mode`` as it takes it): the same parameters, its
    forward compiled on the first call and again when what it is called with changes shape."""
    return cast(torch.nn.Module, torch.compile(module, mode=mode))
