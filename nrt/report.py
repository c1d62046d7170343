"""What ``nrt eval`` shows: the table laid out like the paper's Table 1, and Figures 2 and 4.

Every cell is the mean over clips with a 95 % interval of that mean (Student t over the clips;
a clip with several seeds counts once, with its mean over seeds). The spread over seeds is in
``table.csv`` and ``results.json`` (``seed_sd``: the standard deviation over seeds, averaged
over clips). Files are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .clap_notes import describe_clap
from .errors import NrtError
from .files import atomic_file, write_json, write_text
from .spectrogram import log_mel

if TYPE_CHECKING:
    from .evaluate import EvalConfig

logger = logging.getLogger(__name__)

CLAP_METRICS = ("sum", "text", "audio", "onset_f1", "text_filled")
REFERENCE_METRICS = ("ref_gain", "ref_codec_gain", "ref_logmel_l1", "ref_clap", "ref_onset_f1")  # with references
METRICS = CLAP_METRICS + REFERENCE_METRICS
METRIC_TITLES = {
    "sum": "Sum",
    "text": "Text",
    "audio": "Audio",
    "onset_f1": "Onset F1",
    "text_filled": "Text (filled)",
    "ref_gain": "Ref. gain",
    "ref_codec_gain": "Ref. gain (codec)",
    "ref_logmel_l1": "Ref. L1 (dB)",
    "ref_clap": "Ref. CLAP",
    "ref_onset_f1": "Ref. onset F1",
}
EDIT_TYPE_ORDER = ("addition", "inpainting", "style_transfer")  # Table 1's order
EDIT_TYPE_TITLES = {"addition": "Addition", "inpainting": "Inpainting", "style_transfer": "Style transfer"}
METHOD_TITLES = {
    "full": "Ours",
    "lora": "Ours (LoRA)",
    "full-input": "Ours, from the input",
    "lora-input": "Ours (LoRA), from the input",
    "full-inversion": "Ours, from its inversion",
    "lora-inversion": "Ours (LoRA), from its inversion",
    "sdedit": "SDEdit",
    "ddpm-inversion": "DDPM inversion",
}
VALUE_NAMES = {"sdedit": "strength", "ddpm-inversion": "t_start"}  # else η
ETA_METHODS = ("full", "lora", "full-input", "lora-input", "full-inversion", "lora-inversion")
MATPLOTLIB_HINT = "the figures need matplotlib: pip install 'nrt[eval]' (or pip install matplotlib)"


# -- files ---------------------------------------------------------------------------------------
def _replace_with(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_file(path, write)


# -- numbers -------------------------------------------------------------------------------------
def interval(values: Sequence[float], level: float = 0.95) -> dict[str, float | int | None]:
    """Mean and the ``level`` Student-t interval of the mean; no interval from fewer than two values."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": n}
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def _per_seed(clip: dict[str, Any], method: str, value: float | None) -> list[dict[str, float]]:
    return [o for o in clip["outputs"] if o["method"] == method and o["value"] == value]


def _pipelines(config: EvalConfig) -> list[tuple[str, str, str]]:
    """(method, selection, title) of every row of an edit type, in the order shown."""
    rows = [
        ("input", "reference", "Input (unchanged)"),
        ("t2a", "reference", "Text-to-audio"),
        ("fill", "reference", "Base model fills the gap"),
    ]
    for method in ("sdedit", "ddpm-inversion", *ETA_METHODS):
        if method not in config.methods:
            continue
        title, name = METHOD_TITLES[method], VALUE_NAMES.get(method, "η")
        if method in ETA_METHODS:
            rows.append((method, "eta0", f"{title}, η = 0"))
        rows.append((method, "oracle", f"{title}, oracle {name}"))
        rows.append((method, "fixed", f"{title}, fixed {name}"))
    return rows


def _chosen(clip: dict[str, Any], method: str, selection: str) -> float | None:
    if selection == "reference":
        return None
    if selection == "eta0":
        return 0.0
    return clip["methods"][method][selection]


