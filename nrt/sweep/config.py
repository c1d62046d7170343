"""What a sweep searches and how: the fit grid, the sampling search space, budgets and resources.

Names flow unchanged from the command line to Tune: the fit settings are :class:`FitConfig`
fields (``method``, ``embed_steps``, ``tune_lr``, …) and the searched parameters are ``eta``
and the :class:`SampleConfig` fields (``steps``, ``guidance``, ``scheduler``, ``start``,
``t_start``, ``keep_db``). η and ``t_start`` are searched together (the η/timestep search), ``start`` as a
choice; ``t_start`` is drawn for every trial and ignored by the ``noise`` start. ``keep_db`` (the
merge with the recording, :mod:`nrt.keep`) is fixed by default: the CLAP sum rewards copying the
input, so a search over it would learn to keep everything.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..defaults import MINI_FIT, MINI_SAMPLE, model_defaults
from ..errors import InputError
from ..keep import check_keep_db
from ..settings import STARTS, FitConfig, SampleConfig, check_etas, check_seed, check_t_start

METRIC = "sum"  # the CLAP sum: Text CLAP + Audio CLAP
SEARCHED = ("eta", "steps", "guidance", "scheduler", "start", "t_start", "keep_db")
SETTINGS = (*SEARCHED, "seed")  # what a trial is made with: the registry's best, the HTTP request's fields
# Fit settings that change the result; gradient checkpointing trades memory for time only.
_FIT_KEY_FIELDS = ("method", "embed_steps", "embed_lr", "tune_steps", "tune_lr", "batch_size", "seed")
_LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_targets")


@dataclass(frozen=True)
class Param:
    """One sampling parameter: a fixed value, a range ``low:high``, or a set of choices."""

    name: str
    kind: str  # "fixed", "range" or "choice"
    values: tuple[Any, ...]

    @property
    def fixed(self) -> bool:
        return self.kind == "fixed"

    def distribution(self):
        """Optuna's distribution of a searched parameter."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(list(self.values))
        low, high = self.values
        if isinstance(low, int):
            # diffusion steps matter by ratio: 25 -> 50 is as big a change as 100 -> 200
            return IntDistribution(low, high, log=low >= 1 and high >= 4 * low)
        return FloatDistribution(low, high)

    def describe(self) -> str:
        if self.kind == "range":
            return f"{self.values[0]:g}:{self.values[1]:g}"
        return "|".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in self.values)


def _check_eta(value: float) -> float:
    return check_etas([value])[0]


def _check_steps(value: int) -> int:
    return SampleConfig(steps=value).steps


def _check_guidance(value: float) -> float:
    return float(SampleConfig(guidance=value).guidance)


def _check_scheduler(value: str) -> str:
    return SampleConfig(scheduler=value).scheduler


def _check_start(value: str) -> str:
    return SampleConfig(start=value).start


_PARAMS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "eta": (float, _check_eta),
    "steps": (int, _check_steps),
    "guidance": (float, _check_guidance),
    "scheduler": (str, _check_scheduler),
    "start": (str, _check_start),
    "t_start": (float, check_t_start),
    "keep_db": (float, check_keep_db),
}


