"""Train nrt-mini's text-to-audio model on generated scenes; resumable.

    python -m nrt.mini.train_t2a --run-dir runs/t2a --out nrt/mini/weights/t2a --minutes 60

Running the same command again continues from ``run-dir/checkpoint.pt``. ``--init DIR`` starts a
new run from a trained model (the shipped one: ``--init nrt/mini/weights/t2a``) instead of from
random weights; its codec statistics are kept. The model written
to ``--out`` (TANGO layout; the EMA weights, or the raw ones with ``--weights raw``) loads
with ``nrt ... --model DIR``. ``--smoke`` trains a few steps on a handful of scenes: what CI
runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler

from ..backbones.mel import MelFrontEnd, StftConfig
from ..backbones.patch import PatchAutoencoder
from ..backbones.tango import sd21_scheduler
from ..files import replace_dir
from ..loss import prediction_target
from .bank import SceneBank
from .model import PATCH, PREDICTION_TYPE, STFT_CONFIG, T2A_DIR, TextToAudio, tokenizer, write_model
from .scenes import CLIP_SECONDS
from .training import TrainConfig, train

logger = logging.getLogger(__name__)

SNR_GAMMA = 5.0  # min-SNR loss weighting, as TANGO trains
CAPTION_DROPOUT = 0.1  # the unconditional model that classifier-free guidance needs
STATS_SCENES = 2000


@dataclass
class Parts:
    model: TextToAudio
    codec: PatchAutoencoder
    front: MelFrontEnd
    scheduler: DDPMScheduler
    tokenizer: Any  # a transformers tokenizer
    frames: int  # mel frames per training clip, a multiple of the whole downsampling


def load_trained(directory: Path, model: TextToAudio, codec: PatchAutoencoder, tok: Any) -> None:
    """Load a model written by :func:`write_model` into ``model`` and ``codec`` (float32)."""
    from ..backbones.tango import _load_strict, load_weights, split_prefix
    from ..errors import ModelNotFoundError

    directory = Path(directory)
    if not (directory / "pytorch_model_main.bin").is_file():
        raise ModelNotFoundError(f"--init {directory} holds no trained nrt-mini (pytorch_model_main.bin is missing)")
    saved = (directory / "text_encoder" / "tokenizer.json").read_text(encoding="utf-8")
    if json.loads(saved)["model"]["vocab"] != json.loads(tok.backend_tokenizer.to_str())["model"]["vocab"]:
        raise ModelNotFoundError(f"--init {directory} has another vocabulary than this version of nrt-mini")
    main = load_weights(directory / "pytorch_model_main.bin")

    def floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in state.items()}

    _load_strict(model.unet, floats(split_prefix(main, "unet.")), "UNet")
    text = floats(split_prefix(main, "text_encoder."))
    # embed_tokens is tied to shared, as load_tango loads it
    _load_strict(model.text_encoder, text, "text encoder", allow_missing=["encoder.embed_tokens.weight"])
    model.text_encoder.tie_weights()
    _load_strict(codec, floats(load_weights(directory / "pytorch_model_vae.bin")), "patch autoencoder")


def build_parts(bank: SceneBank, device: torch.device, seed: int, init: Path | None = None) -> Parts:
    tok = tokenizer()
    model = TextToAudio.create(len(tok), seed)
    front = MelFrontEnd(StftConfig.from_dict(STFT_CONFIG)).to(device)
    codec = PatchAutoencoder(STFT_CONFIG["n_mel_channels"], PATCH)
    multiple = PATCH * 2 ** (len(model.unet.config.down_block_types) - 1)
    frames = (bank.waves.shape[1] // STFT_CONFIG["hop_length"] + 1) // multiple * multiple
    if init is not None:
        load_trained(init, model, codec, tok)
    model, codec = model.to(device), codec.to(device)
    # standardise with the statistics of the first scenes: deterministic, so a resumed run agrees
    with torch.no_grad():
        if init is None:
            waves = bank.waves[: min(len(bank), STATS_SCENES)].to(device).float() / 32767
            mel = torch.cat([front(w)[:, :frames] for w in waves.split(256)])
            codec.mean.copy_(mel.mean(dim=(0, 1)))
            codec.std.fill_(float((mel - codec.mean).std()))
    scheduler = DDPMScheduler.from_config(sd21_scheduler(PREDICTION_TYPE))
    return Parts(model, codec, front, scheduler, tok, frames)


def make_batch(parts: Parts, bank: SceneBank, batch_size: int, seed: int, device: torch.device):
    alphas = parts.scheduler.alphas_cumprod.to(device)

    def batch(step: int) -> dict:
        data = bank.batch(step, batch_size, seed, caption_dropout=CAPTION_DROPOUT)
        tokens = parts.tokenizer(data.captions, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            mel = parts.front(data.waves.to(device))[:, : parts.frames]
            latents = parts.codec.encode_mel(mel.unsqueeze(1))
        generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 1]).integers(2**62)))
        timesteps = torch.randint(0, parts.scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = timesteps.to(device)
        snr = alphas[timesteps] / (1 - alphas[timesteps])
        return {
            "noisy": parts.scheduler.add_noise(latents, noise, timesteps),
            "target": prediction_target(parts.scheduler, latents, noise, timesteps),
            "timesteps": timesteps,
            "input_ids": tokens["input_ids"].to(device),
            "attention_mask": tokens["attention_mask"].to(device),
            # min-SNR-gamma weighting, in its v-prediction form
            "weight": torch.clamp(snr, max=SNR_GAMMA) / (snr + 1),
        }

    return batch


def loss_fn(model: TextToAudio, data: dict) -> torch.Tensor:
    prediction = model(data["noisy"], data["timesteps"], data["input_ids"], data["attention_mask"])
    error = ((prediction.float() - data["target"]) ** 2).mean(dim=(1, 2, 3))
    return (error * data["weight"]).mean()


def write_atomically(out: Path, parts: Parts, model: TextToAudio, extra: dict) -> Path:
    """Write the model to ``out``, swapped in whole: a reader sees the old model or the new one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return replace_dir(
        out, lambda staging: write_model(staging, model.cpu(), parts.codec.cpu(), parts.tokenizer, extra)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nrt.mini.train_t2a", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/t2a"), help="checkpoints; continued if present")
    parser.add_argument("--out", type=Path, default=T2A_DIR, help="where the trained model is written")
    parser.add_argument("--steps", type=int, default=None, help="total optimiser steps (default 20000; 6 with --smoke)")
    parser.add_argument("--minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    parser.add_argument("--bank", type=int, default=40_000, help="train scenes rendered into memory")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=int, default=None, help="processes that render scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init", type=Path, default=None, help="start a new run from this trained model (e.g. nrt/mini/weights/t2a)"
    )
    parser.add_argument(
        "--weights",
        choices=("ema", "raw"),
        default="ema",
        help="which weights --out receives: the moving average or the last step's",
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few scenes (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.smoke:
        args.bank, args.batch_size = 32, 4
    if args.steps is None:
        args.steps = 6 if args.smoke else 20_000

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    began = time.monotonic()
    bank = SceneBank(args.bank, CLIP_SECONDS, workers=args.workers)
    if device.type == "cuda":
        bank.waves = bank.waves.to(device)
    parts = build_parts(bank, device, args.seed, args.init)
    config = TrainConfig(
        steps=args.steps,
        lr=args.lr,
        warmup=min(500, args.steps // 10),
        seed=args.seed,
        max_minutes=args.minutes,
        checkpoint_every=10 if args.smoke else 500,
    )
    result = train(
        parts.model,
        loss_fn,
        make_batch(parts, bank, args.batch_size, args.seed, device),
        config,
        args.run_dir,
        desc="text-to-audio",
        autocast=torch.bfloat16 if device.type == "cuda" else None,
    )
    extra = {"trained_steps": result.step, "batch_size": args.batch_size, "bank": args.bank, "weights": args.weights}
    if args.init is not None:
        extra["init"] = str(args.init)
    out = write_atomically(args.out, parts, result.ema if args.weights == "ema" else result.model, extra)
    recent = result.losses[-100:]
    print(
        f"step {result.step}/{args.steps} ({'finished' if result.finished else 'paused'}), "
        f"loss {np.mean(recent):.4f} over the last {len(recent)} steps, "
        f"{(time.monotonic() - began) / 60:.1f} min; model written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