def build_table(results: dict[str, Any], config: EvalConfig) -> list[dict[str, Any]]:
    """Rows of edit type x pipeline with every metric's mean, interval and seed spread."""
    clips = results["clips"]
    present = {c["edit_type"] for c in clips}
    edit_types = [t for t in EDIT_TYPE_ORDER if t in present] + sorted(present - set(EDIT_TYPE_ORDER))
    table = []
    for edit_type in edit_types:
        group = [c for c in clips if c["edit_type"] == edit_type]
        for method, selection, title in _pipelines(config):
            per_clip: dict[str, list[float]] = {m: [] for m in METRICS}
            seed_sd: dict[str, list[float]] = {m: [] for m in METRICS}
            chosen: list[float | None] = []
            seeds: set[float | None] = set()
            for clip in group:
                value = _chosen(clip, method, selection)
                if selection != "reference" and value is None:
                    continue  # no fixed value could be chosen for this clip
                outs = _per_seed(clip, method, value)
                if not outs:
                    continue
                chosen.append(value)
                seeds.update(o["seed"] for o in outs)
                for metric in METRICS:
                    got = [o[metric] for o in outs if isinstance(o.get(metric), (int, float))]  # null: undefined
                    if got:
                        per_clip[metric].append(float(np.mean(got)))
                        if len(got) > 1:
                            seed_sd[metric].append(float(np.std(got, ddof=1)))
            if not chosen:
                continue  # e.g. the fill row of an edit type without gaps
            known = [v for v in chosen if v is not None]  # none for the reference rows
            row = {
                "edit_type": edit_type,
                "pipeline": title,
                "method": method,
                "selection": selection,
                "n_clips": len(chosen),
                "n_seeds": len(seeds - {None}) or None,
                "value_mean": float(np.mean(known)) if known else None,
                "value_min": min(known) if known else None,
                "value_max": max(known) if known else None,
            }
            for metric in METRICS:
                stats = interval(per_clip[metric])
                stats["seed_sd"] = float(np.mean(seed_sd[metric])) if seed_sd[metric] else None
                row[metric] = stats
            table.append(row)
    return table


def build_curves(results: dict[str, Any], config: EvalConfig) -> dict[str, Any]:
    """Figure 4's data: per edit type and fitted method, Text and Audio CLAP against η over clips."""
    curves: dict[str, Any] = {}
    for edit_type in dict.fromkeys(c["edit_type"] for c in results["clips"]):
        curves[edit_type] = {}
        group = [c for c in results["clips"] if c["edit_type"] == edit_type]
        for method in (m for m in ETA_METHODS if m in config.methods):
            points = []
            for eta in config.etas:
                rows = [v for c in group for v in c["methods"][method]["values"] if v["value"] == eta]
                points.append(
                    {
                        "eta": eta,
                        **{
                            k: interval([r[k] for r in rows if k in r])
                            for k in ("text", "audio", "sum", "ref_gain", "ref_codec_gain")
                        },
                    }
                )
            curves[edit_type][method] = points
    return curves


# -- text ----------------------------------------------------------------------------------------
def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "–"
    if stats["lo"] is None:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} [{stats['lo']:.3f}, {stats['hi']:.3f}]"


def _value_cell(row: dict[str, Any]) -> str:
    if row["value_mean"] is None:
        return "–"
    if row["value_min"] == row["value_max"]:
        return f"{row['value_mean']:.2f}"
    return f"{row['value_mean']:.2f} ({row['value_min']:.2f}-{row['value_max']:.2f})"


def caveats(results: dict[str, Any], config: EvalConfig) -> list[str]:
    """What a reader must know before comparing these numbers with anything."""
    rate = results["settings"].get("band_limit_rate")
    band = f"{rate} Hz, content up to {rate // 2} Hz" if rate else "the backbone's rate"
    holdout = config.fixed_eta_holdout
    fixed = (
        f"one value per edit type and method, chosen on the clips of {holdout} (a separate run)"
        if holdout
        else "one value per edit type and method, chosen on the other clips of that edit type (leave one out; "
        "where an edit type has a single clip, on the clips of the other types), so no clip picks its own value"
    )
    return [
        describe_clap(config.clap),
        (
            "Audio CLAP compares each output with the input as the backbone can represent it: both pass "
            f"through the backbone's sample rate ({band}) before CLAP, so a backbone that cannot produce "
            "higher frequencies is not penalised for it twice."
        ),
        f"Oracle: per clip, the value with the best CLAP sum (the paper's choice in Table 1). Fixed: {fixed}.",
        (
            "Inpainting keeps the input outside the gap exactly, which inflates Audio CLAP (and onset F1); "
            "'Text (filled)' is the Text CLAP of the filled region alone."
        ),
        f"Onset F1: onsets of the output matched one to one to the input's within {config.onset_tolerance * 1000:g} ms.",
        (
            "Cells: mean over clips [95 % interval of the mean, Student t; a clip with several seeds counts "
            "once, with its seed mean]; n = clips. Seed spread: seed_sd in table.csv."
        ),
    ]


