"""Time an edit on a full-size TANGO or AudioLDM-m, stage by stage, with no download.

    python benchmarks/gpu_edit.py                                # CUDA: TANGO at full size, the paper's steps
    python benchmarks/gpu_edit.py --backbone audioldm --variants none
    python benchmarks/gpu_edit.py --size tiny                    # toy size on the CPU: checks the script
    python benchmarks/gpu_edit.py --stage-seconds 40 --budget 240 -o results.json

The script writes random-weight checkpoints in the real on-disk layouts, once per work
directory: TANGO's hub layout (``main_config.json`` naming TANGO's UNet config, 866 M
parameters; a T5 encoder of FLAN-T5-large's size, 24 layers of width 1024, with a tokenizer
built here; the AudioLDM VAE with its HiFi-GAN in ``pytorch_model_vae.bin``), or AudioLDM-m
(416 M-parameter UNet, CLAP's RoBERTa text branch, VAE, HiFi-GAN) in the diffusers layout. It
loads them through ``nrt.backbones.load_backbone`` and, for a 10.0-s clip, times: loading,
encoding, step 1 (500 steps), step 2 with LoRA and full (1500 steps each), sampling (200
steps, 4 η in one guided batch: 8 UNet rows a step) and decoding. Each stage runs once
untimed with a few steps first (kernels, autotuning, the allocator), so the numbers are those
of a warm process, as in the service or a sweep worker.

For every stage it prints and writes to JSON: seconds, steps per second, peak GPU memory, the
FLOPs of one step (``torch.utils.flop_counter.FlopCounterMode`` on one eager step, attention
counted through the classic processor so that every device counts it), and the model FLOP
utilisation: FLOPs per step × steps / seconds, over the device's dense bf16 peak from the
vendor's datasheet (``PEAKS``: 989 TFLOP/s for the H100 SXM and the H200, whose tensor cores
are the H100's) and over the rate of a bf16 8192³ matrix product measured in the same run
(about 790 TFLOP/s on this workplace's H200s, the figure issue 15 quotes).

Speed options (``--variants``): each is timed off and on in the same run, in one call of a
warm-up and a short fixed number of steps (``--variant-steps``), the seconds a step read
between the UNet calls after the warm-up, so that per-call work (an adapter added, a UNet
copied) and compilation drop out; the warm-up's seconds, compilation included, are reported
apart:

- ``bf16``: the UNet in bf16 under autocast, trainable tensors float32 (off: float32);
- ``sdpa``: PyTorch's scaled-dot-product attention, diffusers' ``AttnProcessor2_0`` (off: the
  classic ``AttnProcessor``);
- ``compile``: ``torch.compile`` of the UNet, in step 2 and in sampling;
- ``fused_adam``: PyTorch's fused Adam, in the full fine-tune (off: its default);
- ``draws``: K (timestep, noise) draws per step and 1/K of the steps, the same draws in all
  (step 2 LoRA; seconds and probe loss, also with the rate times √K);
- ``cuda_graphs``: sampling through ``torch.compile(mode="reduce-overhead")``, which replays
  CUDA graphs (off: eager). CUDA only.

The same options set the main stages (``--dtype``, ``--attention``, ``--compile``,
``--cuda-graphs``, ``--fused-adam``, ``--draws-per-step``). nrt's defaults keep them off on
every device until this measurement has been made; the CUDA defaults will be chosen from it.

Time budget (one H100/H200, 8 minutes with the gpu-marked tests, ``benchmarks/gpu_run.sh``).
FlopCounterMode gives TANGO's UNet 0.80 TFLOP a forward pass and 2.39 TFLOP forward and
backward on a 10-s latent (8 × 256 × 16); AudioLDM-m's 0.22 TFLOP a forward pass. TANGO's main
stages are then about 0.8 PFLOP (step 1, about two forward passes a step), 2.4 (LoRA), 3.6
(full) and 1.3 (sampling): 8 PFLOP, 27 s at 30 % of 989 TFLOP/s and 80 s at 10 %, plus the full
fine-tune's Adam over 866 M float32 parameters (a few ms a step), writing and loading the
checkpoints (5.0 GB for TANGO, 2.5 GB for AudioLDM-m; on 2 busy CPU cores TANGO's took 42 s to
write and 38 s to load), and the variants at 20 steps each, of which torch.compile's
compilations (tens of seconds to minutes each) are the largest. ``--stage-seconds`` caps each main stage: a stage
whose warm-up predicts more runs fewer steps, and its seconds are extrapolated to the full
count and marked so (``extrapolated``, ``steps_run``, ``seconds_run`` in the JSON; ``*`` in the
table). ``--budget`` skips the variants that would end past it, saying so.

``--size tiny`` runs everything at toy size (the tiny models of the tests) with a few steps,
their seconds extrapolated to the paper's counts and marked so: it checks the script, not a
machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch.utils.flop_counter import FlopCounterMode
from transformers import ClapTextConfig, T5Config

from nrt.backbones import load_backbone, parse_dtype, resolve_device
from nrt.backbones.audioldm import TINY_UNET, TINY_VOCODER, write_random_audioldm, write_tiny_audioldm
from nrt.backbones.base import Backbone, Condition
from nrt.backbones.convert import vae_config_to_diffusers
from nrt.backbones.tiny import write_random_tango, write_tiny
from nrt.bench import peak_bytes, reset_peak, timed
from nrt.edit import interpolate
from nrt.embedding import optimize_embedding
from nrt.files import write_json
from nrt.finetune import finetune_unet, fitted_unet
from nrt.hub import cache_dir, ensure_dir
from nrt.loss import ProbeSet
from nrt.optimize import compiled
from nrt.runtime import free_accelerator
from nrt.sample import sample
from nrt.settings import DEFAULT_TUNE_LR, FitConfig, SampleConfig

ROOT = Path(__file__).resolve().parents[1]
FORMAT = 1  # bump when the checkpoints written here change
PROMPT = "a dog barking while church bells ring"
ETAS = (0.25, 0.5, 0.75, 1.0)
GUIDANCE = 3.0
EMBED_LR = FitConfig.embed_lr
LORA = FitConfig().lora
PAPER_STEPS = {"step1": 500, "step2_lora": 1500, "step2_full": 1500, "sampling": 200}
TINY_STEPS = {"step1": 1, "step2_lora": 2, "step2_full": 1, "sampling": 1}  # LoRA's 2: the draws variant halves it
PAPER = {"device": "RTX 3090", "lora_minutes": 9, "full_minutes": 17, "clip_seconds": 10}
TARGETS = {"fit_lora_seconds": 30.0, "sampling_seconds": 4.0, "step2_mfu": 0.35}

# Dense bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets, by device name (the
# first match wins). The H200 SXM has the H100 SXM's tensor cores and clocks.
PEAKS = (
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
)

# FLAN-T5-large's encoder (google/flan-t5-large config.json)
FLAN_T5_LARGE = {
    "vocab_size": 32128,
    "d_model": 1024,
    "d_kv": 64,
    "d_ff": 2816,
    "num_layers": 24,
    "num_heads": 16,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "is_encoder_decoder": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
# cvssp/audioldm-m-full: AudioLDM-s's UNet at 192 base channels (audioldm's default_audioldm_config
# for "-m-": model_channels 192, channel_mult 1-2-3-5), a 512-d CLAP class embedding
AUDIOLDM_M_UNET = {
    **TINY_UNET,
    "sample_size": 128,
    "block_out_channels": [192, 384, 576, 960],
    "cross_attention_dim": [192, 384, 576, 960],
    "layers_per_block": 2,
    "projection_class_embeddings_input_dim": 512,
}
# AudioLDM's 16 kHz, 64-mel HiFi-GAN at its own width (nrt.backbones.convert.HIFIGAN_16K_64)
AUDIOLDM_VOCODER = {
    **TINY_VOCODER,
    "upsample_initial_channel": 1024,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5]] * 3,
}
CLAP_MAX_TOKENS = 512  # RoBERTa's; AudioLDM pads every prompt to it

VARIANTS = {
    "bf16": "UNet in bf16 under autocast, trainable tensors float32 (off: float32)",
    "sdpa": "scaled-dot-product attention, AttnProcessor2_0 (off: the classic AttnProcessor)",
    "fused_adam": "fused Adam (off: PyTorch's default)",
    "draws": "K draws a step, 1/K of the steps, equal draws (off: one draw a step)",
    "compile": "torch.compile of the UNet (off: eager)",
    "cuda_graphs": "sampling through torch.compile(mode='reduce-overhead'), CUDA graphs (off: eager)",
}
CPU_VARIANTS = ("sdpa", "fused_adam", "draws")  # compiling takes minutes on a CPU, bf16 is slow there
COMPILE_ESTIMATE = 90.0  # seconds a compilation of a full-size UNet may take, for the budget

logger = logging.getLogger("gpu_edit")


@dataclass(frozen=True)
class Settings:
    """How the UNet runs: the knobs that the variants turn off and on."""

    dtype: torch.dtype
    attention: str = "sdpa"
    compile: bool = False  # torch.compile of the UNet, in steps 1 and 2 and in sampling
    cuda_graphs: bool = False  # sampling through torch.compile(mode="reduce-overhead")
    fused_adam: bool = False
    draws: int = 1
    lr_scale: float = 1.0

    @property
    def sampling_mode(self) -> str | None:
        """How sampling compiles the UNet: not at all (None), or torch.compile's mode."""
        return "reduce-overhead" if self.cuda_graphs else "default" if self.compile else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dtype": str(self.dtype).removeprefix("torch.")}


