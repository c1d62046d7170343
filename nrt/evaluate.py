"""The paper's evaluation protocol (section 3.2, Table 1, Figures 2 and 4) on a manifest of clips.

For each clip: fit once per method (``full``, ``lora``) and reuse the bundle for every η and
every start of step 3 (``lora`` starts from noise, ``lora-input`` from the input noised to
``t_start``, ``lora-inversion`` from the input's DDPM inversion); run SDEdit over its strengths
and the DDPM-inversion baseline (``ddpm-inversion``) over its ``t_start`` values; add the
reference outputs (the input unchanged, η = 0, plain text-to-audio from the target prompt, and
for inpainting the base model filling the gap from the prompt with the context kept). Every
output gets Text CLAP, Audio CLAP (against the input band-limited to the backbone's rate), their
sum and onset F1; inpainting outputs also get the Text CLAP of the filled region alone. Where the
manifest gives a ``reference`` (the audio the edit should produce), every output is also measured
against it (:mod:`nrt.reference`: log-mel L1, CLAP, onset F1, reference gain), and each method
reports how well the CLAP sum ranks its grid by reference gain (Spearman, per clip).
η (or the strength, or ``t_start``) is then chosen two ways:

- **oracle**: per clip, the value with the best CLAP sum (the paper's choice);
- **fixed**: one value per edit type, chosen on clips other than the one reported (leave one
  out; when an edit type has a single clip, on the clips of the other types), or on the clips
  of an earlier run's ``results.json`` (``fixed_eta_holdout``).

With several seeds a value's score is its mean over seeds, and the oracle chooses on that mean.

On disk under the output directory::

    bundles/<id>/<method>/      one bundle per clip and fitted method
    audio/<id>/<name>.wav       input.wav, t2a.wav, fill.wav, full-0.50.wav, lora-0.50.wav,
                                lora-inversion-0.50.wav, sdedit-0.60.wav, ddpm-inversion-0.50.wav
                                (seeds other than 0 add "-seed<s>" to the name)
    clips/<id>.json             every output's file, keys and scores; rewritten atomically
    results.json, table.md, table.csv, eta_curves.png, spectrograms.png

A re-run skips every output whose file and record match the settings (a hash of everything
that made it), rescoring only where the scoring settings changed, and fits only where a
bundle is missing or was made with other settings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from . import __version__
from .audio import samples_sha256, write_audio
from .bundle import load_bundle, read_meta
from .ddpm_inversion import DEFAULT_T_STARTS, check_t_starts, ddpm_inversion
from .edit import generate, text_to_audio
from .errors import BundleError, InputError
from .files import write_json
from .fit_clip import fit_clip
from .inputs import MAX_SECONDS
from .manifest import CheckedClip
from .masks import Range
from .onsets import OnsetConfig
from .reference import ReferenceYardstick
from .report import check_figures, write_reports
from .scoring import DEFAULT_ONSET_TOLERANCE, ReferenceScorer, check_scorer, load_scorer
from .sdedit import check_strengths, sdedit
from .settings import FitConfig, SampleConfig, check_etas, check_seed

logger = logging.getLogger(__name__)

FITTED = ("full", "lora")
STARTED = tuple(f"{m}-{start}" for m in FITTED for start in ("input", "inversion"))  # step 3 from the input
METHODS = ("full", "lora", "sdedit", *STARTED, "ddpm-inversion")
DEFAULT_METHODS = ("full", "lora", "sdedit")
DEFAULT_ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
FIGURE_EDIT_TYPE = "style_transfer"  # Figure 2's clip is a style transfer


@dataclass
class EvalConfig:
    """Settings of an evaluation run. ``fit.method`` is ignored: each fitted method gets its own copy."""

    methods: tuple[str, ...] = field(default=DEFAULT_METHODS, metadata={"help": ", ".join(METHODS)})
    etas: tuple[float, ...] = field(default=DEFAULT_ETAS, metadata={"help": "η grid of the fitted methods"})
    strengths: tuple[float, ...] = field(default=DEFAULT_STRENGTHS, metadata={"help": "SDEdit strength grid"})
    t_starts: tuple[float, ...] = field(
        default=DEFAULT_T_STARTS, metadata={"help": "t_start grid of the DDPM-inversion baseline"}
    )
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "sampling seeds of every output"})
    model: str = field(default="mini", metadata={"help": "backbone: hub id, directory or built-in name"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    dtype: str = field(default="fp32", metadata={"help": "UNet precision"})
    clap: str = field(default="mini", metadata={"help": "CLAP model: hub id, directory, .pt, 'mini' or 'tiny'"})
    fit: FitConfig = field(default_factory=FitConfig, metadata={"help": "steps 1 and 2"})
    full_tune_lr: float | None = field(default=None, metadata={"help": "step 2 rate of 'full' (None: its default)"})
    lora_tune_lr: float | None = field(default=None, metadata={"help": "step 2 rate of 'lora' (None: its default)"})
    sample: SampleConfig = field(default_factory=SampleConfig, metadata={"help": "sampling"})
    onset_tolerance: float = field(default=DEFAULT_ONSET_TOLERANCE, metadata={"help": "onset match window (s)"})
    max_seconds: float = field(default=MAX_SECONDS, metadata={"help": "longest clip accepted"})
    fixed_eta_holdout: str | None = field(
        default=None, metadata={"help": "results.json of a run on other clips to choose the fixed values on"}
    )
    figure_clip: str | None = field(default=None, metadata={"help": "clip of spectrograms.png"})

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        if not self.methods:
            raise InputError("give at least one method")
        for method in self.methods:
            if method not in METHODS:
                raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if len(set(self.methods)) != len(self.methods):
            raise InputError(f"methods repeat: {' '.join(self.methods)}")
        self.etas = tuple(sorted(set(check_etas(list(self.etas)))))
        self.strengths = tuple(sorted(set(check_strengths(list(self.strengths)))))
        self.t_starts = tuple(sorted(set(check_t_starts(list(self.t_starts)))))
        if not self.seeds:
            raise InputError("give at least one seed")
        self.seeds = tuple(dict.fromkeys(check_seed(s) for s in self.seeds))
        for name, grid in (("eta", self.etas), ("strength", self.strengths), ("t_start", self.t_starts)):
            names = [f"{v:.2f}" for v in grid]
            if len(set(names)) != len(names):
                raise InputError(f"{name} values must differ at two decimals (they name the files), got {list(grid)}")
        if not self.onset_tolerance >= 0:
            raise InputError(f"onset_tolerance must be >= 0 s, got {self.onset_tolerance}")
        for method in FITTED:
            self.fit_config(method)  # checks the learning rates

    def values(self, method: str) -> tuple[float, ...]:
        """The grid the choice is made on: η for the fitted methods, strengths for SDEdit, t_start for DDPM inversion."""
        return {"sdedit": self.strengths, "ddpm-inversion": self.t_starts}.get(method, self.etas)

    def generated(self, method: str) -> tuple[float, ...]:
        """What is generated: the grid, plus η = 0 for the fitted methods (a reference row)."""
        return self.values(method) if fitted_method(method) is None else tuple(sorted({0.0, *self.etas}))

    def fit_config(self, method: str) -> FitConfig:
        lr = self.full_tune_lr if method == "full" else self.lora_tune_lr
        return replace(self.fit, method=method, tune_lr=lr)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fit"] = {m: self.fit_config(m).to_dict() for m in FITTED if m in self.methods}
        data.pop("full_tune_lr")
        data.pop("lora_tune_lr")
        return data


def fitted_method(method: str) -> str | None:
    """The fit a method edits from (``lora-inversion`` → ``lora``); None for the methods without one."""
    fit = method.split("-", 1)[0]
    return fit if fit in FITTED and method in METHODS else None


def method_start(method: str) -> str:
    """Where step 3 of a fitted method starts: ``noise``, ``input`` or ``inversion``."""
    return method.split("-", 1)[1] if method in STARTED else "noise"


def sample_config(config: EvalConfig, method: str) -> SampleConfig:
    """The sampling settings of a method's outputs: its start, with the run's ``t_start``."""
    return replace(config.sample, start=method_start(method))


# -- 1. Outputs, their keys, and what is already on disk ----------------------------------------
@dataclass(frozen=True)
class Output:
    method: str  # "input", "t2a", "fill", or one of METHODS
    value: float | None
    seed: int | None

    @property
    def name(self) -> str:
        base = self.method if self.value is None else f"{self.method}-{self.value:.2f}"
        return base if not self.seed else f"{base}-seed{self.seed}"


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mask_list(mask: list[Range] | None) -> list[list[float]] | None:
    return None if mask is None else [[float(a), float(b)] for a, b in mask]


def output_key(config: EvalConfig, clip: CheckedClip, out: Output) -> str:
    """A hash of everything that made an output: change any of it and the output is made again."""
    if out.method == "input":
        return _hash({"input": clip.sha256})
    sample = asdict(config.sample)
    if not sample["keep_db"]:  # off: the key of an output made before the setting existed
        sample.pop("keep_db")
    if out.method in STARTED or out.method == "ddpm-inversion":
        sample["start"] = method_start(out.method)
    else:  # what starts from noise (or is given its start as its value) does not depend on them
        sample.pop("start"), sample.pop("t_start")
    parts: dict[str, Any] = {
        "file": "float32",  # outputs written as 16-bit PCM before were clipped at full scale
        "method": out.method,
        "value": out.value,
        "seed": out.seed,
        "model": config.model,
        "dtype": config.dtype,
        "sample": sample,
        "prompt": clip.row.target_prompt,
    }
    if out.method == "t2a":
        parts["shape"] = [clip.clip.sample_rate, clip.clip.num_frames, clip.clip.channels]
    else:
        parts.update(input=clip.sha256, mask=_mask_list(clip.mask))
    fit = fitted_method(out.method)
    if fit is not None:
        parts["fit"] = config.fit_config(fit).to_dict()
    return _hash(parts)


def reference_sha256(clip: CheckedClip) -> str | None:
    """A hash of the clip's reference audio (None without one), computed once per clip."""
    if clip.reference is None:
        return None
    key = (clip.clip_id, clip.sha256, id(clip.reference))
    if key not in _REFERENCE_SHA:
        _REFERENCE_SHA[key] = samples_sha256(clip.reference.samples)
    return _REFERENCE_SHA[key]


