"""The ``nrt`` command line: fit, generate, edit, sdedit, invert, score, eval, models, bench.

Exit codes: 0 done, 2 bad input or usage (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__
from .commandline import HelpFormatter, Parser, run_command, setup_logging
from .errors import InputError
from .inputs import EDIT_TYPES, MAX_PROMPT, MAX_SECONDS

logger = logging.getLogger("nrt")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.formatter_class = HelpFormatter
    return parser


# -- shared option groups ---------------------------------------------------------------------
def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="mini", help="hub id, local directory, or built-in name (see `nrt models`)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    g.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="UNet precision")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="audio file (wav, flac, ogg, mp3; any rate and channel count)")
    p.add_argument("prompt", help="target prompt describing the edited audio")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="longest input accepted, in seconds")
    p.add_argument(
        "--edit-type",
        choices=list(EDIT_TYPES),
        default=None,
        help="edit type (default: inpainting when --mask is given, else addition)",
    )
    p.add_argument(
        "--mask",
        action="append",
        default=None,
        metavar="START-END",
        help="inpainting range in seconds, repeatable; inpainting without --mask fills "
        "the input's digital-silence gaps of 0.25 s or more",
    )


def _add_fit(p: argparse.ArgumentParser, one_method: bool = True) -> None:
    """The fit flags; ``one_method=False`` (eval fits both methods) gives each method its rate.

    Flags left out take the model's defaults (:func:`nrt.defaults.model_defaults`).
    """
    from .defaults import MINI_FIT, MINI_TUNE_LR, TOY_FIT
    from .settings import DEFAULT_TUNE_LR, FitConfig

    d = FitConfig()

    def by_model(name: str) -> str:
        toy = f", {TOY_FIT[name]:g} for the toy models" if name in TOY_FIT else ""
        return f"(default: {MINI_FIT[name]:g} for mini{toy}, {getattr(d, name):g} otherwise)"

    def lr_help(method: str) -> str:
        return f"{MINI_TUNE_LR[method]:g} for mini, {DEFAULT_TUNE_LR[method]:g} otherwise"

    g = p.add_argument_group("fit (steps 1 and 2)")
    if one_method:
        g.add_argument("--method", choices=["full", "lora"], default=d.method, help="step 2: full fine-tune or LoRA")
    g.add_argument("--embed-steps", type=int, default=None, help=f"step 1 steps {by_model('embed_steps')}")
    g.add_argument("--embed-lr", type=float, default=None, help=f"step 1 learning rate {by_model('embed_lr')}")
    g.add_argument("--tune-steps", type=int, default=None, help=f"step 2 steps {by_model('tune_steps')}")
    if one_method:
        g.add_argument(
            "--tune-lr",
            type=float,
            default=None,
            help=f"step 2 learning rate (default: full {lr_help('full')}; LoRA {lr_help('lora')})",
        )
    else:
        for method in ("full", "lora"):
            g.add_argument(
                f"--{method}-tune-lr",
                type=float,
                default=None,
                help=f"step 2 learning rate of {method} (default: {lr_help(method)})",
            )
    g.add_argument("--lora-rank", type=int, default=d.lora_rank, help="LoRA rank")
    g.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    g.add_argument("--lora-targets", nargs="+", default=list(d.lora_targets), help="UNet modules LoRA adapts")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(timestep, noise) draws per step")
    g.add_argument("--gradient-checkpointing", action="store_true", help="save memory in step 2")
    g.add_argument("--fit-seed", type=int, default=d.seed, help="seed of the fit's random draws")


def _add_sample(p: argparse.ArgumentParser, eta: bool = True) -> None:
    from .defaults import DEFAULT_ETA, MINI_ETA, MINI_SAMPLE
    from .settings import STARTS, SampleConfig

    d = SampleConfig()
    g = p.add_argument_group("sampling")
    if eta:
        mini = ", ".join(
            f"{method} {'/'.join(f'{v:g}' for v in by_type.values())}" for method, by_type in MINI_ETA.items()
        )
        g.add_argument(
            "--eta",
            type=float,
            nargs="+",
            default=None,
            help="η values in [0, 1], one output each (default: the model's for the fit method and edit type; "
            f"mini: {mini} for addition/style transfer/inpainting; {DEFAULT_ETA:g} otherwise)",
        )
        g.add_argument(
            "--start",
            choices=list(STARTS),
            default=None,
            help="where step 3 starts: pure noise (the paper's), the input noised to --t-start, or the "
            "input's DDPM inversion by the fitted UNet, regenerated from --t-start "
            f"(default: {MINI_SAMPLE['start']} for mini, {d.start} otherwise)",
        )
        g.add_argument(
            "--t-start",
            type=float,
            default=None,
            help="fraction of the schedule run from the input, in (0, 1] (starts input and inversion) "
            f"(default: {MINI_SAMPLE['t_start']:g} for mini, {d.t_start:g} otherwise)",
        )
    g.add_argument(
        "--keep-db",
        type=float,
        default=None,
        metavar="DB",
        help="keep the input wherever the edit's spectrum is within about DB dB of what the codec "
        "makes of the unchanged input (nrt/keep.py); unchanged parts then come back as recorded, "
        f"not through the codec; 0: off (default: {MINI_SAMPLE.get('keep_db', 0):g} for mini, 0 otherwise)",
    )
    g.add_argument("--steps", type=int, default=d.steps, help="diffusion steps T")
    g.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance scale")
    g.add_argument("--scheduler", choices=["ddpm", "ddim"], default=d.scheduler, help="sampler")
    g.add_argument("--seed", type=int, default=0, help="seed of every output")
    g.add_argument("--format", choices=["wav", "flac"], default="wav", help="output container")


def build_parser() -> argparse.ArgumentParser:
    parser = _defaults(Parser(prog="nrt", description="Edit recorded audio with free-form text prompts."))
    parser.add_argument("--version", action="version", version=f"nrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = _defaults(sub.add_parser("fit", help="steps 1-2: fit a clip and write a bundle"))
    _add_input(p)
    _add_fit(p)
    _add_model(p)
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle")

    p = _defaults(sub.add_parser("generate", help="step 3: edits from a bundle at one or more η"))
    p.add_argument("bundle", help="bundle directory written by `nrt fit`")
    _add_sample(p)
    _add_model(p)
    p.add_argument("-o", "--output", required=True, help="directory for eta-<η>.<format> files")

    p = _defaults(sub.add_parser("edit", help="fit, then generate (steps 1-3)"))
    _add_input(p)
    _add_fit(p)
    _add_sample(p)
    _add_model(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (one η) or directory (several η); the bundle is kept beside it",
    )
    p.add_argument("--bundle", default=None, help="where to keep the bundle (default: beside the output)")

    p = _defaults(sub.add_parser("sdedit", help="the SDEdit baseline: noise to a strength, denoise to the prompt"))
    _add_input(p)
    p.add_argument("--strength", type=float, nargs="+", default=[0.5], help="strengths in (0, 1]")
    _add_sample(p, eta=False)
    _add_model(p)
    p.add_argument("-o", "--output", required=True, help="output file (one strength) or directory")

    p = _defaults(
        sub.add_parser("invert", help="the DDPM-inversion baseline: invert the input, regenerate to the prompt")
    )
    _add_input(p)
    p.add_argument(
        "--t-start", type=float, nargs="+", default=[0.5], help="fractions of the schedule regenerated, in (0, 1]"
    )
    p.add_argument("--source-prompt", default="", help="the prompt the input is inverted under (default: empty)")
    p.add_argument(
        "--source-guidance", type=float, default=None, help="guidance of the inversion (default: --guidance)"
    )
    _add_sample(p, eta=False)
    _add_model(p)
    p.add_argument("-o", "--output", required=True, help="output file (one t_start) or directory")

    p = _defaults(sub.add_parser("models", help="list the models nrt knows and which are on this machine"))

    p = _defaults(sub.add_parser("bench", help="seconds per step of each stage, and peak memory"))
    _add_model(p)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--iters", type=int, default=5, help="timed steps per stage (after one warm-up)")
    p.add_argument(
        "--unet",
        choices=["model", "tango"],
        default="model",
        help="'tango': swap in a TANGO-size UNet with random weights",
    )
    p.add_argument("--gradient-checkpointing", action="store_true", help="in the step 2 stages")
    p.add_argument(
        "--edit-seconds",
        type=float,
        default=5.0,
        help="also time one whole `nrt edit` (the model's default fit, one output) of a generated "
        "clip this long; 0 skips it",
    )

    p = _defaults(sub.add_parser("score", help="CLAP text, audio and sum, and onset F1, of one edit"))
    _add_score(p)

    p = _defaults(sub.add_parser("eval", help="the paper's protocol on a manifest: Table 1, Figures 2 and 4"))
    _add_eval(p)
    return parser


def _add_score(p: argparse.ArgumentParser) -> None:
    from .clap import DEFAULT_MODEL, MINI_MODEL
    from .scoring import DEFAULT_ONSET_TOLERANCE

    p.add_argument("input", help="the input as given (the reference of Audio CLAP and of the onsets)")
    p.add_argument("edit", help="the edited audio")
    p.add_argument("prompt", help="target prompt (the text of Text CLAP)")
    p.add_argument(
        "--clap",
        default=MINI_MODEL,
        help=f"CLAP: hub id or directory of a ClapModel (e.g. {DEFAULT_MODEL}), a laion-clap .pt file, "
        "msclap-2023 / msclap-2022 / a Microsoft CLAP .pth (the paper's), "
        "'mini' (nrt-mini's, for its generated scenes) or 'tiny' (tests only)",
    )
    p.add_argument(
        "--band-limit",
        type=int,
        default=None,
        metavar="RATE",
        help="pass both through this sample rate first (e.g. 16000: the backbone's band; None: full band)",
    )
    p.add_argument("--onset-tolerance", type=float, default=DEFAULT_ONSET_TOLERANCE, help="onset match window (s)")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="longest audio accepted, in seconds")
    p.add_argument(
        "--reference",
        default=None,
        metavar="REF",
        help="the audio the edit should produce: also measure the edit against it (log-mel L1, CLAP, "
        "onset F1 and the reference gain, at --model's rate and through its codec)",
    )
    p.add_argument(
        "--model",
        default="mini",
        help="with --reference: the backbone whose rate, band and codec the reference metrics use "
        "(hub id, local directory, or built-in name; see `nrt models`)",
    )
    p.add_argument("--device", default="auto", help="device of CLAP and the backbone: cpu, cuda, cuda:N, or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no log lines")


def _add_eval(p: argparse.ArgumentParser) -> None:
    from .clap import DEFAULT_MODEL
    from .defaults import MINI_SAMPLE
    from .evaluate import DEFAULT_ETAS, DEFAULT_METHODS, DEFAULT_STRENGTHS, DEFAULT_T_STARTS, METHODS
    from .scoring import DEFAULT_ONSET_TOLERANCE
    from .settings import SampleConfig

    p.add_argument(
        "manifest", help="CSV: id,edit_type,audio,target_prompt[,mask][,reference]; paths relative to the CSV"
    )
    p.add_argument("-o", "--output", required=True, help="directory of the run; a re-run skips what is there")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        help="pipelines to evaluate: full and lora start step 3 from noise, full-input/lora-input from the "
        "input noised to --t-start, full-inversion/lora-inversion from its DDPM inversion; sdedit and "
        "ddpm-inversion are the baselines",
    )
    p.add_argument("--etas", type=float, nargs="+", default=list(DEFAULT_ETAS), help="η grid of full and lora")
    p.add_argument("--strengths", type=float, nargs="+", default=list(DEFAULT_STRENGTHS), help="SDEdit strength grid")
    p.add_argument(
        "--t-starts",
        type=float,
        nargs="+",
        default=list(DEFAULT_T_STARTS),
        help="t_start grid of the ddpm-inversion baseline",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds; every output once per seed")
    p.add_argument(
        "--clap",
        default=None,
        help=f"CLAP: hub id or directory of a ClapModel, a laion-clap .pt file, msclap-2023 / msclap-2022 / a "
        f"Microsoft CLAP .pth (the paper's), 'mini' or 'tiny' "
        f"(default: mini for --model mini, tiny for the toy models, else {DEFAULT_MODEL})",
    )
    p.add_argument("--onset-tolerance", type=float, default=DEFAULT_ONSET_TOLERANCE, help="onset match window (s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N clips only")
    p.add_argument(
        "--fixed-eta-holdout",
        default=None,
        metavar="RESULTS",
        help="choose the fixed η/strength per edit type on this earlier run's results.json (or its "
        "directory) instead of leave-one-out over this manifest's clips",
    )
    p.add_argument(
        "--figure-clip",
        default=None,
        metavar="ID",
        help="clip of spectrograms.png (None: the first style transfer clip, else the first clip)",
    )
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="longest clip accepted, in seconds")
    _add_fit(p, one_method=False)
    s = SampleConfig()
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, default=s.steps, help="diffusion steps T")
    g.add_argument("--guidance", type=float, default=s.guidance, help="classifier-free guidance scale")
    g.add_argument("--scheduler", choices=["ddpm", "ddim"], default=s.scheduler, help="sampler")
    g.add_argument(
        "--t-start",
        type=float,
        default=None,
        help="fraction of the schedule run from the input by the *-input and *-inversion methods "
        f"(default: {MINI_SAMPLE['t_start']:g} for mini, {s.t_start:g} otherwise)",
    )
    _add_model(p)


# -- commands ---------------------------------------------------------------------------------
def _load_backbone(args: argparse.Namespace):
    from .backbones import load_backbone

    return load_backbone(args.model, device=args.device, dtype=args.dtype)


def _fit_config(args: argparse.Namespace):
    from .defaults import fit_config

    return fit_config(
        args.model,
        method=args.method,
        embed_steps=args.embed_steps,
        embed_lr=args.embed_lr,
        tune_steps=args.tune_steps,
        tune_lr=args.tune_lr,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=tuple(args.lora_targets),
        batch_size=args.batch_size,
        seed=args.fit_seed,
        gradient_checkpointing=args.gradient_checkpointing,
    )


def _sample_config(args: argparse.Namespace):
    from .defaults import sample_config
    from .settings import check_seed

    check_seed(args.seed)
    starts = {"start": args.start, "t_start": args.t_start} if hasattr(args, "start") else {}
    return sample_config(
        args.model,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        keep_db=args.keep_db,
        **starts,
    )


def _etas(args: argparse.Namespace, method: str, edit_type: str) -> list[float]:
    """``--eta`` as given and checked, else the model's one η for this fit method and edit type."""
    from .defaults import model_defaults
    from .settings import check_etas

    if args.eta is not None:
        return check_etas(args.eta)
    return [model_defaults(args.model).eta_for(method, edit_type)]


