"""Faithful edits on nrt-mini: every start of step 3 against the baselines, by reference gain.

    python benchmarks/mini_faithful.py                                  # defaults below
    python benchmarks/mini_faithful.py --select-per-type 2 --report-per-type 20 --t-starts 0.4 0.7

Two disjoint sets of held-out nrt-mini edit cases (``nrt.mini.scenes.edit_cases``), written with
their references (the target scene, ``nrt.mini.cases``):

1. **selection** (seed 1): ``nrt eval`` with every method at every t_start of ``--t-starts``;
   the start and t_start closest to the references over the edit types are chosen, then per
   method and edit type the setting (η, strength or t_start) closest on average is that
   method's *fixed* setting.
2. **report** (seed 0): ``nrt eval`` with the chosen t_start; every method is reported at its
   fixed setting (chosen on the selection set, never on these cases) and at its per-case
   oracle, the setting closest to the reference (an upper bound), with 95 % intervals over cases, and paired
   differences (ours minus each baseline, case by case, 95 % interval) at the fixed settings.

Settings are chosen by the log-mel L1 distance to the reference (d, at the backbone's rate),
which every case has. Reference gain = (d(input, ref) − d(edit, ref)) / (d(input, ref) −
d(codec(ref), ref)): 1 is as close to the intended result as nrt-mini's codec allows, 0 no
better than returning the input. Cases where the input is already within 0.5 dB of the codec's
bound have no gain (``nrt.reference``) and are left out of the gain's means.

Everything lands in ``--out`` (faithful.json, faithful.md, the eval runs and their figures); a
rerun resumes: ``nrt eval`` skips what is on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nrt.cli import main as nrt_main
from nrt.files import write_json, write_text
from nrt.mini.cases import write_cases
from nrt.mini.scenes import edit_cases
from nrt.report import interval

OURS = ("lora", "lora-input", "lora-inversion", "full", "full-input", "full-inversion")
BASELINES = ("sdedit", "ddpm-inversion")
STARTED = ("lora-input", "lora-inversion", "full-input", "full-inversion")
EDIT_TYPES = ("addition", "style_transfer", "inpainting")


def run_eval(manifest: Path, out: Path, methods: list[str], t_start: float, args: argparse.Namespace) -> dict:
    argv = [
        "eval",
        str(manifest),
        "-o",
        str(out),
        "--model",
        args.model,
        "--methods",
        *methods,
        "--t-start",
        f"{t_start}",
        "--steps",
        str(args.steps),
        "--etas",
        *map(str, args.etas),
        "--strengths",
        *map(str, args.strengths),
        "--t-starts",
        *map(str, args.baseline_t_starts),
    ]
    if args.quiet:
        argv.append("--quiet")
    if args.jobs > 1:
        run_shards(manifest, out, argv, args.jobs)
    code = nrt_main(argv)  # after the shards: only the reports are left to write
    if code != 0:
        raise SystemExit(f"nrt eval failed with exit code {code}")
    return json.loads((out / "results.json").read_text())


def shard_manifests(manifest: Path, jobs: int) -> list[Path]:
    """``jobs`` manifests beside ``manifest`` (so its relative paths hold), rows dealt out in turn."""
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    parts = []
    for i in range(min(jobs, len(rows))):
        part = manifest.with_name(f"{manifest.stem}.part{i + 1}of{jobs}.csv")
        with open(part, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *rows[i::jobs]])
        parts.append(part)
    return parts


def run_shards(manifest: Path, out: Path, argv: list[str], jobs: int) -> None:
    """``nrt eval`` on disjoint parts of the manifest at once, one torch thread each, into ``out``.

    Every clip keeps its record, audio and bundles in a folder of its own, so the parts never
    write the same clip; the pass over the whole manifest that follows finds them all done.
    On nrt-mini two one-thread processes fit about three times as fast as one two-thread process
    on these 2 cores (35 s for two LoRA fits at once, 53 s for one).
    """
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for i, part in enumerate(shard_manifests(manifest, jobs)):
        log = out / f"shard{i + 1}.log"
        command = [sys.executable, "-m", "nrt.cli", "eval", str(part), *argv[2:]]
        with open(log, "w") as f:
            procs.append((log, subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)))
    failed = [str(log) for log, proc in procs if proc.wait() != 0]
    if failed:
        raise SystemExit(f"nrt eval failed on part of {manifest}; see {', '.join(failed)}")


def share_bundles(runs: Path, out: Path) -> None:
    """Every t_start's run reads the fits of one folder: the fit does not depend on t_start."""
    (runs / "bundles").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    link = out / "bundles"
    if not link.exists():
        link.symlink_to(Path("..") / "bundles", target_is_directory=True)