_REFERENCE_SHA: dict[tuple[str, str, int], str] = {}


def score_key(config: EvalConfig, clip: CheckedClip, out_key: str) -> str:
    """A hash of what the scores of an output depend on beyond the output itself."""
    parts = {
        "output": out_key,
        "clap": config.clap,
        "band_limit_model": config.model,
        "input": clip.sha256,
        "prompt": clip.row.target_prompt,
        "mask": _mask_list(clip.mask),
        "onset_tolerance": config.onset_tolerance,
        "onsets": asdict(OnsetConfig()),
    }
    reference = reference_sha256(clip)
    if reference is not None:  # a run without references keeps its old keys
        parts["reference"] = reference
    return _hash(parts)


def unit_outputs(config: EvalConfig, unit: str, clip: CheckedClip) -> list[Output]:
    """The outputs of one work unit: ``reference`` (input, text-to-audio, the base model's fill) or a method."""
    if unit == "reference":
        fills = [Output("fill", None, s) for s in config.seeds] if clip.mask else []
        return [Output("input", None, None)] + [Output("t2a", None, s) for s in config.seeds] + fills
    return [Output(unit, v, s) for s in config.seeds for v in config.generated(unit)]


class ClipStore:
    """``clips/<id>.json`` and ``audio/<id>/``: what has been made and scored for one clip."""

    def __init__(self, root: Path, clip: CheckedClip) -> None:
        self.root = root
        self.clip = clip
        self.path = root / "clips" / f"{clip.clip_id}.json"
        self.audio_dir = root / "audio" / clip.clip_id
        self.record = self._read()

    def _read(self) -> dict[str, Any]:
        fresh: dict[str, Any] = {"outputs": {}}
        if self.path.is_file():
            try:
                record = json.loads(self.path.read_text())
                if record.get("input_sha256") == self.clip.sha256 and isinstance(record.get("outputs"), dict):
                    fresh = record
                else:
                    logger.info(
                        "%s: the input changed since %s was written; starting the clip again",
                        self.clip.clip_id,
                        self.path,
                    )
            except json.JSONDecodeError:
                logger.warning("%s is not valid JSON; starting the clip again", self.path)
        row = self.clip.row
        fresh.update(
            id=row.clip_id,
            edit_type=row.edit_type,
            target_prompt=row.target_prompt,
            audio=str(row.audio),
            mask=_mask_list(self.clip.mask),
            input_sha256=self.clip.sha256,
            sample_rate=self.clip.clip.sample_rate,
            channels=self.clip.clip.channels,
            num_frames=self.clip.clip.num_frames,
            extra=row.extra,
        )
        return fresh

    def file(self, out: Output) -> Path:
        return self.audio_dir / f"{out.name}.wav"

    def status(self, config: EvalConfig, out: Output) -> str:
        """``done``, ``rescore`` (the audio is current, its scores are not) or ``make``."""
        entry = self.record["outputs"].get(out.name)
        key = output_key(config, self.clip, out)
        if not entry or entry.get("key") != key or not self.file(out).is_file():
            return "make"
        return "done" if entry.get("score_key") == score_key(config, self.clip, key) else "rescore"

    def put(self, config: EvalConfig, out: Output, scores: dict[str, float]) -> None:
        key = output_key(config, self.clip, out)
        self.record["outputs"][out.name] = {
            **asdict(out),
            "file": str(self.file(out).relative_to(self.root)),
            "key": key,
            "score_key": score_key(config, self.clip, key),
            "scores": scores,
        }

    def save(self) -> None:
        write_json(self.path, self.record)