def _edit_type_and_mask(args: argparse.Namespace, clip) -> tuple[str, list[tuple[float, float]] | None]:
    from .masks import parse_mask, resolve_mask

    edit_type = args.edit_type or ("inpainting" if args.mask else "addition")
    if args.mask and edit_type != "inpainting":
        raise InputError(f"--mask applies to inpainting, but --edit-type is {edit_type}")
    ranges = [r for text in args.mask for r in parse_mask(text)] if args.mask else None
    try:
        mask = resolve_mask(
            edit_type, ranges, clip.samples, clip.sample_rate, hint="with --mask START-END", name=args.input
        )
    except InputError as exc:
        raise InputError(f"{args.input}: {exc}") from None
    return edit_type, mask


def _check_output(path: Path, many: bool, what: str) -> Path:
    """Fail before any work if the output cannot be written."""
    if many or path.suffix.lower() not in AUDIO_SUFFIXES:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file; several {what} need a directory")
        return path
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the directory {path.parent} does not exist")
    return path


def _write_outputs(output: Path, values: Sequence[float], outputs, rate: int, prefix: str, fmt: str) -> list[Path]:
    from .audio import write_audio

    if len(values) == 1 and output.suffix.lower() in AUDIO_SUFFIXES:
        return [write_audio(output, outputs[0], rate)]
    output.mkdir(parents=True, exist_ok=True)
    return [write_audio(output / f"{prefix}-{v:.2f}.{fmt}", audio, rate) for v, audio in zip(values, outputs)]


