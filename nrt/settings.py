"""The settings of a fit (steps 1 and 2) and of a sampling (step 3), and the checks of their values.

Plain data, without torch or diffusers: the sweep's driver, its clip drivers, the service's
schemas and the command line build and check settings without loading the models' stack.
:mod:`nrt.fit`, :mod:`nrt.sample` and :mod:`nrt.edit` use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InputError

METHODS = ("full", "lora")
# The paper's 1e-6 is for the full fine-tune. LoRA's B matrix starts at zero, so the same
# rate would leave a LoRA fit where it began; 3e-4 is the rate at which LoRA lowered the
# probe loss as much per step as the full fine-tune at 1e-6 (benchmarks/tune_lr.py, README).
DEFAULT_TUNE_LR = {"full": 1e-6, "lora": 3e-4}
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class FitConfig:
    """Settings of steps 1 and 2. Field names are the CLI's flags and the sweep's parameters."""

    method: str = field(default="lora", metadata={"help": "step 2: 'full' fine-tune or 'lora' adapters"})
    embed_steps: int = field(default=500, metadata={"help": "step 1 optimisation steps"})
    embed_lr: float = field(default=2e-3, metadata={"help": "step 1 Adam learning rate"})
    tune_steps: int = field(default=1500, metadata={"help": "step 2 optimisation steps"})
    tune_lr: float | None = field(
        default=None, metadata={"help": "step 2 Adam learning rate (None: 1e-6 full, 3e-4 LoRA)"}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (None: equal to the rank)"})
    lora_targets: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS, metadata={"help": "UNet modules LoRA adapts"})
    batch_size: int = field(default=1, metadata={"help": "(timestep, noise) draws per optimisation step"})
    seed: int = field(default=0, metadata={"help": "seed of the timestep and noise draws"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory in step 2"})
    # Speed settings: off by default on every device until benchmarks/gpu_edit.py has measured
    # them on a GPU; the CUDA defaults will be chosen from that measurement.
    compile_unet: bool = field(default=False, metadata={"help": "run the UNet through torch.compile in steps 1 and 2"})
    fused_adam: bool = field(default=False, metadata={"help": "PyTorch's fused Adam in steps 1 and 2"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("embed_steps", "tune_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in ("embed_lr", "tune_lr"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise InputError(f"{name} must lie in (0, 1), got {value!r}")
        if not 1 <= self.lora_rank <= 1024:
            raise InputError(f"lora_rank must lie in 1-1024, got {self.lora_rank}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"seed must lie in 0 to 2^32-1, got {self.seed}")
        self.lora_targets = tuple(self.lora_targets)

    @property
    def resolved_tune_lr(self) -> float:
        return self.tune_lr if self.tune_lr is not None else DEFAULT_TUNE_LR[self.method]

    @property
    def lora(self) -> dict[str, Any]:
        alpha = self.lora_alpha if self.lora_alpha is not None else float(self.lora_rank)
        return {"rank": self.lora_rank, "alpha": alpha, "targets": list(self.lora_targets)}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_targets"] = list(self.lora_targets)
        data["tune_lr"] = self.resolved_tune_lr
        return data


SCHEDULER_KINDS = ("ddpm", "ddim")
STARTS = ("noise", "input", "inversion")
MAX_SEED = 2**32 - 1


@dataclass
class SampleConfig:
    """Settings of the reverse diffusion. Field names are the CLI's flags and the HTTP fields."""

    steps: int = field(default=200, metadata={"help": "diffusion steps T (1-1000)"})
    guidance: float = field(default=3.0, metadata={"help": "classifier-free guidance scale (0-20)"})
    scheduler: str = field(default="ddpm", metadata={"help": "'ddpm' or 'ddim'"})
    start: str = field(default="noise", metadata={"help": "where step 3 starts: 'noise', 'input' or 'inversion'"})
    t_start: float = field(
        default=0.6,
        metadata={"help": "fraction of the schedule run from the input, in (0, 1] (starts input and inversion)"},
    )
    keep_db: float = field(
        default=0.0,
        metadata={
            "help": "keep the recording where the edit is within about this many dB of the codec's "
            "round trip of it (nrt.keep); 0: off, the edit as decoded"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise InputError(f"steps must be a whole number in 1-1000, got {self.steps!r}")
        if not 0 <= float(self.guidance) <= 20:
            raise InputError(f"guidance must lie in 0-20, got {self.guidance!r}")
        if self.scheduler not in SCHEDULER_KINDS:
            raise InputError(f"scheduler must be one of {', '.join(SCHEDULER_KINDS)}, got {self.scheduler!r}")
        if self.start not in STARTS:
            raise InputError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        check_t_start(self.t_start)
        from .keep import check_keep_db

        self.keep_db = check_keep_db(self.keep_db)


def check_t_start(value: float) -> float:
    """``t_start`` as a float in (0, 1]; InputError otherwise."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0.0 < value <= 1.0:
        raise InputError(f"t_start must lie in (0, 1], got {value!r}")
    return float(value)


def start_index(steps: int, t_start: float) -> int:
    """The index into a schedule of ``steps`` where a start at ``t_start`` begins."""
    return min(int(round(steps * (1 - check_t_start(t_start)))), steps - 1)


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be a whole number in 0 to 2^32-1, got {seed!r}")
    return seed


def check_fractions(values: Sequence[float], name: str, allow_zero: bool = True) -> list[float]:
    """Numbers in [0, 1] (or (0, 1] without ``allow_zero``), at least one; InputError otherwise."""
    if not values:
        raise InputError(f"give at least one {name}")
    bracket = "[" if allow_zero else "("
    checked = []
    for value in values:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        in_range = number and (0.0 <= value <= 1.0 if allow_zero else 0.0 < value <= 1.0)
        if not in_range:
            raise InputError(f"{name} must lie in {bracket}0, 1], got {value!r}")
        checked.append(float(value))
    return checked


def check_etas(etas: Sequence[float]) -> list[float]:
    return check_fractions(etas, "eta")