GAIN, CODEC_GAIN, DISTANCE = "ref_gain", "ref_codec_gain", "ref_logmel_l1"
REFERENCE_ROWS = ("input", "t2a", "fill")
KEPT = "+keep"  # "<method>+keep<dB>": the method's outputs merged with the input (nrt.keep) at that dB


def base_method(method: str) -> str:
    """The ``nrt eval`` method of a row: ``lora-inversion+keep10`` is ``lora-inversion``'s outputs, merged."""
    return method.split(KEPT, 1)[0]


def add_kept(results: dict, manifest: Path, root: Path, model: str, keep_dbs: list[float]) -> dict:
    """``results`` with every method's outputs also merged with the input (``<method>+keep<dB>``).

    Each merged output is measured against the reference as ``nrt eval`` measures outputs (log-mel
    distance and gains; no CLAP). Inpainting is not merged (``nrt.edit.keep_recording``): its rows
    are the method's own. What was measured is kept in ``root/keep.json``, keyed by the
    output file's size and time, so a rerun measures only what is new.
    """
    import soundfile as sf

    from nrt.audio import load_audio
    from nrt.backbones import load_backbone
    from nrt.keep import keep_input
    from nrt.manifest import read_manifest
    from nrt.reference import ReferenceYardstick, codec_round_trip

    if not keep_dbs:
        return results
    cache_path = root / "keep.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    references: dict[str, Any] = {}
    backbone = None
    clips = []
    for clip in results["clips"]:
        clip = {**clip, "methods": dict(clip["methods"])}
        if clip.get("mask"):  # the context is the recording already, the gap all edit
            clip["methods"].update({f"{m}{KEPT}{db:g}": e for m, e in clip["methods"].items() for db in keep_dbs})
            clips.append(clip)
            continue
        outputs = [o for o in clip["outputs"] if o.get("seed", 0) in (0, None) and o["method"] not in REFERENCE_ROWS]
        todo = {}
        for o in outputs:
            stat = (root / o["file"]).stat()
            todo[o["file"]] = [f"{o['file']}|{db:g}|{stat.st_size}|{stat.st_mtime_ns}" for db in keep_dbs]
        measured = cache.setdefault(clip["id"], {})
        if any(k not in measured for keys in todo.values() for k in keys):
            if backbone is None:
                backbone = load_backbone(model, device="cpu")
                references = {row.clip_id: row.reference for row in read_manifest(manifest)}
            source = load_audio(clip["audio"])
            mask = [tuple(r) for r in clip["mask"]] if clip.get("mask") else None
            codec = codec_round_trip(backbone, source, mask)
            yardstick = ReferenceYardstick(backbone, None, source, load_audio(references[clip["id"]]), mask=mask)
            for file, keys in todo.items():
                if all(k in measured for k in keys):
                    continue
                edit, _ = sf.read(root / file, dtype="float32", always_2d=True)
                merged = [keep_input(source.samples, edit, codec, source.sample_rate, db) for db in keep_dbs]
                for key, row in zip(keys, yardstick.distances(merged, source.sample_rate)):
                    measured[key] = _finite_only(row)
            write_json(cache_path, cache)
        for method, entry in list(clip["methods"].items()):
            for i, db in enumerate(keep_dbs):
                values = []
                for v in entry["values"]:
                    made = [o for o in outputs if o["method"] == method and o["value"] == v["value"]]
                    if made:
                        row = measured[todo[made[0]["file"]][i]]
                        values.append({"value": v["value"], "in_grid": v["in_grid"], **row})
                clip["methods"][f"{method}{KEPT}{db:g}"] = {"values": values}
        clips.append(clip)
    return {**results, "clips": clips}