def _fit_and_save(args: argparse.Namespace, backbone, clip, bundle_path: Path, overwrite: bool) -> Path:
    from .fit_clip import fit_clip

    edit_type, mask = _edit_type_and_mask(args, clip)
    fit_clip(
        backbone,
        clip,
        args.prompt,
        _fit_config(args),
        bundle_path,
        edit_type=edit_type,
        mask=mask,
        overwrite=overwrite,
        progress=not args.quiet,
    )
    return bundle_path


def _check_prompt(prompt: str, allow_empty: bool = False) -> str:
    if not prompt.strip() and not allow_empty:
        raise InputError("the prompt is empty")
    if len(prompt) > MAX_PROMPT:
        raise InputError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT} are accepted")
    return prompt


def cmd_fit(args: argparse.Namespace) -> int:
    from .audio import load_audio

    _check_prompt(args.prompt)
    _fit_config(args)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise InputError(f"{output} exists already; pass --overwrite to replace it")
    clip = load_audio(args.input, max_seconds=args.max_seconds)
    backbone = _load_backbone(args)
    path = _fit_and_save(args, backbone, clip, output, args.overwrite)
    print(path)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .bundle import load_bundle, read_meta
    from .edit import generate

    meta = read_meta(args.bundle)
    etas = _etas(args, meta["method"]["name"], meta["edit_type"])
    config = _sample_config(args)
    output = _check_output(Path(args.output), True, "outputs")
    backbone = _load_backbone(args)
    bundle = load_bundle(args.bundle, backbone.info)
    outputs = generate(backbone, bundle, etas, config, args.seed, progress=not args.quiet)
    for path in _write_outputs(output, etas, outputs, bundle.input.sample_rate, "eta", args.format):
        print(path)
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from .audio import load_audio
    from .bundle import load_bundle
    from .edit import generate

    _check_prompt(args.prompt)
    etas = _etas(args, args.method, args.edit_type or ("inpainting" if args.mask else "addition"))
    config = _sample_config(args)
    _fit_config(args)
    output = _check_output(Path(args.output), len(etas) > 1, "η values")
    single_file = len(etas) == 1 and output.suffix.lower() in AUDIO_SUFFIXES
    bundle_path = (
        Path(args.bundle) if args.bundle else (output.with_suffix(".bundle") if single_file else output / "bundle")
    )
    clip = load_audio(args.input, max_seconds=args.max_seconds)
    backbone = _load_backbone(args)
    _fit_and_save(args, backbone, clip, bundle_path, overwrite=True)
    bundle = load_bundle(bundle_path, backbone.info)
    outputs = generate(backbone, bundle, etas, config, args.seed, progress=not args.quiet)
    for path in _write_outputs(output, etas, outputs, clip.sample_rate, "eta", args.format):
        print(path)
    logger.info("bundle kept in %s (nrt generate %s --eta ... -o DIR)", bundle_path, bundle_path)
    return 0


