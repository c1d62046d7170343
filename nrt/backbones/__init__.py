"""Backbones: the latent diffusion models nrt edits with, behind one interface."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import InputError
from .base import Backbone, BackboneInfo, Condition, Loudness

logger = logging.getLogger(__name__)

BUILTIN = {
    "mini": "nrt-mini (the default): a 9 M-parameter text-to-audio model trained by nrt on generated sound "
    "scenes, shipped in the package; real edits on a CPU, in its own small sound world (nrt/mini/MODEL_CARD.md)",
    "tiny": "TANGO's architecture at toy size, random weights; written to the cache on first use (no download)",
    "tiny-audioldm": "AudioLDM's architecture at toy size, random weights; written to the cache on first use",
    "tiny-audioldm2": "AudioLDM 2's architecture at toy size, random weights; written to the cache on first use",
}
KNOWN_HUB = {
    "declare-lab/tango": "TANGO, FLAN-T5 large + 866M UNet, AudioCaps (CC BY-NC-ND 4.0)",
    "declare-lab/tango-full-ft-audiocaps": "TANGO fine-tuned on AudioCaps (CC BY-NC-ND 4.0)",
    "declare-lab/tango2": "TANGO 2, DPO-aligned (CC BY-NC-ND 4.0)",
    "cvssp/audioldm-s-full-v2": "AudioLDM small, CLAP class embedding (CC BY-NC-SA 4.0)",
    "cvssp/audioldm-m-full": "AudioLDM medium (CC BY-NC-SA 4.0)",
    "cvssp/audioldm2": "AudioLDM 2, CLAP + FLAN-T5 through GPT-2, general audio (CC BY-NC-SA 4.0)",
    "cvssp/audioldm2-large": "AudioLDM 2 large, a deeper UNet (CC BY-NC-SA 4.0)",
    "cvssp/audioldm2-music": "AudioLDM 2 for music (CC BY-NC-SA 4.0)",
}
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

__all__ = ["Backbone", "BackboneInfo", "Condition", "Loudness", "load_backbone", "parse_dtype"]


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}: choose one of fp32, bf16, fp16")
    return DTYPES[name]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but no CUDA device is available")
    return resolved


def _is_diffusers_layout(path: Path) -> bool:
    return (path / "model_index.json").exists() or (path / "unet" / "config.json").exists()


def load_backbone(
    model: str | Path = "mini",
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "fp32",
    revision: str | None = None,
) -> Backbone:
    """Load a backbone by built-in name, local directory or hub id, and place it."""
    torch_dtype = parse_dtype(dtype)
    target = resolve_device(device)
    name = str(model)
    if name == "mini":
        from ..mini.model import mini_dir
        from .tango import load_tango

        backbone: Backbone = load_tango(mini_dir())
        backbone.info.model_id = "mini"
    elif name == "tiny":
        from .tango import load_tango
        from .tiny import ensure_tiny

        backbone = load_tango(ensure_tiny())
        backbone.info.model_id = "tiny"
    elif name == "tiny-audioldm":
        from .audioldm import ensure_tiny_audioldm, load_audioldm

        backbone = load_audioldm(ensure_tiny_audioldm())
        backbone.info.model_id = "tiny-audioldm"
    elif name == "tiny-audioldm2":
        from .audioldm2 import load_audioldm2
        from .tiny_audioldm2 import ensure_tiny_audioldm2

        backbone = load_audioldm2(ensure_tiny_audioldm2())
        backbone.info.model_id = "tiny-audioldm2"
    elif _looks_like_audioldm2(name):
        from .audioldm2 import load_audioldm2

        backbone = load_audioldm2(name, revision=revision)
    elif _looks_like_audioldm(name):
        from .audioldm import load_audioldm

        backbone = load_audioldm(name, revision=revision)
    else:
        from .tango import load_tango

        backbone = load_tango(name, revision=revision)
    return backbone.to(target, torch_dtype)


def _looks_like_audioldm2(name: str) -> bool:
    """A directory whose model_index.json names AudioLDM2Pipeline, or a hub id naming AudioLDM 2."""
    path = Path(name).expanduser()
    if path.is_dir():
        from .audioldm2 import is_audioldm2_dir

        return is_audioldm2_dir(path)
    return "audioldm2" in name.lower()


def _looks_like_audioldm(name: str) -> bool:
    path = Path(name).expanduser()
    if path.is_dir():
        return _is_diffusers_layout(path)
    return "audioldm" in name.lower()