def _finite_only(row: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if _finite(v) else None) for k, v in row.items()}


def per_clip(results: dict, method: str, key: str) -> dict[str, dict[float, float]]:
    """Per clip, ``key`` at each value of ``method``'s grid (seed means; undefined values left out).

    The reference rows (input, t2a, fill) have one value, filed under 0.
    """
    table: dict[str, dict[float, float]] = {}
    for clip in results["clips"]:
        if method in REFERENCE_ROWS:
            value = clip["reference"].get(method, {}).get(key)
            if _finite(value):
                table[clip["id"]] = {0.0: float(value)}
            continue
        entry = clip["methods"].get(method)
        if entry is None:
            continue
        row = {v["value"]: float(v[key]) for v in entry["values"] if v["in_grid"] and _finite(v.get(key))}
        if row:
            table[clip["id"]] = row
    return table


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def edit_type_of(results: dict) -> dict[str, str]:
    return {c["id"]: c["edit_type"] for c in results["clips"]}


TIE_DB = 0.05  # mean distances closer than this are a tie, which goes to the stronger edit


def closest_setting(distances: dict[str, dict[float, float]], ids: list[str]) -> tuple[float | None, float | None]:
    """The grid value with the lowest mean distance to the reference over ``ids``, and that mean.

    Values within :data:`TIE_DB` of the lowest mean tie, and the largest of them (the most edit:
    η, strength or t_start) is chosen: where not editing and editing are the same distance from the
    intended result, a default that edits is the useful one.
    """
    rows = [distances[i] for i in ids if i in distances]
    if not rows:
        return None, None
    values = sorted(set.intersection(*(set(r) for r in rows)))
    if not values:
        return None, None
    means = {v: float(np.mean([r[v] for r in rows])) for v in values}
    lowest = min(means.values())
    best = max(v for v in values if means[v] <= lowest + TIE_DB)
    return best, means[best]


def select(runs: dict[float, dict], methods: list[str]) -> dict[str, Any]:
    """The start and t_start, then fixed settings per (method, edit type), on the selection set.

    Chosen by the log-mel distance to the reference, which every case has (the gain is undefined
    where the input is already about as close as the codec's bound). A start's score is the mean
    over edit types of its closest η's mean distance; the best start's t_start is the one every
    start is then run and reported at.
    """
    any_run = next(iter(runs.values()))
    types = edit_type_of(any_run)
    ids_of = {t: [i for i, k in types.items() if k == t] for t in EDIT_TYPES}

    def overall(results: dict, method: str) -> float | None:
        means = [closest_setting(per_clip(results, method, DISTANCE), ids_of[t])[1] for t in EDIT_TYPES]
        known = [m for m in means if m is not None]
        return float(np.mean(known)) if known else None

    ranking = []
    for method in (m for m in methods if base_method(m) in OURS):
        for t_start, results in runs.items() if base_method(method) in STARTED else [(None, any_run)]:
            score = overall(results, method)
            if score is not None:
                ranking.append({"method": method, "t_start": t_start, "mean_distance": score})
    ranking.sort(key=lambda r: r["mean_distance"])
    started = [r for r in ranking if r["t_start"] is not None]
    t_start = started[0]["t_start"] if started else next(iter(runs))
    chosen: dict[str, Any] = {}
    for method in methods:
        results = runs[t_start] if base_method(method) in STARTED else any_run
        chosen[method] = {}
        for edit_type in EDIT_TYPES:
            value, mean = closest_setting(per_clip(results, method, DISTANCE), ids_of[edit_type])
            if value is not None:
                chosen[method][edit_type] = {"value": value, "mean_distance": mean, "n": len(ids_of[edit_type])}
    return {"fixed": chosen, "ranking": ranking, "t_start": t_start}