def cmd_sdedit(args: argparse.Namespace) -> int:
    from .audio import load_audio
    from .sdedit import check_strengths, sdedit

    _check_prompt(args.prompt)
    strengths = check_strengths(args.strength)
    config = _sample_config(args)
    output = _check_output(Path(args.output), len(strengths) > 1, "strengths")
    clip = load_audio(args.input, max_seconds=args.max_seconds)
    _, mask = _edit_type_and_mask(args, clip)
    backbone = _load_backbone(args)
    outputs = sdedit(backbone, clip, args.prompt, strengths, config, args.seed, mask=mask, progress=not args.quiet)
    for path in _write_outputs(output, strengths, outputs, clip.sample_rate, "strength", args.format):
        print(path)
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    from .audio import load_audio
    from .ddpm_inversion import check_t_starts, ddpm_inversion

    _check_prompt(args.prompt)
    _check_prompt(args.source_prompt, allow_empty=True)
    t_starts = check_t_starts(args.t_start)
    config = _sample_config(args)
    if args.source_guidance is not None:
        replace(config, guidance=args.source_guidance)  # checked: the same range as --guidance
    output = _check_output(Path(args.output), len(t_starts) > 1, "t_starts")
    clip = load_audio(args.input, max_seconds=args.max_seconds)
    _, mask = _edit_type_and_mask(args, clip)
    backbone = _load_backbone(args)
    outputs = ddpm_inversion(
        backbone,
        clip,
        args.prompt,
        t_starts,
        config,
        args.seed,
        source_prompt=args.source_prompt,
        source_guidance=args.source_guidance,
        mask=mask,
        progress=not args.quiet,
    )
    for path in _write_outputs(output, t_starts, outputs, clip.sample_rate, "t_start", args.format):
        print(path)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .backbones import BUILTIN, KNOWN_HUB

    try:
        from huggingface_hub import scan_cache_dir

        cached = {repo.repo_id for repo in scan_cache_dir().repos}
    except Exception:
        cached = set()
    print("built-in (no download):")
    for name, text in BUILTIN.items():
        print(f"  {name:<38} {text}")
    print("hub models (need their weights on this machine or hub access):")
    for name, text in KNOWN_HUB.items():
        mark = "cached" if name in cached else "      "
        print(f"  {name:<38} {mark}  {text}")
    print("any local directory in the TANGO or diffusers AudioLDM / AudioLDM 2 layout also works: --model DIR")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    for line in run_bench(args):
        print(line)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import json
    import math

    from .audio import load_audio
    from .backbones import resolve_device
    from .clap_notes import describe_clap
    from .scoring import ReferenceScorer, load_scorer

    _check_prompt(args.prompt)
    if args.band_limit is not None and args.band_limit <= 0:
        raise InputError(f"--band-limit must be a positive sample rate (Hz), got {args.band_limit}")
    if not args.onset_tolerance >= 0:
        raise InputError(f"--onset-tolerance must be >= 0 s, got {args.onset_tolerance}")
    reference = load_audio(args.input, max_seconds=args.max_seconds, min_seconds=0.0)
    edit = load_audio(args.edit, max_seconds=args.max_seconds, min_seconds=0.0)
    intended = None
    if args.reference is not None:
        try:
            intended = load_audio(args.reference, max_seconds=args.max_seconds, min_seconds=0.0)
        except InputError as exc:
            raise InputError(f"--reference: {exc}") from None
    scorer = load_scorer(
        args.clap, device=resolve_device(args.device), band_limit_rate=args.band_limit, progress=not args.quiet
    )
    scores = ReferenceScorer(
        scorer, reference.samples, reference.sample_rate, args.prompt, onset_tolerance=args.onset_tolerance
    ).score([edit.samples], edit.sample_rate)[0]
    yardstick, against = None, {}
    if intended is not None:
        from .backbones import load_backbone
        from .reference import ReferenceYardstick

        backbone = load_backbone(args.model, device=args.device)
        yardstick = ReferenceYardstick(backbone, scorer, reference, intended, onset_tolerance=args.onset_tolerance)
        against = yardstick.score([edit.samples], edit.sample_rate)[0]
    if args.json:
        # an undefined gain (NaN) is null, which JSON can hold
        extra: dict[str, object] = {k: None if math.isnan(v) else v for k, v in against.items()}
        if intended is not None:
            extra = {"reference": args.reference, "model": args.model, **extra}
        print(
            json.dumps(
                {
                    "input": args.input,
                    "edit": args.edit,
                    "prompt": args.prompt,
                    "clap": args.clap,
                    "band_limit_rate": args.band_limit,
                    "onset_tolerance": args.onset_tolerance,
                    **scores,
                    **extra,
                },
                allow_nan=False,
            )
        )
        return 0
    band = f"both through {args.band_limit} Hz (at most {args.band_limit // 2} Hz)" if args.band_limit else "full band"
    print(f"Text CLAP   {scores['text']:.4f}   cos(edit, prompt)")
    print(f"Audio CLAP  {scores['audio']:.4f}   cos(edit, input), {band}")
    print(f"Sum         {scores['sum']:.4f}")
    print(
        f"Onset F1    {scores['onset_f1']:.3f}    precision {scores['onset_precision']:.3f}, recall "
        f"{scores['onset_recall']:.3f} ({scores['onset_n_matched']} of {scores['onset_n_input']} input onsets "
        f"matched within {args.onset_tolerance * 1000:g} ms; {scores['onset_n_edit']} in the edit)"
    )
    if yardstick is not None:
        _print_reference(yardstick, against, args.reference, args.model)
    print(describe_clap(args.clap))
    return 0


