"""Measure how far step 2 moves the probe loss for each learning rate, LoRA and full.

    python benchmarks/tune_lr.py [--model tiny] [--steps 150] [--clip examples/beeps.wav]

Prints, per (method, rate), the probe loss after step 1 and after step 2 and their ratio:
the rate that reaches a clear reduction in the given steps without diverging is the one
to use. The probe is a fixed, seeded set of (timestep, noise) pairs, so rows compare.
"""

from __future__ import annotations

import argparse
import time

from nrt.audio import load_audio
from nrt.backbones import load_backbone
from nrt.edit import prepare_input
from nrt.fit import fit
from nrt.settings import FitConfig

GRID = {"lora": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3], "full": [1e-6, 1e-5, 1e-4]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip", default="examples/beeps.wav")
    parser.add_argument("--prompt", default="beeps with a dog barking")
    parser.add_argument("--embed-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=150, help="step 2 steps per run")
    args = parser.parse_args()

    backbone = load_backbone(args.model, device=args.device)
    wave = prepare_input(backbone, load_audio(args.clip)).wave
    print(f"model {args.model}, {args.embed_steps} embedding steps, {args.steps} UNet steps per row")
    print(f"{'method':<6} {'rate':>8} {'after step 1':>13} {'after step 2':>13} {'ratio':>7} {'s':>6}")
    for method, rates in GRID.items():
        for rate in rates:
            started = time.perf_counter()
            config = FitConfig(method=method, embed_steps=args.embed_steps, tune_steps=args.steps, tune_lr=rate)
            losses = fit(backbone, wave, args.prompt, config, progress=False).losses
            ratio = losses["probe_fitted"] / losses["probe_e_opt"]
            print(f"{method:<6} {rate:8.0e} {losses['probe_e_opt']:13.4f} {losses['probe_fitted']:13.4f} "
                  f"{ratio:7.3f} {time.perf_counter() - started:6.1f}")


if __name__ == "__main__":
    main()