# -- 1. checkpoints in the real layouts ----------------------------------------------------------


def tango_unet_config() -> dict[str, Any]:
    """TANGO's UNet config (its code repository's configs/diffusion_model_config.json, as nrt carries it)."""
    return json.loads(resources.files("nrt.backbones.data").joinpath("tango-unet-config.json").read_text())


def tango_vae_config() -> dict[str, Any]:
    """The published AudioLDM VAE config that TANGO's checkpoints carry (no vocoder entry: TANGO's HiFi-GAN)."""
    return json.loads((ROOT / "tests" / "data" / "tango" / "mustango-vae_config.json").read_text())


def write_model(backbone: str, size: str, directory: Path) -> None:
    if backbone == "tango" and size == "tiny":
        write_tiny(directory)
    elif backbone == "tango":
        write_random_tango(
            directory,
            unet_config=tango_unet_config(),
            text_config=lambda _: T5Config(**FLAN_T5_LARGE),
            vae_config=tango_vae_config(),
            # as in TANGO's own main_config.json: the loader maps this path to the config nrt carries
            extra={"unet_model_config_path": "configs/diffusion_model_config.json"},
        )
    elif size == "tiny":
        write_tiny_audioldm(directory)
    else:
        vae = vae_config_to_diffusers({k: v for k, v in tango_vae_config().items() if k != "vocoder"})
        write_random_audioldm(
            directory,
            unet_config=AUDIOLDM_M_UNET,
            text_config=lambda _: ClapTextConfig(
                projection_dim=AUDIOLDM_M_UNET["projection_class_embeddings_input_dim"]
            ),
            vae_config=vae,
            vocoder_config=AUDIOLDM_VOCODER,
            max_tokens=CLAP_MAX_TOKENS,
        )


