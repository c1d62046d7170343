"""The one resumable training loop behind nrt-mini's text-to-audio model and its CLAP.

A run lives in one folder. Every ``checkpoint_every`` steps (and when it stops, at its step
budget, its time budget or on Ctrl-C) the loop writes ``checkpoint.pt`` atomically: model,
EMA copy, optimiser, step and the losses so far. Running the same command again continues
from there. Batches are a function of the step number alone (``batch(step)`` seeds its own
generator), so a run that is stopped and continued sees the same data as one that was not.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from tqdm.auto import tqdm

from ..files import atomic_file

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Optimiser and budget of one training run (AdamW, linear warm-up, cosine decay, EMA)."""

    steps: int = 20_000
    lr: float = 6e-4
    weight_decay: float = 0.01
    warmup: int = 500
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    max_minutes: float | None = field(default=None, metadata={"help": "stop (and checkpoint) after this long"})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {self.checkpoint_every}")

    def lr_at(self, step: int, minutes: float = 0.0) -> float:
        """Linear warm-up, then a cosine decay over the steps, or over the time budget if that ends first."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.max_minutes:
            progress = max(progress, minutes / self.max_minutes)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def ema_decay_at(self, step: int) -> float:
        """0 (a plain copy) during the learning-rate warm-up, then ``(1 + k) / (10 + k)`` after
        ``k`` further steps, capped at ``ema_decay``: a short run's EMA averages its recent
        weights instead of holding on to its first ones."""
        if step < self.warmup:
            return 0.0
        k = step - self.warmup
        return min(self.ema_decay, (1 + k) / (10 + k))


M = TypeVar("M", bound=torch.nn.Module)


@dataclass
class TrainResult(Generic[M]):
    model: M  # the trained weights themselves
    ema: M
    step: int
    losses: list[float]
    finished: bool  # reached ``steps`` (rather than the time budget)


def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach().to(e.dtype), 1 - decay)
        for held, buffer in zip(ema.buffers(), model.buffers()):
            held.copy_(buffer)


def train(
    model: M,
    loss_fn: Callable[[M, Any], torch.Tensor],
    batch: Callable[[int], Any],
    config: TrainConfig,
    run_dir: str | Path,
    *,
    desc: str = "training",
    progress: bool = True,
    autocast: torch.dtype | None = None,
) -> TrainResult[M]:
    """Train ``model`` on ``loss_fn(model, batch(step))``, continuing from ``run_dir`` if it holds a checkpoint."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = copy.deepcopy(model).requires_grad_(False)
    start, losses = 0, []

    path = run_dir / CHECKPOINT
    if path.exists():
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start, losses = state["step"], state["losses"]
        logger.info("%s: continuing from step %d in %s", desc, start, run_dir)

    def save(step: int) -> None:
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "losses": losses,
            "config": asdict(config),
        }
        atomic_file(path, lambda tmp: torch.save(state, tmp))

    began = time.monotonic()
    step = start
    bar = tqdm(total=config.steps, initial=start, desc=desc, disable=None if progress else True, dynamic_ncols=True)
    model.train()
    try:
        while step < config.steps:
            minutes = (time.monotonic() - began) / 60
            if config.max_minutes is not None and minutes > config.max_minutes:
                logger.info("%s: time budget of %.1f min reached at step %d", desc, config.max_minutes, step)
                break
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step, minutes)
            data = batch(step)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = loss_fn(model, data)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"{desc}: the loss became {value} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            _update_ema(ema, model, config.ema_decay_at(step))
            losses.append(value)
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.4f}")
            if step % config.checkpoint_every == 0:
                save(step)
                logger.info(
                    "%s: step %d, loss %.4f, %.1f steps/s",
                    desc,
                    step,
                    sum(losses[-100:]) / len(losses[-100:]),
                    (step - start) / (time.monotonic() - began),
                )
    finally:
        bar.close()
        model.eval()
        if step > start:
            save(step)
    return TrainResult(model=model, ema=ema.eval(), step=step, losses=losses, finished=step >= config.steps)