def _print_reference(yardstick, scores: dict[str, float], path: str, model: str) -> None:
    import math

    print(f"Against the reference {path} (mono at {model}'s {yardstick.rate} Hz):")
    print(
        f"  Log-mel L1  {scores['ref_logmel_l1']:.3f} dB  d(edit, ref); d(input, ref) "
        f"{scores['input_ref_logmel_l1']:.3f} dB, d(codec(ref), ref) {scores['codec_ref_logmel_l1']:.3f} dB"
    )
    print(f"  CLAP        {scores['ref_clap']:.4f}    cos(edit, ref)")
    print(
        f"  Onset F1    {scores['ref_onset_f1']:.3f}     precision {scores['ref_onset_precision']:.3f}, "
        f"recall {scores['ref_onset_recall']:.3f} (the reference's onsets found in the edit)"
    )
    gain = scores["ref_gain"]
    if math.isnan(gain):
        print(
            "  Gain        undefined: the input is already about as close to the reference as the codec's "
            f"own output (d(input, ref) - d(codec(ref), ref) is under {yardstick.min_span_db:g} dB)"
        )
    else:
        print(
            f"  Gain        {gain:.3f}     (d(input, ref) - d(edit, ref)) / (d(input, ref) - d(codec(ref), ref)): "
            "1 as close as the codec allows, 0 no closer than the input"
        )
    codec_gain = scores["ref_codec_gain"]
    span = scores["codec_input_codec_ref_logmel_l1"]
    if math.isnan(codec_gain):
        print(
            f"  Codec gain  undefined: codec(input) is within {yardstick.min_span_db:g} dB of codec(ref) "
            f"(d(codec(input), codec(ref)) {span:.3f} dB)"
        )
    else:
        print(
            f"  Codec gain  {codec_gain:.3f}     (d(codec(input), codec(ref)) - d(edit, codec(ref))) / "
            f"d(codec(input), codec(ref)), in the codec's space: d(edit, codec(ref)) "
            f"{scores['ref_codec_logmel_l1']:.3f} dB, d(codec(input), codec(ref)) {span:.3f} dB"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from .defaults import model_defaults, sample_config
    from .evaluate import EvalConfig, run_eval
    from .manifest import load_clips, read_manifest
    from .settings import SampleConfig

    # 1. Check every setting and every clip before anything heavy runs
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    args.method, args.tune_lr = "lora", None  # each fitted method gets its own copy of these
    defaults = model_defaults(args.model)
    config = EvalConfig(
        methods=tuple(args.methods),
        etas=tuple(args.etas),
        strengths=tuple(args.strengths),
        t_starts=tuple(args.t_starts),
        seeds=tuple(args.seeds),
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        clap=args.clap or defaults.clap,
        fit=_fit_config(args),
        full_tune_lr=args.full_tune_lr if args.full_tune_lr is not None else defaults.tune_lr.get("full"),
        lora_tune_lr=args.lora_tune_lr if args.lora_tune_lr is not None else defaults.tune_lr.get("lora"),
        sample=SampleConfig(
            steps=args.steps,
            guidance=args.guidance,
            scheduler=args.scheduler,
            t_start=args.t_start if args.t_start is not None else sample_config(args.model).t_start,
        ),
        onset_tolerance=args.onset_tolerance,
        max_seconds=args.max_seconds,
        fixed_eta_holdout=args.fixed_eta_holdout,
        figure_clip=args.figure_clip,
    )
    rows = read_manifest(args.manifest)[: args.limit]
    clips = load_clips(rows, args.max_seconds)

    # 2. Run, then show the table
    results = run_eval(
        clips,
        args.output,
        config,
        load_backbone=lambda: _load_backbone(args),
        manifest=str(args.manifest),
        progress=not args.quiet,
    )
    output = Path(args.output)
    print((output / "table.md").read_text(encoding="utf-8"), end="")
    print(f"\nwritten to {output}: {', '.join(results['files'])}, audio/")
    return 0


COMMANDS = {
    "fit": cmd_fit,
    "generate": cmd_generate,
    "edit": cmd_edit,
    "sdedit": cmd_sdedit,
    "models": cmd_models,
    "bench": cmd_bench,
    "score": cmd_score,
    "invert": cmd_invert,
    "eval": cmd_eval,
}


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        setup_logging(getattr(args, "quiet", False))
        return COMMANDS[args.command](args)

    return run_command("nrt", body)


if __name__ == "__main__":
    sys.exit(main())