def model_dir(args: argparse.Namespace) -> Path:
    root = Path(args.work_dir) if args.work_dir else cache_dir() / "gpu_edit"
    marker = "main_config.json" if args.backbone == "tango" else "model_index.json"
    name = f"{args.backbone}-{args.size}-v{FORMAT}"
    return ensure_dir(root / name, partial(write_model, args.backbone, args.size), marker)


# -- 2. the device and its peak ------------------------------------------------------------------


def describe_device(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "python": platform.python_version()}
    if device.type != "cuda":
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
        return info
    name = torch.cuda.get_device_name(device)
    peak = next((tflops for key, tflops in PEAKS if key in name), None)
    info.update(
        name=name,
        capability=".".join(map(str, torch.cuda.get_device_capability(device))),
        cuda=torch.version.cuda,
        memory_gib=torch.cuda.get_device_properties(device).total_memory / 2**30,
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        peak_bf16_tflops=peak,
        peak_source="vendor datasheet, dense bf16 tensor cores" if peak else "device not in PEAKS",
        measured_matmul_tflops=matmul_tflops(device),
    )
    return info


def matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """The rate of a bf16 ``n``³ matrix product on random data: the ceiling this device reaches here."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b

    def products() -> None:
        for _ in range(reps):
            a @ b

    _, seconds = timed(products, device)
    return 2 * n**3 * reps / seconds / 1e12


# -- 3. the stages ----------------------------------------------------------------------------


def beeps_clip(rate: int, seconds: float) -> torch.Tensor:
    """Beeps over noise, the same every run."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * rate)) / rate
    beeps = torch.sin(2 * math.pi * 660 * t) * ((t % 1.0) < 0.3)
    return 0.3 * beeps + 0.05 * torch.randn(t.shape, generator=generator)


def set_attention(unet: UNet2DConditionModel, kind: str) -> None:
    unet.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


class Stages:
    """The stages of an edit on one loaded backbone and clip, each callable with a step count."""

    def __init__(self, backbone: Backbone, latents: torch.Tensor, e_tgt: Condition, probe_size: int = 8) -> None:
        self.backbone, self.latents, self.e_tgt = backbone, latents, e_tgt
        self.e_opt = e_tgt
        self.lora_state: dict[str, torch.Tensor] = {}
        self.scheduler = DDPMScheduler.from_config(backbone.scheduler_config)
        num_train = self.scheduler.config.num_train_timesteps
        self.probe = ProbeSet.make(latents.shape, num_train, size=probe_size, seed=1)  # the fit's probe: 8 pairs
        self.shape = tuple(latents.shape[1:])

    def apply(self, settings: Settings) -> None:
        if self.backbone.dtype != settings.dtype:
            self.backbone.to(self.backbone.device, settings.dtype)
            self.backbone.offload_frozen("cpu")  # to() brought them back
        set_attention(self.backbone.unet, settings.attention)

    def step1(self, settings: Settings, steps: int) -> Condition:
        e_opt, _ = optimize_embedding(
            self.backbone,
            self.scheduler,
            self.latents,
            self.e_tgt.to(self.backbone.device, self.backbone.dtype),
            steps=steps,
            lr=EMBED_LR * settings.lr_scale,
            batch_size=settings.draws,
            generator=torch.Generator().manual_seed(0),
            progress=False,
            compile_unet=settings.compile,
            fused_adam=settings.fused_adam,
        )
        return e_opt

    def step2(self, method: str, settings: Settings, steps: int) -> dict[str, torch.Tensor]:
        state, _ = finetune_unet(
            self.backbone,
            self.scheduler,
            self.latents,
            self.e_opt.to(self.backbone.device, self.backbone.dtype),
            method=method,
            steps=steps,
            lr=DEFAULT_TUNE_LR[method] * settings.lr_scale,
            batch_size=settings.draws,
            generator=torch.Generator().manual_seed(0),
            lora=LORA,
            progress=False,
            compile_unet=settings.compile,
            fused_adam=settings.fused_adam,
        )
        return state

    @contextlib.contextmanager
    def sampling_unet(self, settings: Settings) -> Iterator[torch.nn.Module]:
        """The UNet with step 2's LoRA adapter, compiled as ``settings`` say, for one series of calls."""
        with fitted_unet(self.backbone, "lora", self.lora_state, LORA) as unet:
            mode = settings.sampling_mode
            yield unet if mode is None else compiled(unet, mode)

    def sampling(self, unet: torch.nn.Module, steps: int) -> torch.Tensor:
        condition = interpolate(self.e_tgt, self.e_opt, ETAS)
        config = SampleConfig(steps=steps, guidance=GUIDANCE)
        return sample(self.backbone, condition, self.shape, config, [0] * len(ETAS), unet=unet, progress=False)

    def probe_loss(self, condition: Condition, unet: torch.nn.Module | None = None) -> float:
        return self.probe.loss(self.backbone, self.scheduler, self.latents, condition, unet=unet)

    def fitted_probe_loss(self, method: str, state: dict[str, torch.Tensor]) -> float:
        with fitted_unet(self.backbone, method, state, LORA) as unet:
            return self.probe_loss(self.e_opt, unet)


