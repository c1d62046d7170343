"""What nrt uses where a setting is not given: the default model, and defaults by model.

The default backbone is nrt-mini (``"mini"``): trained by the project on generated scenes,
shipped in the package, fast enough to fit and sample on a laptop CPU. Its fit settings were
measured on held-out edits (``benchmarks/mini_fit_defaults.py``, nrt/mini/MODEL_CARD.md);
a real backbone keeps the paper's. The CLI, the sweep, ``nrt eval`` and the service all ask
:func:`model_defaults`, so one table decides them everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import FitConfig, SampleConfig

DEFAULT_BACKBONE = "mini"
# the CLAP of a real backbone's scores: why this one, in nrt.clap's docstring (there DEFAULT_MODEL)
DEFAULT_CLAP = "laion/clap-htsat-unfused"
TOY_MODELS = ("tiny", "tiny-audioldm", "tiny-audioldm2")

# nrt-mini's fit: see nrt/mini/MODEL_CARD.md for the measurement behind each number
MINI_FIT = MappingProxyType({"embed_steps": 200, "embed_lr": 2e-3, "tune_steps": 200})
MINI_TUNE_LR = MappingProxyType({"full": 5e-5, "lora": 3e-4})
TOY_FIT = MappingProxyType({"embed_steps": 20, "tune_steps": 40})
# nrt-mini's step 3: the start, its t_start, the merge with the recording (keep_db) and η by fit
# method and edit type, chosen on 30 held-out edits (the selection set) by their distance to the
# intended result (benchmarks/mini_faithful.py and its results, the model card)
MINI_SAMPLE = MappingProxyType({"start": "inversion", "t_start": 0.8, "keep_db": 10.0})
MINI_ETA = MappingProxyType(
    {
        "lora": MappingProxyType({"addition": 0.75, "style_transfer": 1.0, "inpainting": 1.0}),
        "full": MappingProxyType({"addition": 1.0, "style_transfer": 1.0, "inpainting": 1.0}),
    }
)
DEFAULT_ETA = 0.5


@dataclass(frozen=True)
class ModelDefaults:
    """The defaults that depend on the backbone."""

    clap: str = field(metadata={"help": "CLAP that scores this model's edits"})
    preset: str = field(metadata={"help": "the sweep preset (nrt.sweep.PRESETS)"})
    fit: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "FitConfig fields"})
    tune_lr: Mapping[str, float] = field(default_factory=dict, metadata={"help": "step 2 rate by method"})
    sample: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "SampleConfig fields"})
    eta: Mapping[str, Mapping[str, float]] = field(
        default_factory=dict, metadata={"help": "step 3's η by fit method, then edit type"}
    )

    def fit_value(self, name: str, given: Any, fallback: Any) -> Any:
        """``given`` if set, else this model's default, else ``fallback`` (FitConfig's)."""
        if given is not None:
            return given
        return self.fit.get(name, fallback)

    def eta_for(self, method: str, edit_type: str) -> float:
        """The η an edit of ``edit_type`` fitted by ``method`` gets when none is given."""
        return float(self.eta.get(method, {}).get(edit_type, DEFAULT_ETA))


def model_defaults(model: str | None) -> ModelDefaults:
    name = str(model or DEFAULT_BACKBONE)
    if name == "mini":
        return ModelDefaults(
            clap="mini", preset="mini", fit=MINI_FIT, tune_lr=MINI_TUNE_LR, sample=MINI_SAMPLE, eta=MINI_ETA
        )
    if name in TOY_MODELS:  # random weights: a few steps exercise every stage
        return ModelDefaults(clap="tiny", preset="tiny", fit=TOY_FIT)
    return ModelDefaults(clap=DEFAULT_CLAP, preset="model")


def fit_config(
    model: str | None,
    *,
    method: str | None = None,
    embed_steps: int | None = None,
    embed_lr: float | None = None,
    tune_steps: int | None = None,
    tune_lr: float | None = None,
    **fields: Any,
) -> FitConfig:
    """The fit of ``model``: each setting given, else the model's default, else FitConfig's.

    ``fields`` are the other :class:`~nrt.fit.FitConfig` fields, which do not depend on the model.
    """
    from .settings import FitConfig

    d, base = model_defaults(model), FitConfig()
    method = method or base.method
    return FitConfig(
        method=method,
        embed_steps=d.fit_value("embed_steps", embed_steps, base.embed_steps),
        embed_lr=d.fit_value("embed_lr", embed_lr, base.embed_lr),
        tune_steps=d.fit_value("tune_steps", tune_steps, base.tune_steps),
        tune_lr=tune_lr if tune_lr is not None else d.tune_lr.get(method),
        **fields,
    )


def sample_config(
    model: str | None,
    *,
    start: str | None = None,
    t_start: float | None = None,
    keep_db: float | None = None,
    **fields: Any,
) -> SampleConfig:
    """Step 3's settings for ``model``: ``start``, ``t_start`` and ``keep_db`` as given, else the
    model's default, else SampleConfig's; ``fields`` (steps, guidance, scheduler) do not depend on
    the model."""
    from .settings import SampleConfig

    d, base = model_defaults(model), SampleConfig()
    return SampleConfig(
        start=start if start is not None else d.sample.get("start", base.start),
        t_start=t_start if t_start is not None else d.sample.get("t_start", base.t_start),
        keep_db=keep_db if keep_db is not None else d.sample.get("keep_db", base.keep_db),
        **fields,
    )


__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_ETA",
    "MINI_ETA",
    "MINI_FIT",
    "MINI_SAMPLE",
    "MINI_TUNE_LR",
    "ModelDefaults",
    "fit_config",
    "model_defaults",
    "sample_config",
]