# -- 2. Making and scoring the outputs -----------------------------------------------------------
class Resources:
    """The backbone and the CLAP scorer, loaded only when some output needs them, and only once."""

    def __init__(
        self, config: EvalConfig, load_backbone: Callable[[], Any], known_rate: int | None, progress: bool = True
    ) -> None:
        self.config = config
        self.progress = progress
        self._load_backbone = load_backbone
        self._backbone = None
        self._scorer = None
        self._rate = known_rate
        self._yardsticks: dict[str, ReferenceYardstick] = {}

    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = self._load_backbone()
            self._rate = int(self._backbone.sample_rate)
        return self._backbone

    @property
    def band_limit_rate(self) -> int:
        """The backbone's sample rate: Audio CLAP compares with the input as the backbone represents it."""
        return self._rate if self._rate is not None else int(self.backbone.sample_rate)

    @property
    def scorer(self):
        if self._scorer is None:
            from .backbones import resolve_device

            device = resolve_device(self.config.device)
            self._scorer = load_scorer(
                self.config.clap, device=device, band_limit_rate=self.band_limit_rate, progress=self.progress
            )
        return self._scorer

    def yardstick(self, clip: CheckedClip) -> ReferenceYardstick | None:
        """The clip's reference yardstick (None without a reference), built once per clip."""
        if clip.reference is None:
            return None
        if clip.clip_id not in self._yardsticks:
            self._yardsticks[clip.clip_id] = ReferenceYardstick(
                self.backbone,
                self.scorer,
                clip.clip,
                clip.reference,
                mask=clip.mask,
                onset_tolerance=self.config.onset_tolerance,
            )
        return self._yardsticks[clip.clip_id]