def count_flops(fn: Callable[[], Any], unet: UNet2DConditionModel) -> int:
    """FLOPs of ``fn()``, with attention through the classic processor (its matrix products are
    counted on every device; PyTorch counts fused attention on CUDA only). The processors are put back."""
    processors = unet.attn_processors
    set_attention(unet, "classic")
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        unet.set_attn_processor(processors)
    return counter.get_total_flops()


# -- 4. measuring -------------------------------------------------------------------------------


class Run:
    """The measurement: the device, the deadline, and what has been measured so far."""

    def __init__(self, args: argparse.Namespace, device: torch.device, info: dict[str, Any]) -> None:
        self.args, self.device, self.info = args, device, info
        self.started = time.perf_counter()
        self.deadline = self.started + args.budget if args.budget else None
        self.backbone: Backbone | None = None  # whose UNet calls the step clock times

    @contextlib.contextmanager
    def step_clock(self) -> Iterator[list[float]]:
        """When each UNet call starts, the device's queue finished first: one call a step in steps 1
        and 2 and in sampling. (Both already wait on the device every step: the loss's ``item()``,
        the sampler's noise from the CPU; so this costs them nothing.)"""
        starts: list[float] = []
        backbone = self.backbone
        if backbone is None:
            yield starts
            return
        denoise = backbone.denoise

        def clocked(*args: Any, **kwargs: Any) -> torch.Tensor:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            starts.append(time.perf_counter())
            return denoise(*args, **kwargs)

        backbone.denoise = clocked  # type: ignore[method-assign]
        try:
            yield starts
        finally:
            del backbone.denoise  # the class's own again

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.perf_counter()

    def rates(self, flops_per_step: int, steps: int, seconds: float) -> dict[str, float | None]:
        achieved = flops_per_step * steps / seconds if seconds > 0 else 0.0
        peak, measured = self.info.get("peak_bf16_tflops"), self.info.get("measured_matmul_tflops")
        return {
            "tflops_per_second": achieved / 1e12,
            "mfu": achieved / (peak * 1e12) if peak else None,
            "mfu_of_measured_matmul": achieved / (measured * 1e12) if measured else None,
        }

    def stage(
        self, run: Callable[[int], Any], steps: int, target: int, flops: Callable[[], int], warmup: int
    ) -> tuple[Any, dict[str, Any]]:
        """One main stage: a warm-up call, then ``steps`` (fewer where ``--stage-seconds`` says so)."""
        _, warm = timed(lambda: run(warmup), self.device)
        cap = self.args.stage_seconds
        if cap and warm / warmup * steps > cap:
            steps = max(warmup, min(steps, int(cap / (warm / warmup))))
        reset_peak(self.device)
        with self.step_clock() as starts:
            result, seconds = timed(lambda: run(steps), self.device)
        peak = peak_bytes(self.device)
        flops_per_step = flops()
        logger.info("%d steps in %.2f s (warm-up %.2f s)", steps, seconds, warm)
        between = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else None
        record = {
            "steps": target,
            "steps_run": steps,
            "seconds_run": seconds,
            "seconds": seconds * target / steps,
            "extrapolated": steps != target,
            "steps_per_second": steps / seconds,
            # first UNet call to last: the call's setup (adapter, copy) and its last step left out
            "seconds_per_step_between_unet_calls": between,
            "warmup_seconds": warm,
            "flops_per_step": flops_per_step,
            **self.rates(flops_per_step, steps, seconds),
            "peak_memory_gib": peak / 2**30,
        }
        return result, record

    def per_step(self, run: Callable[[int], Any], steps: int) -> dict[str, float]:
        """Seconds a step in one call of warm-up and ``steps`` steps, timed between the UNet calls of
        the steps after the warm-up; the warm-up's seconds (compilation included) apart."""
        warmup = self.args.warmup_steps
        with self.step_clock() as starts:
            _, seconds = timed(lambda: run(warmup + steps), self.device)
        if len(starts) != warmup + steps:
            raise RuntimeError(f"expected {warmup + steps} UNet calls, timed {len(starts)}")
        per_step = (starts[-1] - starts[warmup]) / (steps - 1)
        logger.info("%d + %d steps in %.2f s: %.4f s a step", warmup, steps, seconds, per_step)
        return {
            "call_seconds": seconds,
            "warmup_seconds": starts[warmup] - starts[0],
            "seconds_per_step": per_step,
            "steps": steps,
        }