def defaults(selection: dict[str, Any], best: str) -> dict[str, Any]:
    """nrt-mini's step 3 defaults (``nrt.defaults.MINI_SAMPLE``, ``MINI_ETA``) from the selection set.

    The start is the closest method's; each fit method's η per edit type is that method's fixed η
    with this start. t_start is the one the started methods were chosen at (unused by ``noise``).
    """
    start = base_method(best).partition("-")[2] or "noise"
    kept = best[len(base_method(best)) :]
    eta: dict[str, dict[str, float]] = {}
    for fit in ("lora", "full"):
        method = (fit if start == "noise" else f"{fit}-{start}") + kept
        chosen = selection["fixed"].get(method, {})
        if chosen:
            eta[fit] = {t: chosen[t]["value"] for t in EDIT_TYPES if t in chosen}
    keep_db = float(kept[len(KEPT) :]) if kept else None
    return {"start": start, "t_start": selection["t_start"], "method": best, "eta": eta, "keep_db": keep_db}


def report(results: dict, selection: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """Per edit type and method: gain and distance at the fixed setting and at the per-case oracle."""
    types = edit_type_of(results)
    rows = []
    at_fixed: dict[tuple[str, str, str], dict[str, float]] = {}
    for edit_type in EDIT_TYPES:
        ids = [i for i, t in types.items() if t == edit_type]
        for method in [*REFERENCE_ROWS, *methods]:
            gain, distance = per_clip(results, method, GAIN), per_clip(results, method, DISTANCE)
            codec_gain = per_clip(results, method, CODEC_GAIN)
            have = [i for i in ids if i in distance]
            if not have:
                continue
            if method in REFERENCE_ROWS:
                picks = {i: 0.0 for i in have}
                selections = [("reference", picks)]
            else:
                fixed = selection["fixed"].get(method, {}).get(edit_type)
                oracle = {i: min(distance[i], key=lambda v, i=i: distance[i][v]) for i in have}
                selections = [("oracle (closest)", oracle)]
                if fixed is not None:
                    selections.insert(0, ("fixed", {i: fixed["value"] for i in have if fixed["value"] in distance[i]}))
            for name, picks in selections:
                d = {i: distance[i][v] for i, v in picks.items()}
                g = {i: gain[i][v] for i, v in picks.items() if i in gain and v in gain[i]}
                cg = {i: codec_gain[i][v] for i, v in picks.items() if i in codec_gain and v in codec_gain[i]}
                values = sorted(set(picks.values()))
                rows.append(
                    {
                        "edit_type": edit_type,
                        "method": method,
                        "selection": name,
                        "value": values[0] if len(values) == 1 and name != "reference" else None,
                        "gain": interval(list(g.values())),
                        "codec_gain": interval(list(cg.values())),
                        "distance": interval(list(d.values())),
                    }
                )
                if name in ("fixed", "reference"):
                    at_fixed[(method, edit_type, GAIN)] = g
                    at_fixed[(method, edit_type, CODEC_GAIN)] = cg
                    at_fixed[(method, edit_type, DISTANCE)] = d
    paired = []
    for edit_type in EDIT_TYPES:
        for ours in (m for m in methods if base_method(m) in OURS):
            kept = ours[len(base_method(ours)) :]  # each baseline with the same merge, then the references
            for other in [*(b + kept for b in BASELINES), "fill", "input", "t2a"]:
                entry: dict[str, Any] = {"edit_type": edit_type, "ours": ours, "other": other}
                for key, sign in ((GAIN, 1.0), (CODEC_GAIN, 1.0), (DISTANCE, -1.0)):  # all: > 0 means ours is closer
                    a, b = at_fixed.get((ours, edit_type, key)), at_fixed.get((other, edit_type, key))
                    both = sorted(set(a or {}) & set(b or {}))
                    entry[key] = interval([sign * (a[i] - b[i]) for i in both]) if a and b else interval([])
                if entry[DISTANCE]["n"]:
                    paired.append(entry)
    return {"rows": rows, "paired": paired}


def reproduction(
    results: dict, root: Path, model: str, methods: list[str], keep_db: float = 0.0
) -> list[dict[str, Any]]:
    """Does the inversion start at η = 0 give the input back? Per edit type and inversion method.

    Onset F1 of the η = 0 output against the input, and against the codec's round trip of the
    input (what the latent, returned exactly, decodes to), beside the round trip's own F1 against
    the input; and the log-mel distance from the η = 0 output to the round trip. With ``keep_db``,
    also the F1 against the input of the output merged with the recording at that dB, as
    ``nrt edit`` returns it at nrt-mini's defaults. Inpainting regenerates its gap from noise
    whatever the start (and is not merged), so it is listed but not expected to match.
    """
    import soundfile as sf

    from nrt.audio import load_audio
    from nrt.backbones import load_backbone
    from nrt.keep import keep_input
    from nrt.onsets import onset_f1
    from nrt.reference import codec_round_trip

    inversions = [m for m in methods if m.endswith("-inversion") and m in OURS]
    if not inversions:
        return []
    backbone = load_backbone(model, device="cpu")
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    for clip in results["clips"]:
        source = load_audio(clip["audio"])
        rate = source.sample_rate
        codec = codec_round_trip(backbone, source)
        codec_f1 = onset_f1(source.samples, rate, codec, rate).f1

        for method in inversions:
            made = [o for o in clip["outputs"] if o["method"] == method and o["value"] == 0.0]
            if not made:
                continue
            output, _ = sf.read(root / made[0]["file"], dtype="float32", always_2d=True)
            empty: dict[str, list[float]] = {"input": [], "codec": [], "codec_self": [], "dist": [], "kept": []}
            row = rows.setdefault((clip["edit_type"], method), empty)
            row["input"].append(onset_f1(source.samples, rate, output, rate).f1)
            if keep_db and not clip.get("mask"):
                kept = keep_input(source.samples, output, codec, rate, keep_db)
                row["kept"].append(onset_f1(source.samples, rate, kept, rate).f1)
            row["codec"].append(onset_f1(codec, rate, output, rate).f1)
            row["codec_self"].append(codec_f1)
            row["dist"].append(float(np.abs(_mel(output, rate) - _mel(codec, rate)).mean()))
    table = []
    for (edit_type, method), row in sorted(rows.items(), key=lambda kv: (EDIT_TYPES.index(kv[0][0]), kv[0][1])):
        kept = (
            {
                "keep_db": keep_db,
                "f1_kept_min": min(row["kept"]),
                "kept_at_least_095": sum(f >= 0.95 for f in row["kept"]),
            }
            if row["kept"]
            else {}
        )
        table.append(
            {
                "edit_type": edit_type,
                "method": method,
                "n": len(row["input"]),
                "f1_input_min": min(row["input"]),
                "f1_input_mean": float(np.mean(row["input"])),
                "input_at_least_095": sum(f >= 0.95 for f in row["input"]),
                "f1_codec_min": min(row["codec"]),
                "f1_codec_mean": float(np.mean(row["codec"])),
                "codec_at_least_095": sum(f >= 0.95 for f in row["codec"]),
                "codec_self_f1_mean": float(np.mean(row["codec_self"])),
                "codec_self_at_least_095": sum(f >= 0.95 for f in row["codec_self"]),
                "logmel_to_codec_max": max(row["dist"]),
                **kept,
            }
        )
    return table


def plot_gain(
    results: dict, selection: dict[str, Any], keep_db: float | None, path: Path, label: str = "report set"
) -> Path:
    """Reference gain against η per start (LoRA and full, as decoded and merged at ``keep_db``), per
    edit type, mean over the cases where it is defined; the baselines at their fixed settings as
    horizontal lines, and 0 (the input) dotted."""
    from nrt.report import _figure, _save_png

    types = edit_type_of(results)
    figure = _figure(4.6 * len(EDIT_TYPES), 4.0)
    axes = figure.subplots(1, len(EDIT_TYPES), squeeze=False)[0]
    suffixes = ["", f"{KEPT}{keep_db:g}"] if keep_db else [""]
    for ax, edit_type in zip(axes, EDIT_TYPES):
        ids = [i for i, t in types.items() if t == edit_type]
        for k, method in enumerate(OURS):
            for suffix in suffixes:
                gain = per_clip(results, method + suffix, GAIN)
                rows = [gain[i] for i in ids if i in gain]
                if not rows:
                    continue
                etas = sorted(set().union(*rows))
                means = [np.mean([r[e] for r in rows if e in r]) if any(e in r for r in rows) else np.nan for e in etas]
                style = "-" if suffix else ":"  # merged solid, as decoded dotted, one colour per method
                ax.plot(etas, means, style, color=f"C{k}", marker="o", fillstyle="none", label=method + suffix)
        for i, baseline in enumerate(b + s for b in BASELINES for s in suffixes):
            fixed = selection["fixed"].get(baseline, {}).get(edit_type)
            gain = per_clip(results, baseline, GAIN)
            if fixed is None:
                continue
            values = [gain[c][fixed["value"]] for c in ids if c in gain and fixed["value"] in gain[c]]
            if values:
                ax.axhline(
                    float(np.mean(values)),
                    color=f"C{6 + i % 4}",
                    linestyle="--",
                    linewidth=1,
                    label=f"{baseline} at {fixed['value']:g}",
                )
        ax.axhline(0.0, color="gray", linewidth=0.8, linestyle=":")
        ax.set_title(f"{edit_type.replace('_', ' ')} ({label})")
        ax.set_xlabel("η")
        ax.set_ylabel("reference gain (1: codec bound, 0: the input)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    return _save_png(figure, path)


def _mel(wave: np.ndarray, rate: int) -> np.ndarray:
    from nrt.spectrogram import log_mel

    return log_mel(wave.mean(axis=1) if wave.ndim == 2 else wave, rate)


def _cell(stats: dict) -> str:
    if stats["mean"] is None:
        return "–"
    if stats["lo"] is None:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} [{stats['lo']:.3f}, {stats['hi']:.3f}]"


def render(summary: dict) -> str:
    s = summary["settings"]
    lines = [
        "# Faithful edits on nrt-mini: every start of step 3 against the baselines, by the reference",
        "",
        f"Command: `{s['command']}` ({s['seconds'] / 60:.0f} min on 2 CPU cores, shared, for this invocation: "
        "a resumed run counts only its own time)",
        "",
        f"Selection set: {s['select_cases']} cases (edit_cases seed 1); report set: "
        + (f"{s['report_cases']} cases (seed 0). " if s["report_cases"] else "not run yet. ")
        + f"{s['steps']} sampling steps; η grid {s['etas']}; SDEdit strengths {s['strengths']}; "
        f"DDPM-inversion t_start {s['baseline_t_starts']}; the starts' t_start searched over {s['t_starts']} "
        "on the selection set. Fit: nrt-mini's default fits (full and LoRA). "
        f"`<method>+keep<dB>`: that method's outputs merged with the input where they match the codec's round "
        f"trip of it within about that many dB (`nrt.keep`), at {s.get('keep_dbs', [])} dB; each baseline is "
        "compared with ours under the same merge.",
        "",
        "Distance: log-mel L1 (dB) to the reference, the scene the edit should produce (lower is closer). "
        "Reference gain = (d(input, ref) − d(edit, ref)) / (d(input, ref) − d(codec(ref), ref)): 1 = as close as "
        "nrt-mini's codec allows, 0 = no closer than the input; undefined where the input is already within "
        "0.5 dB of the codec's bound (n counts the cases where it is defined). Codec gain = "
        "(d(codec(input), codec(ref)) − d(edit, codec(ref))) / d(codec(input), codec(ref)): the same inside the "
        "codec's space, from what the codec makes of the input to what it makes of the reference, defined "
        "wherever the two differ by 0.5 dB or more. Cells: mean over cases [95 % Student-t interval].",
        "",
        "## Chosen on the selection set (by distance, which every case has)",
        "",
        f"Closest: **{summary['defaults']['method']}**; start **{summary['defaults']['start']}**, t_start "
        f"**{summary['defaults']['t_start']}**, merge **{summary['defaults'].get('keep_db')}** dB. "
        "nrt-mini's defaults from it (`nrt/defaults.py`): "
        f"`MINI_SAMPLE = {{'start': {summary['defaults']['start']!r}, 't_start': {summary['defaults']['t_start']}, "
        f"'keep_db': {summary['defaults'].get('keep_db') or 0.0}}}`, "
        f"`MINI_ETA = {summary['defaults'].get('eta', {})}` (each fit method's fixed η per edit type with this start).",
        "",
        "| method | t_start | mean distance over types at each type's closest η (selection) |",
        "|---|---|---|",
    ]
    for r in summary["selection"]["ranking"]:
        t = "–" if r["t_start"] is None else f"{r['t_start']:g}"
        lines.append(f"| {r['method']} | {t} | {r['mean_distance']:.3f} |")
    lines += [
        "",
        "Fixed settings (each method's closest value per edit type on the selection set, the starts at the "
        "chosen t_start; a tie within 0.05 dB goes to the stronger edit):",
        "",
        "| method | edit type | value | mean distance (dB) | cases |",
        "|---|---|---|---|---|",
    ]
    for method, by_type in summary["selection"]["fixed"].items():
        for edit_type, f in by_type.items():
            lines.append(f"| {method} | {edit_type} | {f['value']:g} | {f['mean_distance']:.3f} | {f['n']} |")
    if "report" not in summary:
        lines += ["", "## Report set", "", "Not run yet (`--select-only`): rerun without it to resume."]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Report set",
        "",
        "| edit type | method | selection | value | distance (dB) | n | gain | n | codec gain | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["report"]["rows"]:
        value = "–" if r["value"] is None else f"{r['value']:g}"
        lines.append(
            f"| {r['edit_type']} | {r['method']} | {r['selection']} | {value} | {_cell(r['distance'])} | "
            f"{r['distance']['n']} | {_cell(r['gain'])} | {r['gain']['n']} | {_cell(r['codec_gain'])} | "
            f"{r['codec_gain']['n']} |"
        )
    lines += [
        "",
        "## Paired differences at the fixed settings, case by case (> 0: ours is closer to the reference)",
        "",
        "| edit type | ours | other | distance: d(other) − d(ours) | n | gain: ours − other | n | "
        "codec gain: ours − other | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["report"]["paired"]:
        lines.append(
            f"| {r['edit_type']} | {r['ours']} | {r['other']} | {_cell(r[DISTANCE])} | {r[DISTANCE]['n']} | "
            f"{_cell(r[GAIN])} | {r[GAIN]['n']} | {_cell(r[CODEC_GAIN])} | {r[CODEC_GAIN]['n']} |"
        )
    if summary.get("reproduction"):
        lines += [
            "",
            "## The inversion start at η = 0 against the input (report set)",
            "",
            "Onset F1 (50 ms) of the η = 0 output against the input and against the codec's round trip of "
            "the input; the round trip's own F1 against the input; the largest log-mel distance (dB) from the "
            "η = 0 output to the round trip; merged: the F1 against the input of the η = 0 output merged with "
            "the recording at the default dB (what `nrt edit` returns; inpainting is not merged). Inpainting "
            "regenerates its gap from noise whatever the start.",
            "",
            "| edit type | method | n | F1 vs input: min, mean, ≥ 0.95 | F1 vs codec(input): min, mean, ≥ 0.95 | "
            "codec(input) vs input: mean F1, ≥ 0.95 | max d(output, codec(input)) | merged: F1 vs input min, ≥ 0.95 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["reproduction"]:
            merged = (
                f"{r['f1_kept_min']:.2f}, {r['kept_at_least_095']} ({r['keep_db']:g} dB)" if "f1_kept_min" in r else "–"
            )
            lines.append(
                f"| {r['edit_type']} | {r['method']} | {r['n']} | {r['f1_input_min']:.2f}, {r['f1_input_mean']:.2f}, "
                f"{r['input_at_least_095']} | {r['f1_codec_min']:.2f}, {r['f1_codec_mean']:.2f}, "
                f"{r['codec_at_least_095']} | {r['codec_self_f1_mean']:.2f}, {r['codec_self_at_least_095']} | "
                f"{r['logmel_to_codec_max']:.3f} | {merged} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/mini_faithful", help="where everything lands")
    parser.add_argument("--select-per-type", type=int, default=2, help="selection cases per edit type")
    parser.add_argument("--report-per-type", type=int, default=20, help="reported cases per edit type")
    parser.add_argument("--methods", nargs="+", default=[*OURS, *BASELINES], help="nrt eval methods")
    parser.add_argument("--t-starts", type=float, nargs="+", default=[0.4, 0.7], help="t_start grid of the starts")
    parser.add_argument(
        "--baseline-t-starts",
        type=float,
        nargs="+",
        default=[0.4, 0.6, 0.8],
        help="t_start grid of the DDPM-inversion baseline",
    )
    parser.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8])
    parser.add_argument("--steps", type=int, default=50, help="sampling steps of every method")
    parser.add_argument(
        "--keep-dbs",
        type=float,
        nargs="+",
        default=[6.0, 10.0, 15.0],
        help="every method is also measured with its outputs merged with the input (nrt.keep) at these dB",
    )
    parser.add_argument("--model", default="mini", help="backbone (its CLAP and fit defaults follow it)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="nrt eval processes at once, each on its share of the cases (1: in this one)",
    )
    parser.add_argument("--select-only", action="store_true", help="stop after the selection set (a later run resumes)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.time()

    # 1. Selection: every t_start for the starts from the input, the rest once
    select_manifest = write_cases(edit_cases(args.select_per_type, seed=1), out / "select" / "cases")
    runs = {}
    for i, t_start in enumerate(args.t_starts):
        methods = args.methods if i == 0 else [m for m in args.methods if m in STARTED]
        run_dir = out / "select" / f"t{t_start:g}"
        share_bundles(out / "select", run_dir)
        results = run_eval(select_manifest, run_dir, methods, t_start, args)
        runs[t_start] = add_kept(results, select_manifest, run_dir, args.model, args.keep_dbs)
    every = [*args.methods, *(f"{m}{KEPT}{db:g}" for m in args.methods for db in args.keep_dbs)]
    selection = select(runs, every)
    best = selection["ranking"][0] if selection["ranking"] else {"method": "lora"}
    t_start = selection["t_start"]
    settings = {
        "command": "python benchmarks/mini_faithful.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "select_cases": 3 * args.select_per_type,
        "report_cases": 0,
        "steps": args.steps,
        "etas": args.etas,
        "strengths": args.strengths,
        "baseline_t_starts": args.baseline_t_starts,
        "t_starts": args.t_starts,
        "keep_dbs": args.keep_dbs,
    }
    if args.select_only:
        summary = {
            "settings": {**settings, "seconds": round(time.time() - started, 1)},
            "defaults": defaults(selection, best["method"]),
            "selection": selection,
        }
        write_json(out / "faithful.json", summary)
        write_text(out / "faithful.md", render(summary))
        # the figure on the selection set: the starts at the chosen t_start, the rest from the first run
        first, chosen_run = runs[args.t_starts[0]], runs[t_start]
        started = {c["id"]: c["methods"] for c in chosen_run["clips"]}
        combined = {
            **first,
            "clips": [{**c, "methods": {**c["methods"], **started.get(c["id"], {})}} for c in first["clips"]],
        }
        keep_db = summary["defaults"]["keep_db"]
        plot_gain(combined, selection, keep_db, out / "reference_gain_selection.png", "selection set")
        print(render(summary))
        return 0

    # 2. Report: the chosen t_start, every method at its fixed setting and its oracle
    report_manifest = write_cases(edit_cases(args.report_per_type, seed=0), out / "report" / "cases")
    results = run_eval(report_manifest, out / "report" / "eval", args.methods, t_start, args)
    chosen = defaults(selection, best["method"])
    # reported: every method as decoded, and merged at the chosen dB (the other dBs served the choice)
    merged = [chosen["keep_db"]] if chosen["keep_db"] else []
    kept = add_kept(results, report_manifest, out / "report" / "eval", args.model, merged)
    reported = [*args.methods, *(f"{m}{KEPT}{db:g}" for m in args.methods for db in merged)]
    summary = {
        "settings": {**settings, "report_cases": len(results["clips"]), "seconds": round(time.time() - started, 1)},
        "defaults": chosen,
        "selection": selection,
        "report": report(kept, selection, reported),
        "reproduction": reproduction(results, out / "report" / "eval", args.model, args.methods, chosen["keep_db"]),
    }
    write_json(out / "faithful.json", summary)
    write_text(out / "faithful.md", render(summary))
    plot_gain(kept, selection, summary["defaults"]["keep_db"], out / "reference_gain.png")
    print(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