def _read_back(path: Path) -> np.ndarray:
    """The output as written (and as a re-run will read it), float32 [frames, channels]."""
    samples, _ = sf.read(path, dtype="float32", always_2d=True)
    return samples


def _bundle_matches(path: Path, config: EvalConfig, clip: CheckedClip, method: str) -> bool:
    try:
        meta = read_meta(path)
    except BundleError:
        return False
    return (
        meta["fit"] == config.fit_config(method).to_dict()
        and meta["backbone"]["model_id"] == config.model
        and meta["target_prompt"] == clip.row.target_prompt
        and meta["mask"] == _mask_list(clip.mask)
        and meta["input"]["sha256"] == clip.sha256
    )


def ensure_bundle(
    root: Path, res: Resources, config: EvalConfig, clip: CheckedClip, method: str, progress: bool
) -> Path:
    """The clip's bundle for ``method``: reused when it matches the settings, else fitted and saved."""
    path = root / "bundles" / clip.clip_id / method
    if not _bundle_matches(path, config, clip, method):
        fit_clip(
            res.backbone,
            clip.clip,
            clip.row.target_prompt,
            config.fit_config(method),
            path,
            edit_type=clip.row.edit_type,
            mask=clip.mask,
            overwrite=True,
            progress=progress,
        )
    return path