def main_stages(run: Run, stages: Stages, settings: Settings, report: dict[str, Any]) -> None:
    args, unet = run.args, stages.backbone.unet
    warmup = args.warmup_steps
    out = report["stages"]
    stages.apply(settings)

    # step 1: the embedding, UNet frozen
    e_opt, out["step1"] = run.stage(
        partial(stages.step1, settings),
        args.embed_steps,
        PAPER_STEPS["step1"],
        lambda: count_flops(lambda: stages.step1(eager(settings), 1), unet),
        warmup,
    )
    out["step1"]["probe_loss"] = {"e_tgt": stages.probe_loss(stages.e_tgt), "e_opt": stages.probe_loss(e_opt)}
    stages.e_opt = e_opt

    # step 2: LoRA, then the full fine-tune (which may not fit in memory: say so and go on)
    for method in ("lora", "full"):
        name = f"step2_{method}"
        try:
            state, out[name] = run.stage(
                partial(stages.step2, method, settings),
                args.tune_steps if method == "lora" else args.full_steps,
                PAPER_STEPS[name],
                partial(count_flops, partial(stages.step2, method, eager(settings), 1), unet),
                warmup,
            )
        except torch.cuda.OutOfMemoryError as exc:
            out[name] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
            free_accelerator()
            continue
        out[name]["probe_loss"] = {"before": out["step1"]["probe_loss"]["e_opt"]}
        out[name]["probe_loss"]["after"] = stages.fitted_probe_loss(method, state)
        if method == "lora":
            stages.lora_state = state
        del state

    # step 3: 4 η in one guided batch, with the LoRA adapter
    with stages.sampling_unet(settings) as model:
        latents, out["sampling"] = run.stage(
            partial(stages.sampling, model),
            args.sample_steps,
            PAPER_STEPS["sampling"],
            lambda: count_flops(lambda: stages.sampling(unet, 1), unet),  # the adapted UNet, eager
            warmup,
        )
    out["sampling"]["outputs"] = len(ETAS)

    # decoding: VAE and vocoder, float32, back on the device
    stages.backbone.restore_frozen()
    num_samples = int(args.seconds * stages.backbone.sample_rate)
    _, out["decode"] = run.stage(
        lambda _: stages.backbone.decode(latents, num_samples),
        1,
        1,
        lambda: count_flops(lambda: stages.backbone.decode(latents, num_samples), unet),
        1,
    )
    stages.backbone.offload_frozen("cpu")


def eager(settings: Settings) -> Settings:
    return replace(settings, compile=False, cuda_graphs=False)


# -- 5. the variants --------------------------------------------------------------------------


def variant_arms(name: str, base: Settings, draws: int) -> dict[str, Settings]:
    if name == "bf16":
        return {"off": replace(base, dtype=torch.float32), "on": replace(base, dtype=torch.bfloat16)}
    if name == "sdpa":
        return {"off": replace(base, attention="classic"), "on": replace(base, attention="sdpa")}
    if name == "fused_adam":
        return {"off": replace(base, fused_adam=False), "on": replace(base, fused_adam=True)}
    if name == "compile":
        return {"off": eager(base), "on": replace(base, compile=True, cuda_graphs=False)}
    if name == "cuda_graphs":
        return {"off": eager(base), "on": replace(base, compile=False, cuda_graphs=True)}
    if name == "draws":
        return {
            "off": replace(base, draws=1),
            "on": replace(base, draws=draws),
            "on_lr_sqrt": replace(base, draws=draws, lr_scale=math.sqrt(draws)),
        }
    raise ValueError(f"unknown variant {name!r}")


VARIANT_STAGES = {
    "bf16": ("step2_lora", "sampling"),
    "sdpa": ("step2_lora", "sampling"),
    "fused_adam": ("step2_full",),
    "compile": ("step2_lora", "sampling"),
    "cuda_graphs": ("sampling",),
}


def measure_arm(run: Run, stages: Stages, stage: str, settings: Settings) -> dict[str, Any]:
    stages.apply(settings)
    steps = run.args.variant_steps
    if stage == "sampling":
        with stages.sampling_unet(settings) as model:
            return run.per_step(partial(stages.sampling, model), steps)
    method = stage.removeprefix("step2_")
    return run.per_step(partial(stages.step2, method, settings), steps)