def complete_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (a registry entry's ``best``, a trial's config) with every setting it lacks
    filled in with the value it was made with: an entry or a trial from before ``scheduler``,
    ``start``, ``t_start``, ``keep_db`` or ``seed`` were recorded was made with :class:`SampleConfig`'s
    defaults (the ``noise`` start, no merge) and seed 0."""
    d = SampleConfig()
    return {
        "scheduler": d.scheduler,
        "start": d.start,
        "t_start": d.t_start,
        "keep_db": d.keep_db,
        "seed": 0,
        **settings,
    }


def sample_config(settings: Mapping[str, Any]) -> SampleConfig:
    """The :class:`SampleConfig` of a trial's or an entry's settings (see :func:`complete_settings`)."""
    s = complete_settings(settings)
    return SampleConfig(
        steps=int(s["steps"]),
        guidance=float(s["guidance"]),
        scheduler=str(s["scheduler"]),
        start=str(s["start"]),
        t_start=float(s["t_start"]),
        keep_db=float(s["keep_db"]),
    )


def parse_param(name: str, texts: Sequence[str] | str) -> Param:
    """``["0.5"]`` is fixed, ``["0.2:0.9"]`` a range, ``["0.2", "0.5", "0.8"]`` a set of choices."""
    kind, check = _PARAMS[name]
    flag = "--" + name.replace("_", "-")
    texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
    if not texts:
        raise InputError(f"{flag}: give a value, a range LOW:HIGH, or several values")

    def value(text: str) -> Any:
        try:
            return check(kind(text.strip()))
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{flag}: {text!r} is not a {kind.__name__} value") from None

    if len(texts) == 1 and ":" in texts[0] and kind is not str:
        low_text, _, high_text = texts[0].partition(":")
        low, high = value(low_text), value(high_text)
        if not low < high:
            raise InputError(f"{flag}: the range {texts[0]!r} must run from low to high")
        return Param(name, "range", (low, high))
    if any(":" in t for t in texts) and kind is not str:
        raise InputError(f"{flag}: give one range LOW:HIGH or a list of values, not both ({' '.join(texts)})")
    values = tuple(dict.fromkeys(value(t) for t in texts))
    return Param(name, "fixed" if len(values) == 1 else "choice", values)


def fit_grid(base: FitConfig, grid: dict[str, Sequence[Any]]) -> list[FitConfig]:
    """Every combination of the values in ``grid`` over ``base``, one per distinct fit."""
    names = list(grid)
    configs: dict[str, FitConfig] = {}
    for combo in itertools.product(*(grid[n] for n in names)):
        config = replace(base, **dict(zip(names, combo)))
        configs.setdefault(json.dumps(fit_identity(config), sort_keys=True), config)
    return list(configs.values())


def fit_identity(config: FitConfig) -> dict[str, Any]:
    """The settings that make one fit differ from another (LoRA's only for LoRA)."""
    data = config.to_dict()
    keep = _FIT_KEY_FIELDS + (_LORA_FIELDS if config.method == "lora" else ())
    out = {k: data[k] for k in keep}
    if config.method == "lora":
        out["lora_alpha"] = config.lora["alpha"]
    return out


def fit_key(config: FitConfig, model: str, dtype: str, clip_identity: dict[str, Any]) -> str:
    """``<method>-<hash>`` of the fit settings, the backbone and the clip (input, prompt, mask)."""
    data = {"model": model, "dtype": dtype, "fit": fit_identity(config), "clip": clip_identity}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.method}-{digest}"


