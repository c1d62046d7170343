"""Does nrt-mini's CLAP see content? Held-out measurements of one or more CLAP models side by side.

    python benchmarks/mini_clap.py                                   # the shipped CLAP
    python benchmarks/mini_clap.py --clap old=runs/clap-v1 new=nrt/mini/weights/clap

Everything is held out: scenes of the held-out split and edit cases from held-out seeds
(``nrt.mini.scenes``), which training never draws.

1. **Edit cases**: for every case (``--cases`` per edit type, seed 0), cos(input, target)
   against cos(input, an unrelated held-out scene), one that shares no event kind with the
   input or the target; the share of cases where the target is closer, and the median gap.
   Also against a held-out scene drawn at random (it may share kinds).
2. **Caption retrieval**: top-1, text to audio, among ``--scenes`` held-out scenes and their
   captions (a wording other than the canonical one); on the first set of scenes, and as the
   mean over ``--retrieval-sets`` disjoint sets with its 95 % interval (one set of 200 is
   within about ±6 points of the rate it estimates).
3. **Kinds**: per event kind, the AUC of "the clip holds this kind" scored by the cosine of the
   clip with the kind's solo captions, on real renders of ``--kind-scenes`` held-out scenes;
   and the same with only the positives of one size (1, 2 or 3 events), which tells a kind
   the CLAP does not know from one it loses in a mixture.
4. **Removal curve**: for held-out scenes of three events, the mean cos(scene, the scene with
   k events removed), k = 0, 1, 2 (every subset), and a scene sharing no kind; the curve should
   fall, and the share of scenes whose own curve falls is given.

Writes ``--out``/clap.json and clap.md and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nrt.clap import ClapScorer
from nrt.files import write_json, write_text
from nrt.mini.clap import auc, kind_aucs, kind_prompts, retrieval_accuracy
from nrt.mini.scenes import KINDS, SAMPLE_RATE, Scene, edit_cases, scene_for
from nrt.report import interval

UNRELATED_FROM = 100_000  # held-out scene indices the unrelated scenes are drawn from


def _embed(scorer: ClapScorer, waves: list[np.ndarray]) -> torch.Tensor:
    return torch.nn.functional.normalize(scorer.embed_audio(waves, SAMPLE_RATE).double(), dim=-1)


def _unrelated(kinds: set[str], start: int) -> Scene:
    for index in itertools.count(start):
        scene = scene_for("heldout", index)
        if not kinds & set(scene.kinds):
            return scene
    raise AssertionError("unreachable")


def part_cases(scorer: ClapScorer, per_type: int) -> dict:
    cases = edit_cases(n_per_type=per_type, seed=0)
    inputs = _embed(scorer, [case.source_audio(SAMPLE_RATE) for case in cases])
    targets = _embed(scorer, [case.target.render(SAMPLE_RATE) for case in cases])
    unrelated = _embed(
        scorer,
        [
            _unrelated(set(c.source.kinds) | set(c.target.kinds), UNRELATED_FROM + 50 * k).render(SAMPLE_RATE)
            for k, c in enumerate(cases)
        ],
    )
    random = _embed(
        scorer, [scene_for("heldout", UNRELATED_FROM + 7 + 50 * k).render(SAMPLE_RATE) for k in range(len(cases))]
    )
    to_target = (inputs * targets).sum(-1).numpy()
    to_unrelated = (inputs * unrelated).sum(-1).numpy()
    to_random = (inputs * random).sum(-1).numpy()
    result = {"n": len(cases)}
    for edit_type in ("all", "addition", "style_transfer", "inpainting"):
        rows = np.array([edit_type in ("all", c.edit_type) for c in cases])
        gap, gap_random = to_target[rows] - to_unrelated[rows], to_target[rows] - to_random[rows]
        result[edit_type] = {
            "n": int(rows.sum()),
            "closer_than_unrelated": float((gap > 0).mean()),
            "median_gap": float(np.median(gap)),
            "closer_than_random": float((gap_random > 0).mean()),
            "median_gap_random": float(np.median(gap_random)),
            "mean_cos_target": float(to_target[rows].mean()),
            "mean_cos_unrelated": float(to_unrelated[rows].mean()),
        }
    return result


def part_retrieval(scorer: ClapScorer, n: int, sets: int) -> dict:
    """Top-1 retrieval among ``n`` held-out scenes, on ``sets`` disjoint sets (held-out scenes
    0..n-1, n..2n-1, ...): the first set's rates (as reported before there were sets), each set's,
    and the mean over the sets with its 95 % Student-t interval."""
    per_set = [
        retrieval_accuracy(scorer, [scene_for("heldout", i) for i in range(k * n, (k + 1) * n)]) for k in range(sets)
    ]
    result: dict = {**per_set[0], "sets": per_set}
    for key in ("text_to_audio", "audio_to_text"):
        result[f"{key}_over_sets"] = interval([r[key] for r in per_set])
    return result


def part_kinds(scorer: ClapScorer, n: int) -> tuple[dict, dict]:
    """Per kind, the AUC over all scenes, and by the size of the scenes that hold it: the positives
    of 1, 2 or 3 events against every scene without the kind."""
    scenes = [scene_for("heldout", i) for i in range(n)]
    audio = torch.nn.functional.normalize(
        scorer.embed_audio([s.render(SAMPLE_RATE) for s in scenes], SAMPLE_RATE), dim=-1
    )
    prompts = kind_prompts(scorer)
    cosines = (audio @ prompts.T).double().numpy()
    sizes = np.array([len(s.events) for s in scenes])
    by_size: dict[str, dict[str, float | None]] = {}
    for j, kind in enumerate(KINDS):
        holds = np.array([kind in s.kinds for s in scenes])
        by_size[kind] = {}
        for size in (1, 2, 3):
            keep = ~holds | (sizes == size)
            by_size[kind][str(size)] = auc(cosines[keep, j], holds[keep])
    return kind_aucs(prompts, audio, scenes), by_size


def part_removal(scorer: ClapScorer, n: int) -> dict:
    scenes = []
    for index in itertools.count():
        scene = scene_for("heldout", index)
        if len(scene.events) == 3:
            scenes.append(scene)
        if len(scenes) == n:
            break
    curves = []
    for k, scene in enumerate(scenes):
        levels = [[scene]]
        for removed in (1, 2):
            levels.append(
                [replace(scene, events=tuple(kept)) for kept in itertools.combinations(scene.events, 3 - removed)]
            )
        levels.append([_unrelated(set(scene.kinds), UNRELATED_FROM + 50 * k)])
        flat = [s for level in levels for s in level]
        embedded = _embed(scorer, [s.render(SAMPLE_RATE) for s in flat])
        cosines = (embedded @ embedded[0]).numpy()
        sizes = np.cumsum([0] + [len(level) for level in levels])
        curves.append([float(cosines[a:b].mean()) for a, b in itertools.pairwise(sizes)])
    curves_array = np.array(curves)
    falling = np.all(np.diff(curves_array, axis=1) < 0, axis=1)
    return {
        "n": len(scenes),
        "points": ["the scene", "one removed", "two removed", "unrelated"],
        "mean": curves_array.mean(axis=0).tolist(),
        "falling_share": float(falling.mean()),
    }


def measure(directory: str, args: argparse.Namespace) -> dict:
    scorer = ClapScorer.from_pretrained(directory, device="cpu", batch_size=64)
    began = time.monotonic()
    kinds, kinds_by_size = part_kinds(scorer, args.kind_scenes)
    result = {
        "cases": part_cases(scorer, args.cases),
        "retrieval": part_retrieval(scorer, args.scenes, args.retrieval_sets),
        "kind_auc": kinds,
        "kind_auc_by_size": kinds_by_size,
        "kind_scenes": args.kind_scenes,
        "removal": part_removal(scorer, args.removal_scenes),
    }
    result["seconds"] = round(time.monotonic() - began, 1)
    return result


def _num(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def _rate_interval(cell: dict) -> str:
    if cell["lo"] is None:
        return f"{cell['mean']:.1%}"
    return f"{cell['mean']:.1%} [{max(cell['lo'], 0.0):.1%}, {min(cell['hi'], 1.0):.1%}]"  # a rate lies in [0, 1]


def render(results: dict[str, dict], command: str) -> str:
    names = list(results)
    head = "| | " + " | ".join(f"`{n}`" for n in names) + " |"
    rule = "|---|" + "---|" * len(names)
    first = results[names[0]]
    lines = [
        "# nrt-mini's CLAP: does it see content?",
        "",
        f"Command: `{command}`",
        "",
        f"Held out throughout. Edit cases: {first['cases']['n']} (`edit_cases`, seed 0); retrieval among "
        f"{first['retrieval']['n']} held-out scenes; per-kind AUC over the renders of the first "
        f"{first['kind_scenes']} held-out scenes; removal curve over {first['removal']['n']} held-out scenes of "
        "three events.",
        "",
        "## Edit cases: is the input closer to its target than to an unrelated scene?",
        "",
        head,
        rule,
    ]
    for edit_type in ("all", "addition", "style_transfer", "inpainting"):
        cells = [results[n]["cases"][edit_type] for n in names]
        lines.append(
            f"| {edit_type}: closer than unrelated (median gap) | "
            + " | ".join(f"{c['closer_than_unrelated']:.1%} ({c['median_gap']:+.3f})" for c in cells)
            + " |"
        )
    for edit_type in ("all",):
        cells = [results[n]["cases"][edit_type] for n in names]
        lines.append(
            "| all: closer than a random held-out scene (median gap) | "
            + " | ".join(f"{c['closer_than_random']:.1%} ({c['median_gap_random']:+.3f})" for c in cells)
            + " |"
        )
        lines.append(
            "| all: mean cos(input, target) / cos(input, unrelated) | "
            + " | ".join(f"{c['mean_cos_target']:.3f} / {c['mean_cos_unrelated']:.3f}" for c in cells)
            + " |"
        )
    lines += ["", "## Caption retrieval (held-out scenes, a non-canonical wording)", "", head, rule]
    lines.append(
        "| text→audio top-1 | " + " | ".join(f"{results[n]['retrieval']['text_to_audio']:.1%}" for n in names) + " |"
    )
    lines.append(
        "| audio→text top-1 | " + " | ".join(f"{results[n]['retrieval']['audio_to_text']:.1%}" for n in names) + " |"
    )
    if all("sets" in results[n]["retrieval"] for n in names):
        sets = len(first["retrieval"]["sets"])
        for key, title in (("text_to_audio", "text→audio"), ("audio_to_text", "audio→text")):
            lines.append(
                f"| {title} top-1, mean of {sets} disjoint sets [95 % interval] | "
                + " | ".join(_rate_interval(results[n]["retrieval"][f"{key}_over_sets"]) for n in names)
                + " |"
            )
    lines += ["", '## Per kind: AUC of "the clip holds this kind" on real renders', "", head, rule]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join(_num(results[n]["kind_auc"][kind]) for n in names) + " |")
    lines.append(
        "| lowest | "
        + " | ".join(_num(min(v for v in results[n]["kind_auc"].values() if v is not None)) for n in names)
        + " |"
    )
    if all("kind_auc_by_size" in results[n] for n in names):
        lines += [
            "",
            "## Per kind and scene size: AUC with the positives of 1 / 2 / 3 events only",
            "",
            "Every scene without the kind is a negative; — where no scene of that size holds it.",
            "",
            head,
            rule,
        ]
        for kind in KINDS:
            lines.append(
                f"| {kind} | "
                + " | ".join(
                    " / ".join(_num(results[n]["kind_auc_by_size"][kind][size]) for size in ("1", "2", "3"))
                    for n in names
                )
                + " |"
            )
    lines += ["", "## Removal curve: mean cos(scene, scene with events removed)", "", head, rule]
    for i, point in enumerate(first["removal"]["points"]):
        lines.append(f"| {point} | " + " | ".join(f"{results[n]['removal']['mean'][i]:.3f}" for n in names) + " |")
    lines.append(
        "| scenes whose own curve falls | "
        + " | ".join(f"{results[n]['removal']['falling_share']:.1%}" for n in names)
        + " |"
    )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clap", nargs="+", default=["shipped=nrt/mini/weights/clap"], help="NAME=DIRECTORY of each CLAP to measure"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mini_clap"), help="results folder")
    parser.add_argument("--cases", type=int, default=50, help="edit cases per edit type")
    parser.add_argument("--scenes", type=int, default=200, help="held-out scenes of the caption retrieval")
    parser.add_argument(
        "--retrieval-sets",
        type=int,
        default=5,
        help="disjoint sets of --scenes held-out scenes the retrieval is run on",
    )
    parser.add_argument("--kind-scenes", type=int, default=400, help="held-out scenes of the per-kind AUC")
    parser.add_argument("--removal-scenes", type=int, default=50, help="held-out three-event scenes of the curve")
    args = parser.parse_args(argv)
    results = {}
    for spec in args.clap:
        name, _, directory = spec.partition("=")
        if not directory:
            parser.error(f"--clap takes NAME=DIRECTORY, got {spec!r}")
        print(f"measuring {name} ({directory}) ...", file=sys.stderr, flush=True)
        results[name] = measure(directory, args)
    command = "python benchmarks/mini_clap.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "clap.json", {"command": command, "results": results})
    report = render(results, command.strip())
    write_text(args.out / "clap.md", report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