def arm_estimate(run: Run, report: dict[str, Any], stage: str, settings: Settings) -> float:
    """Seconds an arm may take: its steps at the main stage's pace (ten times it in float32), plus compiling."""
    main = report["stages"].get(stage, {})
    pace = main.get("seconds_run", 0.0) / max(main.get("steps_run", 1), 1)
    if settings.dtype == torch.float32 and run.device.type == "cuda":
        pace *= 10
    steps = run.args.warmup_steps + run.args.variant_steps
    compiles = settings.compile if stage != "sampling" else settings.sampling_mode is not None
    return pace * steps + (COMPILE_ESTIMATE if compiles and run.device.type == "cuda" else 0.0)


def measure_variant(run: Run, stages: Stages, name: str, base: Settings, report: dict[str, Any]) -> dict[str, Any]:
    if name == "cuda_graphs" and run.device.type != "cuda":
        return {"what": VARIANTS[name], "skipped": "needs CUDA"}
    if name == "draws":
        return measure_draws(run, stages, base, report)
    arms = variant_arms(name, base, run.args.draws)
    result: dict[str, Any] = {"what": VARIANTS[name], "stages": {}}
    for stage in VARIANT_STAGES[name]:
        if "error" in report["stages"].get(stage, {}):
            result["stages"][stage] = {"skipped": f"the main stage failed: {report['stages'][stage]['error']}"}
            continue
        needed = sum(arm_estimate(run, report, stage, s) for s in arms.values())
        if needed > run.seconds_left():
            result["stages"][stage] = {
                "skipped": f"time budget: about {needed:.0f} s needed, {run.seconds_left():.0f} s left"
            }
            continue
        measured = {arm: measure_arm(run, stages, stage, s) for arm, s in arms.items()}
        off, on = measured["off"]["seconds_per_step"], measured["on"]["seconds_per_step"]
        result["stages"][stage] = {**measured, "speedup": off / on if on > 0 else None}
    stages.apply(base)
    return result