def _make(
    root: Path, res: Resources, config: EvalConfig, clip: CheckedClip, unit: str, todo: list[Output], progress: bool
) -> dict[Output, np.ndarray]:
    """Generate the outputs of one unit that are missing, in memory."""
    made: dict[Output, np.ndarray] = {}
    prompt, sample = clip.row.target_prompt, config.sample
    by_seed: dict[int | None, list[Output]] = {}
    for out in todo:
        by_seed.setdefault(out.seed, []).append(out)
    fit = fitted_method(unit)
    if fit is not None:
        bundle = load_bundle(ensure_bundle(root, res, config, clip, fit, progress), res.backbone.info)
    for key, outs in by_seed.items():
        seed = cast(int, key)  # only the unchanged input has no seed, and it is never generated
        values = [cast(float, o.value) for o in outs]  # the η or strength of each generated output
        if unit == "reference":
            waves = [_reference_output(res, clip, o, seed, sample, progress) for o in outs]
        elif unit == "sdedit":
            waves = sdedit(
                res.backbone,
                clip.clip,
                prompt,
                values,
                sample,
                seed,
                mask=clip.mask,
                progress=progress,
            )
        elif unit == "ddpm-inversion":
            waves = ddpm_inversion(
                res.backbone, clip.clip, prompt, values, sample, seed, mask=clip.mask, progress=progress
            )
        else:
            waves = generate(res.backbone, bundle, values, sample_config(config, unit), seed, progress=progress)
        for out, wave in zip(outs, waves):
            made[out] = wave
    return made


def _reference_output(
    res: Resources, clip: CheckedClip, out: Output, seed: int, sample: SampleConfig, progress: bool
) -> np.ndarray:
    if out.method == "input":
        return clip.clip.samples
    mask = clip.mask if out.method == "fill" else None
    return text_to_audio(res.backbone, clip.row.target_prompt, clip.clip, sample, seed, mask=mask, progress=progress)


def run_clip_unit(root: Path, res: Resources, config: EvalConfig, store: ClipStore, unit: str, progress: bool) -> None:
    """Make and score what one (clip, unit) lacks, then rewrite the clip's record."""
    clip = store.clip
    outs = unit_outputs(config, unit, clip)
    status = {out: store.status(config, out) for out in outs}
    todo = [o for o in outs if status[o] == "make"]
    store.audio_dir.mkdir(parents=True, exist_ok=True)
    waves: dict[Output, np.ndarray] = {}
    if todo:
        for out, wave in _make(root, res, config, clip, unit, todo, progress).items():
            # 32-bit float: what is scored (and rescored) is what the model made, peaks above full
            # scale included; a 16-bit file would clip them, which the codec bound is not
            subtype = "PCM_16" if out.method == "input" and clip.clip.subtype == "PCM_16" else "FLOAT"
            write_audio(store.file(out), wave, clip.clip.sample_rate, subtype=subtype)
            waves[out] = clip.clip.samples if out.method == "input" else _read_back(store.file(out))
    for out in outs:
        if status[out] == "rescore":
            waves[out] = clip.clip.samples if out.method == "input" else _read_back(store.file(out))
    if waves:
        scorer = ReferenceScorer(
            res.scorer,
            clip.clip.samples,
            clip.clip.sample_rate,
            clip.row.target_prompt,
            clip.mask,
            config.onset_tolerance,
        )
        ordered = list(waves)
        rows = scorer.score([waves[o] for o in ordered], clip.clip.sample_rate)
        yardstick = res.yardstick(clip)
        if yardstick is not None:
            measured = yardstick.score([waves[o] for o in ordered], clip.clip.sample_rate)
            rows = [{**row, **more} for row, more in zip(rows, measured)]
        for out, scores in zip(ordered, rows):
            store.put(config, out, scores)
        store.record["band_limit_rate"] = res.band_limit_rate
        store.record["clap"] = config.clap
    if unit in FITTED and (root / "bundles" / clip.clip_id / unit / "bundle.json").is_file():
        store.record.setdefault("fit_seconds", {})[unit] = read_meta(root / "bundles" / clip.clip_id / unit).get(
            "fit_seconds"
        )
    store.save()


# -- 3. Choosing η: oracle per clip, fixed per edit type ----------------------------------------
def choose_best(sum_by_value: dict[float, float]) -> float:
    """The value with the highest sum; on a tie, the smallest value (the most faithful edit)."""
    return max(sorted(sum_by_value), key=lambda v: (sum_by_value[v], -v))


def choose_fixed(pool: Sequence[dict[float, float]], values: Sequence[float]) -> float | None:
    """The value with the best mean sum over the clips of ``pool``; None when the pool is empty."""
    pool = [p for p in pool if all(v in p for v in values)]
    if not pool:
        return None
    return choose_best({v: float(np.mean([p[v] for p in pool])) for v in values})


