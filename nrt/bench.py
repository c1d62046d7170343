"""``nrt bench``: seconds per step of each stage, and the peak memory, on the chosen device.

Stages: step 1 (embedding), step 2 full, step 2 LoRA, and one sampling step (guided, one
output); then the wall time of one whole ``nrt edit`` (loading, the model's default fit and
sampling, one output written) of a generated clip of ``--edit-seconds``. With ``--unet tango`` the backbone's UNet is swapped for a TANGO-size UNet with
random weights (and random text states of TANGO's width), so a GPU can be sized without
downloading TANGO.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TypeVar

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from .backbones import load_backbone
from .backbones.base import Backbone, Condition
from .embedding import optimize_embedding
from .errors import InputError
from .finetune import finetune_unet
from .sample import sample
from .settings import DEFAULT_LORA_TARGETS, DEFAULT_TUNE_LR, SampleConfig

TANGO_PROMPT_TOKENS = 16
T = TypeVar("T")


def peak_bytes(device: torch.device) -> int:
    """The peak GPU memory allocated since :func:`reset_peak`; on the CPU, the process's RSS high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``fn()`` and its wall seconds, with the device's queued work finished before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def _time(fn: Callable[[int], None], iters: int, device: torch.device) -> float:
    fn(1)  # warm-up: kernels, allocator, autotuning
    return timed(lambda: fn(iters), device)[1] / iters


def _tango_size(backbone: Backbone) -> Condition:
    config = json.loads(resources.files("nrt.backbones.data").joinpath("tango-unet-config.json").read_text())
    backbone.unet = UNet2DConditionModel.from_config(config).to(backbone.device, backbone.dtype).requires_grad_(False)
    width = config["cross_attention_dim"]
    embeds = torch.randn(1, TANGO_PROMPT_TOKENS, width, device=backbone.device, dtype=backbone.dtype)
    mask = torch.ones(1, TANGO_PROMPT_TOKENS, dtype=torch.bool, device=backbone.device)
    # the null condition is the same shape: one real token (end of sequence), the rest padding
    null_mask = torch.zeros_like(mask)
    null_mask[:, 0] = True
    null = Condition(torch.randn_like(embeds), null_mask)
    backbone.null_condition = lambda like: null.repeat(like.batch_size)  # type: ignore[method-assign]
    return Condition(embeds, mask)


def run_bench(args: argparse.Namespace) -> Iterator[str]:
    if not 0.5 <= args.seconds <= 60:
        raise InputError(f"--seconds must lie in 0.5-60, got {args.seconds}")
    if args.iters < 1:
        raise InputError(f"--iters must be >= 1, got {args.iters}")
    backbone = load_backbone(args.model, device=args.device, dtype=args.dtype)
    device = backbone.device
    num_samples = int(args.seconds * backbone.sample_rate)
    shape = backbone.latent_shape(num_samples)
    if args.unet == "tango":
        e_tgt = _tango_size(backbone)
    else:
        e_tgt = backbone.encode_text(["three beeps, then a church bell, over soft static"])
    backbone.offload_frozen("cpu")
    latents = torch.randn(1, *shape, device=device, dtype=backbone.dtype)
    scheduler = DDPMScheduler.from_config(backbone.scheduler_config)
    generator = torch.Generator().manual_seed(0)
    params = sum(p.numel() for p in backbone.unet.parameters())
    yield (
        f"model {args.model} (UNet: {args.unet}, {params / 1e6:.1f} M parameters), device {device}, "
        f"dtype {args.dtype}, clip {args.seconds:g} s -> latent {tuple(shape)}"
    )
    if device.type == "cuda":
        yield f"card: {torch.cuda.get_device_name(device)}"

    def step1(n: int) -> None:
        optimize_embedding(
            backbone, scheduler, latents, e_tgt, steps=n, lr=2e-3, batch_size=1, generator=generator, progress=False
        )

    def step2(method: str) -> Callable[[int], None]:
        lora = {"rank": 8, "alpha": 8.0, "targets": list(DEFAULT_LORA_TARGETS)}

        def run(n: int) -> None:
            finetune_unet(
                backbone,
                scheduler,
                latents,
                e_tgt,
                method=method,
                steps=n,
                lr=DEFAULT_TUNE_LR[method],
                batch_size=1,
                generator=generator,
                lora=lora,
                gradient_checkpointing=args.gradient_checkpointing,
                progress=False,
            )

        return run

    def sampling(n: int) -> None:
        sample(backbone, e_tgt, shape, SampleConfig(steps=n, guidance=3.0), [0], progress=False)

    stages = [
        ("step 1 (embedding)", step1),
        ("step 2 full", step2("full")),
        ("step 2 LoRA", step2("lora")),
        ("sampling (guided, 1 output)", sampling),
    ]
    for name, fn in stages:
        reset_peak(device)
        seconds = _time(fn, args.iters, device)
        peak = peak_bytes(device) / 2**30
        where = "GPU" if device.type == "cuda" else "process RSS"
        yield f"{name:<30} {seconds:8.4f} s/step   peak {peak:6.2f} GiB ({where})"
    if args.edit_seconds and args.unet == "model":
        del backbone
        seconds = time_edit(args.model, str(device), args.dtype, args.edit_seconds)
        yield f"{'nrt edit, ' + format(args.edit_seconds, 'g') + ' s clip':<30} {seconds:8.1f} s in all (default fit, 1 output)"


def time_edit(
    model: str,
    device: str,
    dtype: str,
    seconds: float,
    sampling: SampleConfig | None = None,
    defaults: str | None = None,
) -> float:
    """Wall seconds of an edit as ``nrt edit`` makes it (the model loaded, its default fit and
    step 3 settings, one output at η 0.5 written) of a generated scene of ``seconds``;
    ``sampling`` replaces the model's default step 3 settings, ``defaults`` names the model
    whose defaults to take instead of ``model``'s (a variant of ``mini`` in a folder of its own)."""
    import tempfile
    from pathlib import Path

    import soundfile as sf

    from .audio import load_audio, write_audio
    from .bundle import load_bundle
    from .defaults import fit_config, sample_config
    from .edit import generate
    from .fit_clip import fit_clip
    from .mini.scenes import SAMPLE_RATE, scene_for

    if not 0.5 <= seconds <= 60:
        raise InputError(f"--edit-seconds must lie in 0.5-60 (or 0 to skip), got {seconds}")
    scene = scene_for("heldout", 0, duration=seconds)
    with tempfile.TemporaryDirectory(prefix="nrt-bench-") as tmp:
        source = Path(tmp) / "clip.wav"
        sf.write(source, scene.render(SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
        prompt = f"{scene.caption()}, then a church bell rings"
        quiet = logging.getLogger("nrt")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # the edit's own log lines would bury the numbers
        try:
            start = time.perf_counter()
            clip = load_audio(source)
            backbone = load_backbone(model, device=device, dtype=dtype)
            bundle_path = Path(tmp) / "edit.bundle"
            fit_clip(backbone, clip, prompt, fit_config(defaults or model), bundle_path, overwrite=True, progress=False)
            bundle = load_bundle(bundle_path, backbone.info)
            outputs = generate(backbone, bundle, [0.5], sampling or sample_config(defaults or model), 0, progress=False)
            write_audio(Path(tmp) / "edit.wav", outputs[0], clip.sample_rate)
            elapsed = time.perf_counter() - start
        finally:
            quiet.setLevel(level)
    return elapsed