def render_markdown(results: dict[str, Any], table: list[dict[str, Any]], config: EvalConfig) -> str:
    settings = results["settings"]
    clips = results["clips"]
    counts = ", ".join(
        f"{t} {sum(c['edit_type'] == t for c in clips)}" for t in dict.fromkeys(c["edit_type"] for c in clips)
    )
    sample = settings["sample"]
    lines = [
        f"# nrt eval: {Path(results['manifest']).name if results.get('manifest') else 'clips'}",
        "",
        f"{len(clips)} clip{'s' if len(clips) != 1 else ''} ({counts}); backbone `{config.model}`; CLAP `{config.clap}`; "
        f"{sample['steps']} sampling steps ({sample['scheduler']}), guidance {sample['guidance']:g}; "
        f"seeds {', '.join(map(str, config.seeds))}; η grid {', '.join(f'{v:g}' for v in config.etas)}"
        + (f"; SDEdit strengths {', '.join(f'{v:g}' for v in config.strengths)}" if "sdedit" in config.methods else "")
        + ".",
        "",
    ]
    lines += [f"- {text}" for text in caveats(results, config)]
    metrics = shown_metrics(table)
    lines += [
        "",
        "| Edit type | Pipeline | value | n | " + " | ".join(METRIC_TITLES[m] for m in metrics) + " |",
        "|---|---|---|---|" + "---|" * len(metrics),
    ]
    last = None
    for row in table:
        title = EDIT_TYPE_TITLES.get(row["edit_type"], row["edit_type"]) if row["edit_type"] != last else ""
        last = row["edit_type"]
        lines.append(
            "| "
            + " | ".join(
                [
                    title,
                    row["pipeline"],
                    _value_cell(row),
                    str(row["n_clips"]),
                    *(_cell(row[m]) for m in metrics),
                ]
            )
            + " |"
        )
    fit_times = {
        m: [c["fit_seconds"][m] for c in clips if c.get("fit_seconds", {}).get(m) is not None]
        for m in ("full", "lora")
        if m in config.methods
    }
    agreement = results.get("objective_agreement", {})
    codec_agreement = results.get("objective_agreement_codec", {})
    if agreement or codec_agreement:
        lines += [
            "",
            "Does the sweep's objective pick good edits? Spearman's ρ between the CLAP sum and the reference "
            "gain over each clip's grid (mean over clips [95 % interval]; 1: the sum ranks the settings as the "
            "reference does, 0: unrelated, < 0: reversed), and with the codec gain:",
            "",
        ]
        none = interval([])
        for t in dict.fromkeys([*agreement, *codec_agreement]):
            for m in dict.fromkeys([*agreement.get(t, {}), *codec_agreement.get(t, {})]):
                plain, codec = agreement.get(t, {}).get(m, none), codec_agreement.get(t, {}).get(m, none)
                lines.append(
                    f"- {EDIT_TYPE_TITLES.get(t, t)}, {METHOD_TITLES[m]}: {_cell(plain)} (n = {plain['n']}); "
                    f"codec gain {_cell(codec)} (n = {codec['n']})"
                )
    if any(fit_times.values()):
        lines += [
            "",
            "Fit time per clip (steps 1 and 2): "
            + "; ".join(f"{METHOD_TITLES[m]} {np.mean(t):.1f} s" for m, t in fit_times.items() if t)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def shown_metrics(table: list[dict[str, Any]]) -> tuple[str, ...]:
    """The CLAP metrics always; the reference metrics where some clip has a reference."""
    with_reference = any(row[m]["n"] for row in table for m in REFERENCE_METRICS)
    return METRICS if with_reference else CLAP_METRICS


def objective_agreement(results: dict[str, Any], config: EvalConfig, key: str = "objective_spearman") -> dict[str, Any]:
    """Per edit type and method, the mean over clips of the CLAP sum's Spearman ρ with the reference gain.

    ``key``: ``objective_spearman`` (the reference gain) or ``objective_spearman_codec`` (the codec gain).
    """
    out: dict[str, Any] = {}
    for clip in results["clips"]:
        for method, entry in clip["methods"].items():
            rho = entry.get(key)
            if rho is not None:
                out.setdefault(clip["edit_type"], {}).setdefault(method, []).append(rho)
    return {t: {m: interval(v) for m, v in methods.items()} for t, methods in out.items()}


def render_csv(table: list[dict[str, Any]]) -> str:
    columns = [
        "edit_type",
        "pipeline",
        "method",
        "selection",
        "n_clips",
        "n_seeds",
        "value_mean",
        "value_min",
        "value_max",
    ]
    columns += [f"{m}_{s}" for m in METRICS for s in ("mean", "lo", "hi", "seed_sd")]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        flat = {k: row[k] for k in columns[:9]}
        for metric in METRICS:
            for stat in ("mean", "lo", "hi", "seed_sd"):
                flat[f"{metric}_{stat}"] = row[metric][stat]
        writer.writerow({k: "" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for k, v in flat.items()})
    return buffer.getvalue()


# -- figures -------------------------------------------------------------------------------------
def check_figures() -> None:
    """Fail before any work, with the install hint, if the figures cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise NrtError(MATPLOTLIB_HINT) from None


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NrtError(MATPLOTLIB_HINT) from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # the Agg canvas, without touching pyplot's global backend
    return figure


def _save_png(figure, path: Path) -> Path:
    return _replace_with(path, lambda tmp: figure.savefig(tmp, format="png"))


def plot_eta_curves(curves: dict[str, Any], path: Path, note: str) -> Path:
    """Figure 4: η against Text and Audio CLAP per edit type, mean over clips with its interval."""
    edit_types = [t for t in EDIT_TYPE_ORDER if t in curves] + sorted(set(curves) - set(EDIT_TYPE_ORDER))
    figure = _figure(4.2 * max(1, len(edit_types)), 3.6)
    axes = figure.subplots(1, max(1, len(edit_types)), squeeze=False)[0]
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    colors = dict(zip(ETA_METHODS, palette))
    markers = dict(zip(ETA_METHODS, "osd^v<"))  # distinct, so coinciding curves stay visible
    for ax, edit_type in zip(axes, edit_types):
        n = 0
        for method, points in curves[edit_type].items():
            etas = [p["eta"] for p in points]
            for metric, style in (("text", "-"), ("audio", "--")):
                mean = np.array([np.nan if p[metric]["mean"] is None else p[metric]["mean"] for p in points])
                ax.plot(
                    etas,
                    mean,
                    style,
                    marker=markers[method],
                    color=colors[method],
                    fillstyle="none",
                    label=f"{METHOD_TITLES[method]}: {'Text' if metric == 'text' else 'Audio'} CLAP",
                )
                lo = np.array([np.nan if p[metric]["lo"] is None else p[metric]["lo"] for p in points])
                hi = np.array([np.nan if p[metric]["hi"] is None else p[metric]["hi"] for p in points])
                if np.isfinite(lo).any():
                    ax.fill_between(etas, lo, hi, color=colors[method], alpha=0.15, linewidth=0)
                n = max(n, max((p[metric]["n"] for p in points), default=0))
        ax.set_title(f"{EDIT_TYPE_TITLES.get(edit_type, edit_type)} (n = {n})")
        ax.set_xlabel("η")
        ax.set_ylabel("CLAP score")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.text(0.5, 0.01, note, ha="center", fontsize=7, wrap=True)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return _save_png(figure, path)


def plot_reference_gain(curves: dict[str, Any], path: Path) -> Path:
    """Reference gain against η per fitted method and start, mean over clips with its interval."""
    edit_types = [t for t in EDIT_TYPE_ORDER if t in curves] + sorted(set(curves) - set(EDIT_TYPE_ORDER))
    figure = _figure(4.2 * max(1, len(edit_types)), 3.6)
    axes = figure.subplots(1, max(1, len(edit_types)), squeeze=False)[0]
    for ax, edit_type in zip(axes, edit_types):
        for i, (method, points) in enumerate(curves[edit_type].items()):
            etas = [p["eta"] for p in points]
            stats = [p["ref_gain"] for p in points]
            mean = np.array([np.nan if p["mean"] is None else p["mean"] for p in stats])
            line = ax.plot(etas, mean, marker="osd^v<>"[i % 7], fillstyle="none", label=METHOD_TITLES[method])[0]
            lo = np.array([np.nan if p["lo"] is None else p["lo"] for p in stats])
            hi = np.array([np.nan if p["hi"] is None else p["hi"] for p in stats])
            if np.isfinite(lo).any():
                ax.fill_between(etas, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
        ax.axhline(0.0, color="gray", linewidth=0.8, linestyle=":")
        ax.set_title(EDIT_TYPE_TITLES.get(edit_type, edit_type))
        ax.set_xlabel("η")
        ax.set_ylabel("reference gain (1: codec bound, 0: the input)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return _save_png(figure, path)


def _log_mel(samples: np.ndarray, rate: int) -> np.ndarray:
    return log_mel(samples.mean(axis=1) if samples.ndim == 2 else samples, rate)


def figure_clip(results: dict[str, Any], config: EvalConfig) -> dict[str, Any]:
    """The clip of Figure 2: the one asked for, else the first style transfer, else the first clip."""
    clips = results["clips"]
    if config.figure_clip:
        return next(c for c in clips if c["id"] == config.figure_clip)
    return next((c for c in clips if c["edit_type"] == "style_transfer"), clips[0])


def plot_spectrograms(results: dict[str, Any], config: EvalConfig, root: Path, path: Path) -> Path:
    """Figure 2: for one clip, the input, then SDEdit and ours across edit strengths (first seed)."""
    import soundfile as sf

    clip = figure_clip(results, config)
    seed = config.seeds[0]
    rows: list[tuple[str, list[tuple[str, Path]]]] = [("Input", [("", root / "audio" / clip["id"] / "input.wav")])]
    for method in (m for m in ("sdedit", "full", "lora") if m in config.methods):
        cells = []
        for value in config.values(method):
            out = next(
                o for o in clip["outputs"] if o["method"] == method and o["value"] == value and o["seed"] == seed
            )
            label = f"{'s' if method == 'sdedit' else 'η'} = {value:g}"
            cells.append((label, root / out["file"]))
        rows.append((METHOD_TITLES[method], cells))
    columns = max(len(cells) for _, cells in rows)
    figure = _figure(2.3 * columns, 1.9 * len(rows) + 0.6)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    floor = None
    for r, (title, cells) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(cells):
                ax.axis("off")
                continue
            label, file = cells[c]
            samples, rate = sf.read(file, dtype="float32", always_2d=True)
            spec = _log_mel(samples, rate)
            if floor is None:  # one colour scale for every panel, set by the input
                top = float(spec.max())
                floor = (top - 80.0, top)
            ax.imshow(
                spec,
                origin="lower",
                aspect="auto",
                cmap="magma",
                vmin=floor[0],
                vmax=floor[1],
                extent=(0, samples.shape[0] / rate, 0, spec.shape[0]),
            )
            ax.set_title(f"{title} {label}".strip(), fontsize=8)
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            if r == len(rows) - 1 or c >= len(rows[r + 1][1]):
                ax.set_xlabel("time (s)", fontsize=7)
    figure.suptitle(f'{clip["id"]} ({clip["edit_type"]}): "{clip["target_prompt"]}"', fontsize=9)
    figure.tight_layout()
    return _save_png(figure, path)


# -- all of it -----------------------------------------------------------------------------------
def write_reports(results: dict[str, Any], root: Path, config: EvalConfig) -> dict[str, Any]:
    """Add the table and curves to ``results`` and write results.json, table.md/csv and the figures."""
    table = build_table(results, config)
    curves = build_curves(results, config)
    results = {
        **results,
        "caveats": caveats(results, config),
        "table": table,
        "curves": curves,
        "objective_agreement": objective_agreement(results, config),
        "objective_agreement_codec": objective_agreement(results, config, "objective_spearman_codec"),
    }
    files = [
        write_text(root / "table.md", render_markdown(results, table, config)),
        write_text(root / "table.csv", render_csv(table)),
    ]
    if any(m in config.methods for m in ETA_METHODS):  # Figure 4 is about η
        files.append(plot_eta_curves(curves, root / "eta_curves.png", caveats(results, config)[0]))
        if any(p["ref_gain"]["n"] for t in curves.values() for points in t.values() for p in points):
            files.append(plot_reference_gain(curves, root / "reference_gain.png"))
    files.append(plot_spectrograms(results, config, root, root / "spectrograms.png"))
    files.append(root / "results.json")
    results["files"] = [p.name for p in files]
    write_json(root / "results.json", results)
    logger.info("wrote %s", ", ".join(results["files"]))
    return results


__all__ = [
    "build_curves",
    "build_table",
    "interval",
    "render_csv",
    "render_markdown",
    "write_reports",
]
