"""Per-clip search of the edit settings, on one machine or a Ray cluster.

For every clip of a manifest: fit once per fit setting (a task with a whole GPU), then search
η with t_start, step 3's start, diffusion steps and guidance with Optuna under Ray Tune (trials
on fractional GPUs), each trial scored by the CLAP sum; the best lands in the registry of the
storage root.

    python tune/sweep.py                              # the example clips, nrt-mini, local Ray
    python tune/sweep.py --manifest clips.csv --model declare-lab/tango --clap laion/clap-htsat-unfused \\
        --storage s3://bucket/nrt --optuna-storage postgresql://… --trials 32 --device cuda
    python tune/sweep.py … --resume                   # after an interruption

Exit codes: 0 every clip done, 2 bad input (one line on stderr), 1 anything else, including
a sweep in which some clip failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nrt.commandline import NOISY_LOGGERS, HelpFormatter, Parser, run_command
from nrt.defaults import DEFAULT_CLAP, model_defaults
from nrt.settings import STARTS, FitConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "manifest.csv"


def build_parser() -> argparse.ArgumentParser:
    d = FitConfig()
    p = Parser(prog="tune/sweep.py", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    g = p.add_argument_group("clips and results")
    g.add_argument("--manifest", default=str(EXAMPLES), help="CSV: id, edit_type, audio, target_prompt[, mask]")
    g.add_argument(
        "--storage",
        default=os.environ.get("NRT_STORAGE", "sweep-results"),
        help="storage root: local directory, s3://bucket/prefix or gs://bucket/prefix ($NRT_STORAGE)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue: skip clips in the registry, reuse bundles, restore unfinished experiments",
    )
    g.add_argument(
        "--optuna-storage",
        default=os.environ.get("NRT_OPTUNA_STORAGE"),
        help="SQLAlchemy URL of Optuna's studies (default: SQLite in a local storage root)",
    )

    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=None, help="trials per clip and fit setting (default by model)")
    g.add_argument(
        "--eta", nargs="+", default=None, metavar="V", help="η: one value, a range LOW:HIGH, or several values"
    )
    g.add_argument("--steps", nargs="+", default=None, metavar="V", help="diffusion steps T: value, LOW:HIGH or values")
    g.add_argument("--guidance", nargs="+", default=None, metavar="V", help="guidance scale: value, LOW:HIGH or values")
    g.add_argument("--scheduler", nargs="+", default=["ddpm"], choices=["ddpm", "ddim"], help="sampler(s)")
    g.add_argument(
        "--start",
        nargs="+",
        default=None,
        choices=list(STARTS),
        help="where step 3 starts: noise, input, inversion, or several to choose from (default: all three)",
    )
    g.add_argument(
        "--t-start",
        nargs="+",
        default=None,
        metavar="V",
        help="fraction of the schedule run from the input, in (0, 1], searched with η: value, LOW:HIGH or "
        "values (default by model; the noise start ignores it)",
    )
    g.add_argument(
        "--keep-db",
        nargs="+",
        default=None,
        metavar="V",
        help="merge each edit with the recording where it changed less than about V dB (nrt/keep.py); 0: off. "
        "Fixed by default (by model): the CLAP sum rewards copying, so searching it learns to keep everything",
    )
    g.add_argument("--seed", type=int, default=0, help="sampling seed of every trial, and the searcher's")
    g.add_argument(
        "--clap",
        default=None,
        help=f"CLAP model of the scores (default: mini for --model mini, tiny for the toy models, else {DEFAULT_CLAP})",
    )
    g.add_argument("--smoke-test", action="store_true", help="a few steps and two trials per clip: seconds, for CI")

    g = p.add_argument_group("fit (steps 1 and 2); several values make a grid, each point fitted once")
    g.add_argument(
        "--method", nargs="+", choices=["full", "lora"], default=[d.method], help="full fine-tune and/or LoRA"
    )
    g.add_argument("--embed-steps", type=int, nargs="+", default=None, help="step 1 steps (default by model)")
    g.add_argument("--embed-lr", type=float, nargs="+", default=[None], help="step 1 learning rate (default by model)")
    g.add_argument("--tune-steps", type=int, nargs="+", default=None, help="step 2 steps (default by model)")
    g.add_argument(
        "--tune-lr",
        type=float,
        nargs="+",
        default=[None],
        help="step 2 learning rate (default by model and method: see `nrt edit --help`)",
    )
    g.add_argument("--lora-rank", type=int, nargs="+", default=[d.lora_rank], help="LoRA rank")
    g.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    g.add_argument("--lora-targets", nargs="+", default=list(d.lora_targets), help="UNet modules LoRA adapts")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(timestep, noise) draws per step")
    g.add_argument("--gradient-checkpointing", action="store_true", help="save memory in step 2")
    g.add_argument("--fit-seed", type=int, default=d.seed, help="seed of the fit's random draws")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="mini", help="hub id, local directory, or built-in name (see `nrt models`)")
    g.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: GPUs where the cluster has them; cuda: ask for GPUs (an autoscaler then adds them)",
    )
    g.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="backbone precision")

    g = p.add_argument_group("Ray")
    g.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    g.add_argument("--num-gpus", type=int, default=None, help="GPUs of the local Ray (default: all)")
    g.add_argument("--concurrent-trials", type=int, default=2, help="trials of one clip and setting at once")
    g.add_argument("--max-clips", type=int, default=None, help="clips in flight (default: 2 per GPU, else 1 per CPU)")
    g.add_argument("--trial-gpus", type=float, default=0.25, help="GPU fraction of a trial")
    g.add_argument("--trial-cpus", type=float, default=1.0, help="CPUs of a trial")
    g.add_argument("--fit-cpus", type=float, default=1.0, help="CPUs of a fit (which also takes one whole GPU)")
    g.add_argument("--max-retries", type=int, default=2, help="retries of a fit or trial that raised")
    g.add_argument("--quiet", action="store_true", help="only the final table")
    g.add_argument("--verbose", action="store_true", help="also the workers' logs")
    return p


def sweep_config(args: argparse.Namespace):
    from nrt.sweep import PRESETS, SEARCHED, Resources, SweepConfig, preset_fits, preset_space

    defaults = model_defaults(args.model)
    preset = PRESETS["smoke" if args.smoke_test else defaults.preset]
    chosen = {name: getattr(args, name) for name in ("embed_steps", "tune_steps", "trials", *SEARCHED)}
    preset = {**preset, **{name: value for name, value in chosen.items() if value is not None}}
    base = FitConfig(
        lora_alpha=args.lora_alpha,
        lora_targets=tuple(args.lora_targets),
        batch_size=args.batch_size,
        seed=args.fit_seed,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    grid = {"method": args.method, "embed_lr": args.embed_lr, "tune_lr": args.tune_lr, "lora_rank": args.lora_rank}
    fits = preset_fits(preset, base, grid, args.model)
    space = preset_space(preset)
    resources = Resources(fit_cpus=args.fit_cpus, trial_cpus=args.trial_cpus, trial_gpus=args.trial_gpus)
    return SweepConfig(
        storage=args.storage,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        fits=tuple(fits),
        space=space,
        seed=args.seed,
        trials=preset["trials"],
        concurrent_trials=args.concurrent_trials,
        clap=args.clap or defaults.clap,
        optuna_storage=args.optuna_storage,
        max_retries=args.max_retries,
        max_clips=args.max_clips,
        resources=resources,
        resume=args.resume,
    )


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()

    def body() -> int:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        for noisy in ("ray", "ray.tune", "ray.train", "optuna", *NOISY_LOGGERS):
            logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.ERROR)
        from nrt.clap_notes import describe_clap
        from nrt.sweep import run_sweep
        from nrt.sweep.progress import render_table

        config = sweep_config(args)

        def say(line: str) -> None:
            if not args.quiet:
                print(f"[{time.time() - started:7.1f} s] {line}", flush=True)

        say(
            f"model {config.model}, {len(config.fits)} fit setting(s), {config.trials} trials each; search "
            + ", ".join(f"{n} {p.describe()}" for n, p in config.space.items())
        )
        result = run_sweep(
            args.manifest,
            config,
            address=args.address,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            on_progress=say,
            log_to_driver=args.verbose,
        )
        print()
        print(render_table(result.rows))
        print(f"\n{describe_clap(config.clap)}")
        print(
            f"{len(result.rows)} clip(s) in {result.seconds:.1f} s; fits computed {result.fits.get('computed', 0)}, "
            f"reused {result.fits.get('reused', 0)}. Table: {result.storage}/results.csv; "
            f"registry: {result.storage}/registry/"
        )
        if result.failed:
            print(f"tune/sweep.py: {len(result.failed)} clip(s) failed:", file=sys.stderr)
            for row in result.rows:
                if row["status"] == "failed":
                    print(f"  {row['clip_id']}: {row.get('error', 'no error recorded')}", file=sys.stderr)
            print(f"See {result.storage}/status/ and fits/; run again with --resume to retry them.", file=sys.stderr)
            return 1
        return 0

    return run_command("tune/sweep.py", body, "interrupted; run again with --resume to continue")


if __name__ == "__main__":
    sys.exit(main())