def _seed_means(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Each score's mean over seeds; NaN where no seed has it defined (NaN in memory, null on disk)."""
    keys = sorted({k for e in entries for k, v in e["scores"].items() if v is None or isinstance(v, (int, float))})
    means = {}
    for k in keys:
        known = [e["scores"][k] for e in entries if _defined(e["scores"].get(k))]
        means[k] = float(np.mean(known)) if known else math.nan
    return means


def _defined(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def summarize_clip(config: EvalConfig, record: dict[str, Any]) -> dict[str, Any]:
    """A clip's outputs grouped by method and value (seed means), with the oracle choice."""
    outputs = list(record["outputs"].values())
    summary: dict[str, Any] = {
        "id": record["id"],
        "edit_type": record["edit_type"],
        "target_prompt": record["target_prompt"],
        "audio": record["audio"],
        "mask": record["mask"],
        "extra": record.get("extra", {}),
        "duration": record["num_frames"] / record["sample_rate"],
        "fit_seconds": record.get("fit_seconds", {}),
        "outputs": sorted(
            (
                {"method": o["method"], "value": o["value"], "seed": o["seed"], "file": o["file"], **o["scores"]}
                for o in outputs
                if _wanted(config, o)
            ),
            key=lambda o: (o["method"], o["value"] if o["value"] is not None else -1, o["seed"] or 0),
        ),
        "reference": {},
        "methods": {},
    }
    summary["reference"]["input"] = _seed_means([o for o in outputs if o["method"] == "input"])
    for name in ("t2a", "fill"):
        entries = [o for o in outputs if o["method"] == name and o["seed"] in config.seeds]
        if entries:
            summary["reference"][name] = _seed_means(entries)
    for method in config.methods:
        values: list[dict[str, Any]] = []
        for value in config.generated(method):
            entries = [
                o for o in outputs if o["method"] == method and o["value"] == value and o["seed"] in config.seeds
            ]
            values.append(
                {
                    "value": value,
                    "in_grid": value in config.values(method),
                    **_seed_means(entries),
                    "per_seed": {str(o["seed"]): o["scores"] for o in entries},
                }
            )
        grid = {v["value"]: v["sum"] for v in values if v["in_grid"]}
        summary["methods"][method] = {
            "values": values,
            "oracle": choose_best(grid),
            "objective_spearman": objective_spearman([v for v in values if v["in_grid"]]),
            "objective_spearman_codec": objective_spearman([v for v in values if v["in_grid"]], "ref_codec_gain"),
        }
    return summary


def objective_spearman(values: Sequence[dict[str, Any]], gain: str = "ref_gain") -> float | None:
    """How well the CLAP sum ranks a clip's grid by reference gain: Spearman's ρ over the grid.

    ``gain`` names the gain: ``ref_gain``, or ``ref_codec_gain``, the gain inside the codec's space.

    None without references, with fewer than three values with a defined gain, or where either
    is constant over the grid (no ranking to agree with).
    """
    pairs = [
        (v["sum"], v[gain])
        for v in values
        if isinstance(v.get(gain), float) and np.isfinite(v[gain]) and np.isfinite(v["sum"])
    ]
    if len(pairs) < 3:
        return None
    sums, gains = np.array(pairs).T
    if np.ptp(sums) == 0 or np.ptp(gains) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(sums, gains).statistic)


def _wanted(config: EvalConfig, out: dict[str, Any]) -> bool:
    """Whether an output on record belongs to this run's grid (earlier runs may have made more)."""
    if out["method"] == "input":
        return True
    if out["seed"] not in config.seeds:
        return False
    if out["method"] in ("t2a", "fill"):
        return True
    return out["method"] in config.methods and out["value"] in config.generated(out["method"])


def _sums(summary: dict[str, Any], method: str) -> dict[float, float]:
    return {v["value"]: v["sum"] for v in summary["methods"][method]["values"] if v.get("in_grid", True)}


def choose_fixed_values(
    config: EvalConfig, summaries: list[dict[str, Any]], holdout: list[dict[str, Any]] | None = None
) -> None:
    """Add ``fixed`` and ``fixed_chosen_on`` to every clip's methods (see the module notes)."""
    for summary in summaries:
        for method in config.methods:
            grid = config.values(method)
            if holdout is not None:
                others = [h for h in holdout if h["id"] != summary["id"] and method in h.get("methods", {})]
                where = "holdout"
            else:
                others = [s for s in summaries if s["id"] != summary["id"]]
                where = "leave-one-out"
            same_type = [s for s in others if s["edit_type"] == summary["edit_type"]]
            pool, scope = (same_type, "edit type") if same_type else (others, "every edit type")
            chosen = choose_fixed([_sums(s, method) for s in pool], grid)
            entry = summary["methods"][method]
            entry["fixed"] = chosen
            entry["fixed_chosen_on"] = (
                None if chosen is None else {"how": where, "scope": scope, "clips": [s["id"] for s in pool]}
            )


def read_holdout(path: str | os.PathLike, config: EvalConfig) -> list[dict[str, Any]]:
    """The clip summaries of an earlier run's ``results.json``, to choose fixed values on."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
        clips = data["clips"]
        for clip in clips:
            for method in clip["methods"].values():
                for v in method["values"]:
                    float(v["value"]), float(v["sum"])
    except FileNotFoundError:
        raise InputError(f"--fixed-eta-holdout {path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"--fixed-eta-holdout {path}: not the results.json of an nrt eval run") from None
    for method in config.methods:
        if not any(method in c["methods"] and all(v in _sums(c, method) for v in config.values(method)) for c in clips):
            raise InputError(
                f"--fixed-eta-holdout {path}: no clip there has {method} at every value of this run's grid "
                f"{list(config.values(method))}"
            )
    return clips


# -- 4. The run ---------------------------------------------------------------------------------
def run_eval(
    clips: Sequence[CheckedClip],
    output_dir: str | os.PathLike,
    config: EvalConfig,
    *,
    load_backbone: Callable[[], Any] | None = None,
    manifest: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol on checked clips and write every output; returns what ``results.json`` holds."""
    root = Path(output_dir)
    check_scorer(config.clap)
    check_figures()
    holdout = read_holdout(config.fixed_eta_holdout, config) if config.fixed_eta_holdout else None
    if config.figure_clip is not None and config.figure_clip not in {c.clip_id for c in clips}:
        raise InputError(f"--figure-clip {config.figure_clip!r} is not a clip of this run")
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file; the evaluation needs a directory")
    root.mkdir(parents=True, exist_ok=True)
    if load_backbone is None:
        from .backbones import load_backbone as _load

        def load_backbone():
            return _load(config.model, device=config.device, dtype=config.dtype)

    # 1. What is already on disk
    stores = [ClipStore(root, clip) for clip in clips]
    units = ["reference", *config.methods]
    plan = [
        (store, unit)
        for store in stores
        for unit in units
        if any(store.status(config, o) != "done" for o in unit_outputs(config, unit, store.clip))
    ]
    known_rate = next(
        (
            s.record.get("band_limit_rate")
            for s in stores
            if s.record.get("band_limit_rate") and s.record.get("model") == config.model
        ),
        None,
    )
    res = Resources(config, load_backbone, known_rate, progress)
    done = len(stores) * len(units) - len(plan)
    logger.info("%d clips x %d units: %d on disk already, %d to run", len(stores), len(units), done, len(plan))

    # 2. Make and score what is missing, one (clip, unit) at a time
    bar = tqdm(plan, desc="eval", unit="unit", disable=None if progress else True)
    for store, unit in bar:
        bar.set_postfix_str(f"{store.clip.clip_id} {unit}")
        store.record["model"] = config.model
        run_clip_unit(root, res, config, store, unit, progress)
    bar.close()

    # 3. Choose η, aggregate, and write the reports
    summaries = [summarize_clip(config, store.record) for store in stores]
    choose_fixed_values(config, summaries, holdout)
    rate = next((s.record.get("band_limit_rate") for s in stores if s.record.get("band_limit_rate")), None)
    results = {
        "nrt_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "manifest": manifest,
        "settings": {
            **config.to_dict(),
            "band_limit_rate": rate,
            "fixed_eta_holdout": config.fixed_eta_holdout or "leave-one-out",
        },
        "clips": summaries,
    }
    return write_reports(results, root, config)


__all__ = [
    "EvalConfig",
    "Output",
    "choose_best",
    "choose_fixed",
    "run_eval",
    "summarize_clip",
]