def measure_draws(run: Run, stages: Stages, base: Settings, report: dict[str, Any]) -> dict[str, Any]:
    """Step 2 LoRA with the same number of draws taken one, or K, a step; seconds and probe loss."""
    main = report["stages"]["step2_lora"]
    if "error" in main:
        return {"what": VARIANTS["draws"], "skipped": f"the main stage failed: {main['error']}"}
    total = main["steps_run"] * base.draws
    k = run.args.draws
    result: dict[str, Any] = {"what": VARIANTS["draws"], "draws": total, "k": k, "arms": {}}
    for arm, settings in variant_arms("draws", base, k).items():
        steps = max(1, total // settings.draws)
        if arm == "off" and base.draws == 1:  # the main stage ran exactly this
            seconds, loss = main["seconds_run"], main["probe_loss"]["after"]
        else:
            needed = main["seconds_run"] + main["warmup_seconds"]
            if needed > run.seconds_left():
                result["arms"][arm] = {"skipped": f"time budget: about {needed:.0f} s needed"}
                continue
            stages.apply(settings)
            stages.step2("lora", settings, run.args.warmup_steps)  # new shapes: kernels, autotuning
            state, seconds = timed(partial(stages.step2, "lora", settings, steps), run.device)
            loss = stages.fitted_probe_loss("lora", state)
        result["arms"][arm] = {
            "draws_per_step": settings.draws,
            "steps": steps,
            "lr": DEFAULT_TUNE_LR["lora"] * settings.lr_scale,
            "seconds": seconds,
            "probe_loss": loss,
        }
    stages.apply(base)
    return result


# -- 6. the whole run -------------------------------------------------------------------------


def summary(report: dict[str, Any]) -> dict[str, Any]:
    s = report["stages"]

    def seconds(*names: str) -> float | None:
        values = [s.get(n, {}).get("seconds") for n in names]
        return None if any(v is None for v in values) else sum(values)

    out = {
        "fit_lora_seconds": seconds("step1", "step2_lora"),
        "fit_full_seconds": seconds("step1", "step2_full"),
        "edit_seconds": seconds("sampling", "decode"),
        "sampling_seconds": seconds("sampling"),
        "step2_lora_mfu": s.get("step2_lora", {}).get("mfu"),
        "step2_full_mfu": s.get("step2_full", {}).get("mfu"),
        "full_fits_in_memory": "error" not in s.get("step2_full", {}),
        "extrapolated": sorted(n for n, v in s.items() if v.get("extrapolated")),
        "paper": PAPER,
    }
    # issue 15's targets, for TANGO at full size on one H200 (null where they do not apply)
    applies = report["backbone"] == "tango" and report["size"] == "full" and report["device"]["type"] == "cuda"
    mfu = out["step2_lora_mfu"]
    out["targets"] = {
        "fit_lora_seconds<=30": _at_most(out["fit_lora_seconds"], TARGETS["fit_lora_seconds"]) if applies else None,
        "sampling_seconds<=4": _at_most(out["sampling_seconds"], TARGETS["sampling_seconds"]) if applies else None,
        "step2_mfu>=0.35": mfu >= TARGETS["step2_mfu"] if applies and mfu is not None else None,
        "full_fits_in_memory": out["full_fits_in_memory"] if applies else None,
    }
    return out


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def measure(args: argparse.Namespace, save: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """The whole measurement; ``save`` gets the report after the main stages and after each variant
    (``complete`` false until the end), so that a run cut short by a time limit leaves its numbers."""
    device = resolve_device(args.device)
    info = describe_device(device)
    run = Run(args, device, info)
    base = Settings(
        dtype=parse_dtype(args.dtype),
        attention=args.attention,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        fused_adam=args.fused_adam,
        draws=args.draws_per_step,
    )
    report: dict[str, Any] = {
        "backbone": args.backbone,
        "size": args.size,
        "device": info,
        "settings": base.to_dict(),
        "clip_seconds": args.seconds,
        "prompt": PROMPT,
        "etas": list(ETAS),
        "guidance": GUIDANCE,
        "stages": {},
        "variants": {},
        "complete": False,
    }

    # 1. Checkpoints (written once per work directory), then loading them as a user would
    path, report["write_seconds"] = timed(lambda: model_dir(args), device)
    reset_peak(device)
    backbone, seconds = timed(lambda: load_backbone(path, device=device, dtype=base.dtype), device)
    report["stages"]["load"] = {"seconds": seconds, "peak_memory_gib": peak_bytes(device) / 2**30}
    run.backbone = backbone
    report["model"] = {
        "path": str(path),
        "unet_parameters": sum(p.numel() for p in backbone.unet.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in cast(Any, backbone).text_encoder.parameters()),
    }

    # 2. The clip and the prompt, encoded once; the frozen parts then wait on the CPU, as in a fit
    wave, _ = backbone.normalize(beeps_clip(backbone.sample_rate, args.seconds))

    def encode() -> tuple[torch.Tensor, Condition]:
        return backbone.encode(wave.unsqueeze(0)).to(device), backbone.encode_text([PROMPT])

    (latents, e_tgt), seconds = timed(encode, device)
    report["stages"]["encode"] = {"seconds": seconds}
    report["latent_shape"] = list(latents.shape[1:])
    backbone.offload_frozen("cpu")
    stages = Stages(backbone, latents, e_tgt, probe_size=8 if args.size == "full" else 2)

    # 3. The main stages at the chosen settings, then each variant off and on
    main_stages(run, stages, base, report)
    report["summary"] = summary(report)
    save(report)
    for name in args.variants:
        report["variants"][name] = measure_variant(run, stages, name, base, report)
        save(report)
    report["total_seconds"] = time.perf_counter() - run.started
    report["complete"] = True
    save(report)
    return report


# -- 7. the command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=("tango", "audioldm"), default="tango")
    p.add_argument("--size", choices=("tiny", "full"), default="full" if cuda else "tiny")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default=None, help="the UNet's dtype (default: bf16 on CUDA, fp32 elsewhere)")
    p.add_argument("--seconds", type=float, default=None, help="length of the clip (full: 10, tiny: 0.5)")
    p.add_argument("--embed-steps", type=int, default=None, help="step 1 steps to run (full: 500)")
    p.add_argument("--tune-steps", type=int, default=None, help="step 2 steps to run, LoRA and full (full: 1500)")
    p.add_argument("--full-steps", type=int, default=None, help="step 2 full steps to run (default: --tune-steps)")
    p.add_argument("--sample-steps", type=int, default=None, help="sampling steps to run (full: 200)")
    p.add_argument("--variant-steps", type=int, default=None, help="steps each variant arm is timed on")
    p.add_argument("--warmup-steps", type=int, default=None, help="steps of the untimed first calls")
    p.add_argument("--attention", choices=("sdpa", "classic"), default="sdpa")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet in steps 1-2 and sampling")
    p.add_argument(
        "--cuda-graphs", action="store_true", help="sampling through torch.compile(mode='reduce-overhead'): CUDA graphs"
    )
    p.add_argument("--fused-adam", action="store_true", help="PyTorch's fused Adam in steps 1 and 2")
    p.add_argument("--draws-per-step", type=int, default=1, help="(timestep, noise) draws a step")
    p.add_argument("--draws", type=int, default=None, help="draws a step in the 'draws' variant (full: 4, tiny: 2)")
    p.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, 'all' or 'none' (of {', '.join(VARIANTS)}; default: all on CUDA, "
        f"{', '.join(CPU_VARIANTS)} elsewhere)",
    )
    p.add_argument("--stage-seconds", type=float, default=None, help="cap on each main stage; past it, extrapolate")
    p.add_argument("--budget", type=float, default=None, help="seconds after which no variant starts")
    p.add_argument("--work-dir", default=None, help="where the checkpoints are written (default: nrt's cache)")
    p.add_argument("-o", "--output", default=None, help="the JSON file (default: benchmarks/results/gpu_edit/)")
    args = p.parse_args(argv)

    full = args.size == "full"
    steps = PAPER_STEPS if full else TINY_STEPS
    args.embed_steps = args.embed_steps or steps["step1"]
    args.full_steps = args.full_steps or args.tune_steps or steps["step2_full"]
    args.tune_steps = args.tune_steps or steps["step2_lora"]
    args.sample_steps = args.sample_steps or steps["sampling"]
    args.variant_steps = args.variant_steps or (20 if full else 2)
    args.warmup_steps = args.warmup_steps or (2 if full else 1)
    args.seconds = args.seconds or (10.0 if full else 0.5)
    args.draws = args.draws or (4 if full else 2)
    args.dtype = args.dtype or ("bf16" if cuda and args.device != "cpu" else "fp32")
    if args.variants in (None, "all"):
        args.variants = list(VARIANTS) if args.variants == "all" or cuda else list(CPU_VARIANTS)
    elif args.variants == "none":
        args.variants = []
    else:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    counts = (
        args.embed_steps,
        args.tune_steps,
        args.full_steps,
        args.sample_steps,
        args.variant_steps,
        args.warmup_steps,
    )
    if min(counts) < 1 or args.variant_steps < 2 or args.draws < 1 or args.draws_per_step < 1:
        p.error("step counts and draws must be >= 1, --variant-steps >= 2")
    if args.sample_steps > 1000:
        p.error(f"--sample-steps must be at most 1000, got {args.sample_steps}")
    if not 0.5 <= args.seconds <= 60:
        p.error(f"--seconds must lie in 0.5-60, got {args.seconds}")
    args.output = args.output or ROOT / "benchmarks" / "results" / "gpu_edit" / f"{args.backbone}-{args.size}.json"
    return args


def table(report: dict[str, Any]) -> Iterator[str]:
    d, model = report["device"], report["model"]
    yield (
        f"{report['backbone']} ({report['size']}), {d['name']}, {report['settings']['dtype']}, "
        f"clip {report['clip_seconds']:g} s -> latent {tuple(report['latent_shape'])}, "
        f"UNet {model['unet_parameters'] / 1e6:.1f} M parameters"
    )
    if d["type"] == "cuda":
        peak = f"{d['peak_bf16_tflops']:.0f} TFLOP/s ({d['peak_source']})" if d["peak_bf16_tflops"] else "unknown"
        yield f"bf16 peak {peak}; measured bf16 8192^3 matmul {d['measured_matmul_tflops']:.0f} TFLOP/s"
    memory = "GiB GPU" if d["type"] == "cuda" else "GiB RSS"
    yield f"{'stage':<12} {'steps':>7} {'seconds':>9} {'steps/s':>8} {'TFLOP/step':>11} {'TFLOP/s':>8} {'MFU':>6} {memory:>8}"
    for name, s in report["stages"].items():
        if "error" in s:
            yield f"{name:<12} {s['error']}"
            continue
        steps = f"{s['steps']}{'*' if s.get('extrapolated') else ''}" if "steps" in s else "-"
        rate = f"{s['steps_per_second']:8.2f}" if "steps_per_second" in s else f"{'-':>8}"
        flops = f"{s['flops_per_step'] / 1e12:11.4f}" if "flops_per_step" in s else f"{'-':>11}"
        achieved = f"{s['tflops_per_second']:8.2f}" if "tflops_per_second" in s else f"{'-':>8}"
        mfu = f"{s['mfu']:6.1%}" if s.get("mfu") is not None else f"{'-':>6}"
        peak = f"{s['peak_memory_gib']:8.2f}" if "peak_memory_gib" in s else f"{'-':>8}"
        yield f"{name:<12} {steps:>7} {s['seconds']:9.3f} {rate} {flops} {achieved} {mfu} {peak}"
    extrapolated = report["summary"]["extrapolated"]
    if extrapolated:
        runs = ", ".join(f"{n} from {report['stages'][n]['steps_run']}" for n in extrapolated)
        yield f"* extrapolated to the paper's step count ({runs} steps run)"
    for name, v in report["variants"].items():
        if "skipped" in v:
            yield f"variant {name}: skipped ({v['skipped']})"
        elif name == "draws":
            arms = "; ".join(
                f"{arm} {a['draws_per_step']}x{a['steps']}: {a['seconds']:.2f} s, probe {a['probe_loss']:.4f}"
                if "seconds" in a
                else f"{arm}: skipped ({a['skipped']})"
                for arm, a in v["arms"].items()
            )
            yield f"variant draws ({v['draws']} draws): {arms}"
        else:
            for stage, r in v["stages"].items():
                if "skipped" in r:
                    yield f"variant {name} on {stage}: skipped ({r['skipped']})"
                    continue
                off, on = r["off"], r["on"]
                yield (
                    f"variant {name} on {stage}: {off['seconds_per_step'] * 1e3:.1f} -> "
                    f"{on['seconds_per_step'] * 1e3:.1f} ms/step (x{r['speedup'] or 0:.2f}); warm-up "
                    f"{off['warmup_seconds']:.1f} -> {on['warmup_seconds']:.1f} s"
                )
    s = report["summary"]
    yield (
        f"LoRA fit (steps 1+2) {_seconds(s['fit_lora_seconds'])}, full {_seconds(s['fit_full_seconds'])}, "
        f"edit (sampling + decoding) {_seconds(s['edit_seconds'])}; the paper: {PAPER['lora_minutes']} min LoRA, "
        f"{PAPER['full_minutes']} min full per {PAPER['clip_seconds']}-s clip on an {PAPER['device']}"
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    report = measure(args, partial(write_json, args.output))
    for line in table(report):
        print(line)
    print(f"written: {args.output} ({report['total_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
