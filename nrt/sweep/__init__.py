"""The sweep: per clip, fit once per fit setting, then search η with t_start, the start, steps and
guidance with Optuna under Ray Tune, scored by the CLAP sum; the best of each clip goes to the
registry.

``python tune/sweep.py`` is the command line; :func:`run_sweep` the same from Python;
:func:`submit_clip` starts one clip's sweep on a running Ray (the service's uploads use it).
"""

from .clips import ClipJob, ManifestClip, check_rows, read_clips, stage_clip
from .config import (
    PRESETS,
    SEARCHED,
    SETTINGS,
    Param,
    Resources,
    SweepConfig,
    complete_settings,
    fit_grid,
    fit_key,
    parse_param,
    preset_fits,
    preset_space,
    sample_config,
)
from .runner import SweepResult, run_sweep
from .search import EDIT_WORK, Work, submit_clip, sweep_clip

__all__ = [
    "EDIT_WORK",
    "PRESETS",
    "SEARCHED",
    "SETTINGS",
    "ClipJob",
    "ManifestClip",
    "Param",
    "Resources",
    "SweepConfig",
    "SweepResult",
    "Work",
    "check_rows",
    "complete_settings",
    "fit_grid",
    "fit_key",
    "parse_param",
    "preset_fits",
    "preset_space",
    "read_clips",
    "run_sweep",
    "sample_config",
    "stage_clip",
    "submit_clip",
    "sweep_clip",
]
