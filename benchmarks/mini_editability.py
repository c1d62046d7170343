"""How editable is the fit? Guidance scale and fine-tuning steps against the intended result.

    python benchmarks/mini_editability.py                         # guidance 2, 3 and 6
    python benchmarks/mini_editability.py --variants 3 3:0 3:50    # guidance 3, fits of 200, 0, 50 step 2 steps
    python benchmarks/mini_editability.py --variants 3 10 --types style_transfer

Runs on the selection set of ``benchmarks/mini_faithful.py`` (its cases, and its fits unless a
variant asks for others; run that benchmark first), so that a setting chosen here is chosen on
cases the faithful report does not use. Each variant is a guidance, ``G``, or a guidance and a
number of step 2 steps, ``G:T``, whose fits are made afresh into a folder of their own. For
each, ``nrt eval`` makes the inversion starts (LoRA
and full) over η, DDPM inversion and SDEdit at one t_start / strength, the same guidance in
inversion and regeneration; every output is merged with the recording at ``--keep-db`` as
nrt-mini's defaults do, then measured against the reference. Printed and written to
``--out``/editability.md: Δd = d(edit, ref) − d(input, ref) in dB (below 0 is closer to the
intended result than not editing), mean over cases [95 % Student-t interval].

The inversion start returns the input at η = 0 whatever the fit, so a lighter fit costs no
faithfulness there; the question is whether it lets e(η) move the edit further.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mini_faithful import KEPT, _cell, add_kept, run_shards

from nrt.cli import main as nrt_main
from nrt.files import write_json, write_text
from nrt.report import interval

STARTS = ("lora-inversion", "full-inversion")
BASELINES = ("ddpm-inversion", "sdedit")
SETS = {
    "select": ("select/cases/manifest.csv", "select/bundles"),
    "report": ("report/cases/manifest.csv", "report/eval/bundles"),
}


def type_manifest(manifest: Path, types: list[str]) -> Path:
    """The rows of ``manifest`` of the given edit types, written beside it (its paths hold)."""
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], [r for r in reader if r["edit_type"] in types]
    if not rows:
        raise SystemExit(f"{manifest} has no case of {', '.join(types)}")
    part = manifest.with_name(f"{manifest.stem}.{'-'.join(types)}.csv")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return part


def eval_at(
    guidance: float, tune_steps: int | None, manifest: Path, bundles: Path, out: Path, args: argparse.Namespace
) -> dict:
    """``nrt eval`` of the selection cases at one guidance, the fits read from (or made into) ``bundles``."""
    out.mkdir(parents=True, exist_ok=True)
    bundles.mkdir(parents=True, exist_ok=True)
    if not (out / "bundles").exists():
        (out / "bundles").symlink_to(bundles.resolve(), target_is_directory=True)
    argv = [
        "eval", str(manifest), "-o", str(out), "--model", "mini", "--methods", *args.methods,
        "--t-start", f"{args.t_start}", "--t-starts", f"{args.t_start}", "--strengths", f"{args.t_start}",
        "--etas", *map(str, args.etas), "--steps", str(args.steps), "--guidance", f"{guidance}", "--quiet",
    ]  # fmt: skip
    if tune_steps is not None:
        argv += ["--tune-steps", str(tune_steps)]
    if args.jobs > 1:
        run_shards(manifest, out, argv, args.jobs)
    if nrt_main(argv) != 0:
        raise SystemExit(f"nrt eval failed at guidance {guidance:g}")
    return json.loads((out / "results.json").read_text())


def per_case(results: dict, keep_db: float) -> dict[tuple[str, str, float], dict[str, dict[str, float | None]]]:
    """Per (edit type, method, value), per case: Δd and the reference gain of the output merged at ``keep_db``."""
    rows: dict[tuple[str, str, float], dict[str, dict[str, float | None]]] = {}
    suffix = f"{KEPT}{keep_db:g}"
    for clip in results["clips"]:
        inputs = [
            v["input_ref_logmel_l1"]
            for e in clip["methods"].values()
            for v in e["values"]
            if "input_ref_logmel_l1" in v
        ]
        for method, entry in clip["methods"].items():
            if not method.endswith(suffix) or not inputs:
                continue
            for v in entry["values"]:
                if v.get("ref_logmel_l1") is not None:
                    key = (clip["edit_type"], method[: -len(suffix)], v["value"])
                    rows.setdefault(key, {})[clip["id"]] = {
                        "delta": v["ref_logmel_l1"] - inputs[0],
                        "gain": v.get("ref_gain"),
                    }
    return rows


def paired(cases: dict[tuple[str, str, float], dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    """Each inversion start's gain minus each baseline's, case by case, within an edit type."""
    out = []
    for (edit_type, method, value), mine in cases.items():
        if method not in STARTS:
            continue
        for (other_type, baseline, other_value), theirs in cases.items():
            if other_type != edit_type or baseline not in BASELINES:
                continue
            diffs = [
                mine[c]["gain"] - theirs[c]["gain"]  # type: ignore[operator]
                for c in mine
                if c in theirs and mine[c]["gain"] is not None and theirs[c]["gain"] is not None
            ]
            out.append({"edit_type": edit_type, "method": method, "value": value, "baseline": baseline,
                        "baseline_value": other_value, "gain_difference": interval(diffs)})  # fmt: skip
    return out


def parse_variant(text: str) -> tuple[float, int | None]:
    """``"3"`` → (3.0, None): guidance 3 with the selection's fits; ``"3:50"`` → (3.0, 50)."""
    guidance, _, tune = text.partition(":")
    try:
        value = (float(guidance), int(tune) if tune else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a variant is G or G:T (guidance, step 2 steps), got {text!r}") from None
    if value[0] < 1 or (value[1] is not None and value[1] < 0):
        raise argparse.ArgumentTypeError(f"guidance must be >= 1 and step 2 steps >= 0, got {text!r}")
    return value


def variant(guidance: float, tune_steps: int | None) -> str:
    """A column's name, and its run's folder: ``g3`` with the selection's fits, ``g3-tune50`` with others."""
    return f"g{guidance:g}" if tune_steps is None else f"g{guidance:g}-tune{tune_steps}"


def _header(guidance: float, tune_steps: int | None) -> str:
    return f"guidance {guidance:g}" + ("" if tune_steps is None else f", {tune_steps} step 2 steps")


def _table(summary: dict[str, Any], columns: list[tuple[float, int | None]], measure: str) -> list[str]:
    lines = [
        "| edit type | method | value | " + " | ".join(_header(g, t) for g, t in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    rows = [r for r in summary["rows"] if measure in r]
    keys = sorted({(r["edit_type"], r["method"], r["value"]) for r in rows})
    cells = {(r["edit_type"], r["method"], r["value"], r["guidance"], r.get("tune_steps")): r[measure] for r in rows}
    for edit_type, method, value in keys:
        row = [_cell(cells[k]) if (k := (edit_type, method, value, g, t)) in cells else "–" for g, t in columns]
        lines.append(f"| {edit_type} | {method} | {value:g} | " + " | ".join(row) + " |")
    return lines


def render(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    which = {"select": "selection", "report": "report"}[s.get("set", "select")]
    columns = [(v[0], v[1]) for v in s["variants"]]
    lines = [
        f"# nrt-mini: how editable is the fit, against the reference ({which} set)",
        "",
        f"Command: `{s['command']}` ({s['seconds'] / 60:.0f} min on 2 CPU cores for this invocation)",
        "",
        f"{s['cases']} {which} cases of `benchmarks/mini_faithful.py` ({', '.join(s['types'])}), its fits "
        "(nrt-mini's defaults) unless a column names other step 2 steps; "
        f"t_start / strength {s['t_start']:g}; {s['steps']} steps; outputs merged with the recording at "
        f"{s['keep_db']:g} dB. Δd = d(edit, ref) − d(input, ref), log-mel L1 in dB (below 0: closer to the "
        "intended result than not editing); mean over cases [95 % interval].",
        "",
        *_table(summary, columns, "delta"),
    ]
    if any("gain" in r for r in summary["rows"]):
        lines += [
            "",
            "Reference gain (1: as close as the codec allows, 0: no closer than the input), over the cases where "
            "it is defined:",
            "",
            *_table(summary, columns, "gain"),
        ]
    if summary.get("paired"):
        lines += [
            "",
            "Paired, case by case: the inversion start's gain minus the baseline's (> 0: ours closer).",
            "",
            "| variant | edit type | ours | η | baseline | value | gain difference |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in summary["paired"]:
            lines.append(
                f"| {_header(p['guidance'], p['tune_steps'])} | {p['edit_type']} | {p['method']} | {p['value']:g} | "
                f"{p['baseline']} | {p['baseline_value']:g} | {_cell(p['gain_difference'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faithful", default="benchmarks/results/mini_faithful", help="mini_faithful.py's --out")
    parser.add_argument(
        "--out",
        default=None,
        help="where the runs land (default: <--faithful>/editability, or editability-report with --set report)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=parse_variant,
        default=[(2.0, None), (3.0, None), (6.0, None)],
        help="G (a guidance, the selection's fits) or G:T (and fresh fits of T step 2 steps)",
    )
    parser.add_argument("--types", nargs="+", default=["addition", "style_transfer"])
    parser.add_argument(
        "--methods", nargs="+", default=["lora-inversion", "full-inversion", "ddpm-inversion", "sdedit"]
    )
    parser.add_argument("--t-start", type=float, default=0.8, help="t_start of every start and baseline")
    parser.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5, 0.75, 1.0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--keep-db", type=float, default=10.0, help="merge with the recording (nrt-mini's default)")
    parser.add_argument("--jobs", type=int, default=2, help="nrt eval processes at once, one thread each")
    parser.add_argument(
        "--set", choices=sorted(SETS), default="select", help="the faithful run's cases: its selection or its report"
    )
    args = parser.parse_args(argv)
    started = time.time()
    manifest, bundles = (Path(args.faithful) / rel for rel in SETS[args.set])
    if not manifest.is_file() or not bundles.is_dir():
        raise SystemExit(
            f"no {args.set} run in {args.faithful}: run benchmarks/mini_faithful.py --out {args.faithful} first"
        )
    out = Path(args.out or Path(args.faithful) / ("editability" if args.set == "select" else f"editability-{args.set}"))
    part = type_manifest(manifest, args.types)
    rows, pairs = [], []
    for guidance, tune_steps in args.variants:
        fits = bundles if tune_steps is None else out / f"tune{tune_steps}-bundles"
        run = out / variant(guidance, tune_steps)
        results = eval_at(guidance, tune_steps, part, fits, run, args)
        cases = per_case(add_kept(results, part, run, "mini", [args.keep_db]), args.keep_db)
        tag = {"guidance": guidance, "tune_steps": tune_steps}
        for (edit_type, method, value), by_case in cases.items():
            delta = interval([c["delta"] for c in by_case.values()])
            gain = interval([c["gain"] for c in by_case.values()])
            rows.append({**tag, "edit_type": edit_type, "method": method, "value": value, "delta": delta, "gain": gain})
        pairs += [{**tag, **pair} for pair in paired(cases)]
    summary = {
        "settings": {
            "command": " ".join(
                ["python benchmarks/mini_editability.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "set": args.set,
            "variants": [list(v) for v in args.variants],
            "types": args.types,
            "cases": len(results["clips"]),
            "t_start": args.t_start,
            "steps": args.steps,
            "keep_db": args.keep_db,
            "seconds": round(time.time() - started, 1),
        },
        "rows": rows,
        "paired": pairs,
    }
    write_json(out / "editability.json", summary)
    write_text(out / "editability.md", render(summary))
    print(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