@dataclass
class Resources:
    """What each kind of work asks Ray for. GPUs are asked for only when ``gpu`` is true."""

    gpu: bool = False
    fit_cpus: float = field(default=1.0, metadata={"help": "CPUs of a fit task"})
    trial_cpus: float = field(default=1.0, metadata={"help": "CPUs of a trial"})
    trial_gpus: float = field(default=0.25, metadata={"help": "GPU fraction of a trial"})

    def __post_init__(self) -> None:
        for name in ("fit_cpus", "trial_cpus"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.trial_gpus <= 1:
            raise InputError(f"trial_gpus must lie in (0, 1], got {self.trial_gpus}")

    def fit_options(self) -> dict[str, float]:
        return {"num_cpus": self.fit_cpus, "num_gpus": 1 if self.gpu else 0}

    def trial(self) -> dict[str, float]:
        return {"cpu": self.trial_cpus, "gpu": self.trial_gpus if self.gpu else 0}


@dataclass
class SweepConfig:
    """Everything a sweep needs besides its clips. Checked on construction."""

    storage: str = field(default="sweep-results", metadata={"help": "local directory, s3:// or gs:// URI"})
    model: str = field(default="mini", metadata={"help": "backbone: hub id, directory or built-in name"})
    device: str = field(default="auto", metadata={"help": "where workers run the model: auto, cpu or cuda"})
    dtype: str = field(default="fp32", metadata={"help": "backbone precision"})
    fits: tuple[FitConfig, ...] = field(default=(FitConfig(),), metadata={"help": "the distinct fit settings"})
    space: dict[str, Param] = field(
        default_factory=dict, metadata={"help": "eta, steps, guidance, scheduler, start, t_start, keep_db"}
    )
    seed: int = field(default=0, metadata={"help": "sampling seed of every trial, and the searcher's"})
    trials: int = field(default=16, metadata={"help": "trials per clip and fit setting"})
    concurrent_trials: int = field(default=2, metadata={"help": "trials of one clip and setting at once"})
    clap: str = field(default="mini", metadata={"help": "CLAP model that scores the trials"})
    optuna_storage: str | None = field(default=None, metadata={"help": "SQLAlchemy URL of Optuna's studies"})
    max_retries: int = field(default=2, metadata={"help": "retries of a fit or trial that raised"})
    max_clips: int | None = field(default=None, metadata={"help": "clips in flight at once (None: by cluster size)"})
    resources: Resources = field(default_factory=Resources)
    resume: bool = field(default=False, metadata={"help": "continue the clips this storage already holds"})

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda for a sweep, got {self.device!r}")
        self.fits = tuple(self.fits)
        if not self.fits:
            raise InputError("give at least one fit setting")
        defaults = default_space()
        self.space = {name: self.space.get(name, defaults[name]) for name in SEARCHED}
        check_seed(self.seed)
        for name in ("trials", "concurrent_trials"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InputError(f"max_retries must be a whole number >= 0, got {self.max_retries!r}")
        if self.max_clips is not None and self.max_clips < 1:
            raise InputError(f"max_clips must be >= 1, got {self.max_clips}")

    @property
    def searched(self) -> dict[str, Param]:
        return {name: p for name, p in self.space.items() if not p.fixed}

    def param_space(self) -> dict[str, Any]:
        """Tune's constants: the fixed parameters and the seed (the searcher fills in the rest)."""
        return {**{n: p.values[0] for n, p in self.space.items() if p.fixed}, "seed": self.seed}


def default_space() -> dict[str, Param]:
    d = SampleConfig()
    return {
        "eta": parse_param("eta", "0:1"),
        "steps": parse_param("steps", str(d.steps)),
        "guidance": parse_param("guidance", f"{d.guidance}"),
        "scheduler": parse_param("scheduler", d.scheduler),
        "start": parse_param("start", d.start),
        "t_start": parse_param("t_start", f"{d.t_start}"),
        "keep_db": parse_param("keep_db", f"{d.keep_db}"),
    }


# Defaults of the command line by situation: the paper's settings for a real backbone; nrt-mini's
# measured fit (nrt.defaults) and a short search, a few minutes on a laptop; the random tiny
# model's even shorter; seconds for --smoke-test (CI).
#
# Every preset offers the three starts with t_start in 0.2:1. What a trial costs in UNet passes,
# T the steps: T from noise, t_start·T from the input, 2·t_start·T from an inversion (inverting
# and regenerating each run t_start·T steps). Over the random start of Optuna's first trials
# that is (1 + 3·0.6)/3 = 0.93·T on average, so a preset's trials and steps keep its time budget
# of the noise-only search; a searcher that settles on inversion at t_start near 1 pays up to 2·T.
_STARTS = list(STARTS)
_T_START = ["0.2:1"]
PRESETS: dict[str, dict[str, Any]] = {
    "model": {
        "embed_steps": [500],
        "tune_steps": [1500],
        "eta": ["0:1"],
        "steps": ["50:200"],
        "guidance": ["1:6"],
        "start": _STARTS,
        "t_start": _T_START,
        "keep_db": ["0"],
        "trials": 24,
    },
    "mini": {
        "embed_steps": [MINI_FIT["embed_steps"]],
        "tune_steps": [MINI_FIT["tune_steps"]],
        "eta": ["0:1"],
        "steps": ["25:100"],
        "guidance": ["1:6"],
        "start": _STARTS,
        "t_start": _T_START,
        "keep_db": [f"{MINI_SAMPLE['keep_db']:g}"],
        "trials": 6,
    },
    "tiny": {
        "embed_steps": [20],
        "tune_steps": [40],
        "eta": ["0:1"],
        "steps": ["10:40"],
        "guidance": ["1:6"],
        "start": _STARTS,
        "t_start": _T_START,
        "keep_db": ["0"],
        "trials": 6,
    },
    "smoke": {
        "embed_steps": [3],
        "tune_steps": [3],
        "eta": ["0:1"],
        "steps": ["3"],
        "guidance": ["1:6"],
        "start": _STARTS,
        "t_start": _T_START,
        "keep_db": ["0"],
        "trials": 2,
    },
}


def preset_space(preset: dict[str, Any], chosen: dict[str, Any] | None = None) -> dict[str, Param]:
    """The searched parameters a preset names, each overridden by ``chosen[name]`` when given."""
    values = {**preset, **{n: v for n, v in (chosen or {}).items() if v is not None}}
    return {n: parse_param(n, values[n]) for n in SEARCHED if n in values}


def preset_fits(
    preset: dict[str, Any], base: FitConfig, grid: dict[str, Sequence[Any]] | None = None, model: str | None = None
) -> list[FitConfig]:
    """The fit grid of a preset (its embedding and UNet steps), with more values from ``grid``.

    A learning rate left as None takes ``model``'s default (:func:`nrt.defaults.model_defaults`).
    """
    fits = fit_grid(base, {"embed_steps": preset["embed_steps"], "tune_steps": preset["tune_steps"], **(grid or {})})
    defaults = model_defaults(model)
    return [
        replace(
            f,
            embed_lr=f.embed_lr if f.embed_lr is not None else defaults.fit.get("embed_lr", FitConfig.embed_lr),
            tune_lr=f.tune_lr if f.tune_lr is not None else defaults.tune_lr.get(f.method),
        )
        for f in fits
    ]


__all__ = [
    "METRIC",
    "PRESETS",
    "SEARCHED",
    "SETTINGS",
    "complete_settings",
    "sample_config",
    "preset_fits",
    "preset_space",
    "Param",
    "Resources",
    "SweepConfig",
    "fit_grid",
    "fit_identity",
    "fit_key",
    "parse_param",
]
