"""Find fit defaults for nrt-mini at which η trades fidelity to the input for the target.

    HF_HUB_OFFLINE=1 python benchmarks/mini_fit_defaults.py [--grid quick|full|steps] [--cases 2] [--out DIR]

Cases are the held-out edits of ``nrt.mini.scenes.edit_cases`` (``--cases`` per type: addition,
style transfer, inpainting). Every (setting, case) is fitted and generated the way ``nrt eval``
does it (``nrt.evaluate.run_clip_unit``: one fit, one batched pass over η in {0, 0.25, 0.5, 0.75,
1}, DDIM 50 steps, guidance 3, seed 0; inpainting through the masked sampler and the composite),
then every output gets:

- Text CLAP (cosine with the target prompt) and Audio CLAP (cosine with the input), from the
  small CLAP shipped with nrt-mini;
- a distance to the input: the mean absolute difference of log-mel spectrograms made with the
  backbone's own mel front end, over the frames whose analysis window lies wholly outside the
  inpainting gap (all frames for the other types).

References per case: the input itself, plain text-to-audio from the target prompt (the ceiling
of Text CLAP, and the distance of an output that ignores the input), and step 1 alone (η = 0
with e_opt and the base UNet: what step 2 adds).

Per setting, averaged over cases:

1. the slope of distance against η (and Spearman's ρ): must be > 0, the edit leaves the input
   as η grows;
2. Text CLAP at η = 1 minus at η = 0: must be > 0, the target appears;
3. the best-η CLAP sum (the paper's oracle criterion);
4. distance at η = 0 over the distance of text-to-audio: must be below ``--max-fidelity-ratio``,
   the fit reconstructs the input.

Criteria 1 and 4 are taken over the addition and style transfer cases: inpainting keeps the
observed region by construction, so its distance there says nothing about the fit (it is still
reported, per edit type). Per method, the chosen setting is the one with the highest mean
best-η sum among those meeting 1, 2 and 4. With the quick grid, embed_lr 5e-3 is then tried once
for the best setting of each method if the measured time leaves room in ``--budget-minutes``.

Every (setting, case) result is cached under ``--out`` and skipped on a re-run, so an
interrupted run resumes where it stopped; the outputs' audio stays there too, the fitted
bundles only with ``--keep-bundles``. The report goes to
``benchmarks/results/mini_fit_defaults.{json,md}`` (``--report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nrt.audio import load_audio, to_mono, write_audio
from nrt.backbones.tango import load_tango
from nrt.bundle import load_bundle, read_meta
from nrt.edit import PreparedBundle
from nrt.evaluate import (
    ClipStore,
    EvalConfig,
    Resources,
    choose_best,
    run_clip_unit,
    unit_outputs,
)
from nrt.files import write_json, write_text
from nrt.inputs import EDIT_TYPES
from nrt.manifest import CheckedClip, ManifestRow, load_clips
from nrt.masks import ranges_to_sample_mask
from nrt.mini.scenes import SAMPLE_RATE, edit_cases
from nrt.scoring import ReferenceScorer
from nrt.settings import FitConfig, SampleConfig

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "nrt" / "mini" / "weights" / "t2a"
CLAP = HERE.parent / "nrt" / "mini" / "weights" / "clap"
ETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
SAMPLING = SampleConfig(steps=50, guidance=3.0, scheduler="ddim")
SEED = 0
CASE_SEED = 0
FIDELITY_TYPES = ("addition", "style_transfer")
FOLLOW_UP_EMBED_LR = 5e-3

# Seconds per step on this CPU (2 threads, nothing else running), for the estimate printed
# before the run; the progress lines use measured times. A step 1 step backpropagates into the
# embedding only; a step 2 step also updates weights (all of them, in float32, for "full").
EMBED_STEP_S = 0.055
TUNE_STEP_S = {"full": 0.13, "lora": 0.095}
FORWARD_S = 0.027  # one UNet forward on one row (the fit's loss probes)
SAMPLING_ROW_S = 0.01  # one UNet forward per row of a batched guided pass
PROBE_FORWARDS = 24  # fit() probes the loss three times on eight (timestep, noise) pairs
OVERHEAD_S = 3.0  # decoding, writing, CLAP and the distance, per unit of work


@dataclass(frozen=True)
class Setting:
    """One point of the grid: the fit settings that vary here (the rest are FitConfig's)."""

    method: str
    tune_lr: float
    embed_lr: float = 2e-3
    embed_steps: int = 200
    tune_steps: int = 200

    @property
    def name(self) -> str:
        return f"{self.method}-e{self.embed_steps}-elr{self.embed_lr:g}-t{self.tune_steps}-tlr{self.tune_lr:g}"

    @property
    def step1_name(self) -> str:
        """Step 1 depends on these alone (its random draws come first), whatever step 2 does."""
        return f"step1-e{self.embed_steps}-elr{self.embed_lr:g}"

    def fit_config(self) -> FitConfig:
        return FitConfig(
            method=self.method, embed_steps=self.embed_steps, embed_lr=self.embed_lr,
            tune_steps=self.tune_steps, tune_lr=self.tune_lr, seed=SEED,
        )

    def eval_config(self, model: str, clap: str) -> EvalConfig:
        return EvalConfig(
            methods=(self.method,), etas=ETAS, seeds=(SEED,), model=model, device="cpu", clap=clap,
            fit=self.fit_config(), sample=SAMPLING, **{f"{self.method}_tune_lr": self.tune_lr},
        )


def grid(name: str) -> list[Setting]:
    """``quick``: three step 2 rates per method; ``full``: four per method, each at two step 1 rates;
    ``steps``: the chosen rates at 200 + 200 steps and at 500 + 500 (longer fits)."""
    if name == "steps":
        chosen = (Setting("full", 5e-5), Setting("lora", 3e-4))
        return [*chosen, *(replace(s, embed_steps=500, tune_steps=500) for s in chosen)]
    if name == "quick":
        rates = {"full": (1e-5, 5e-5, 2e-4), "lora": (3e-4, 1e-3, 3e-3)}
        embed_lrs: tuple[float, ...] = (2e-3,)
    elif name == "full":
        rates = {"full": (3e-6, 1e-5, 5e-5, 2e-4), "lora": (1e-4, 3e-4, 1e-3, 3e-3)}
        embed_lrs = (2e-3, FOLLOW_UP_EMBED_LR)
    else:
        raise ValueError(f"unknown grid {name!r}")
    return [Setting(m, lr, embed_lr=e) for m, lrs in rates.items() for e in embed_lrs for lr in lrs]


# -- estimates --------------------------------------------------------------------------------
def sampling_seconds(outputs: int) -> float:
    """One guided pass: every step runs the UNet on two rows per output."""
    return SAMPLING.steps * 2 * outputs * SAMPLING_ROW_S


def estimate_pair_seconds(setting: Setting) -> float:
    train = setting.embed_steps * EMBED_STEP_S + setting.tune_steps * TUNE_STEP_S[setting.method]
    return train + PROBE_FORWARDS * FORWARD_S + sampling_seconds(len(ETAS)) + OVERHEAD_S


def estimate_run_seconds(settings: Sequence[Setting], n_cases: int) -> float:
    references = n_cases * (sampling_seconds(1) + OVERHEAD_S)
    step1_only = n_cases * len({s.step1_name for s in settings}) * (sampling_seconds(1) + OVERHEAD_S)
    return references + step1_only + n_cases * sum(estimate_pair_seconds(s) for s in settings)


# -- cases and the distance -------------------------------------------------------------------
@dataclass
class Case:
    """A held-out edit as ``nrt eval`` sees it, with the input's log-mel and its observed frames."""

    clip: CheckedClip
    mel: np.ndarray
    observed: np.ndarray

    @property
    def id(self) -> str:
        return self.clip.clip_id

    @property
    def edit_type(self) -> str:
        return self.clip.row.edit_type


def write_inputs(n_per_type: int, directory: Path) -> list[ManifestRow]:
    """Render the source clips to float WAVs (the gap stays digital silence) and describe them."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for line, case in enumerate(edit_cases(n_per_type=n_per_type, seed=CASE_SEED), start=1):
        path = write_audio(directory / f"{case.id}.wav", case.source_audio(SAMPLE_RATE)[:, None], SAMPLE_RATE,
                           subtype="FLOAT")
        mask = [tuple(case.mask)] if case.mask else None
        rows.append(ManifestRow(case.id, case.edit_type, path, case.target_prompt, mask=mask, line=line))
    return rows


def log_mel(backbone: Any, samples: np.ndarray) -> np.ndarray:
    """Log-mel ``[frames, bins]`` of a clip ``[frames]`` or ``[frames, channels]`` at the backbone's rate."""
    wave = torch.from_numpy(np.ascontiguousarray(to_mono(samples)))
    with torch.no_grad():
        return backbone.mel(wave.unsqueeze(0))[0].numpy()


def observed_frames(num_samples: int, rate: int, hop: int, window: int, mask: Sequence[tuple[float, float]] | None,
                    num_frames: int) -> np.ndarray:
    """True for the mel frames whose analysis window (centred on ``i * hop``) misses every gap sample."""
    if not mask:
        return np.ones(num_frames, dtype=bool)
    gap = np.concatenate([[0], np.cumsum(ranges_to_sample_mask(mask, num_samples, rate))])
    centres = np.arange(num_frames) * hop
    first = np.clip(centres - window // 2, 0, num_samples)
    stop = np.clip(centres + window // 2, 0, num_samples)
    return gap[stop] == gap[first]


def make_case(backbone: Any, clip: CheckedClip) -> Case:
    mel = log_mel(backbone, clip.clip.samples)
    config = backbone.mel.config
    observed = observed_frames(clip.clip.num_frames, clip.clip.sample_rate, config.hop_length, config.win_length,
                               clip.mask, mel.shape[0])
    return Case(clip, mel, observed)


def mel_distance(backbone: Any, case: Case, samples: np.ndarray) -> float:
    """Mean absolute log-mel difference to the input over the case's observed frames."""
    mel = log_mel(backbone, samples)
    return float(np.abs(mel - case.mel)[case.observed].mean())


def read_wave(path: Path) -> np.ndarray:
    return load_audio(path, max_seconds=math.inf, min_seconds=0.0).samples


# -- the work units: each returns a JSON-able row and is cached --------------------------------
def cache_read(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached row at ``path`` if it was made with ``key``."""
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return row if row.get("key") == key else None


def cache_key(case: Case, model: str, clap: str, **parts: Any) -> dict[str, Any]:
    return {
        "case": case.id, "input_sha256": case.clip.sha256, "prompt": case.clip.row.target_prompt,
        "model": model, "clap": clap, "sample": asdict(SAMPLING), "seed": SEED, "etas": list(ETAS), **parts,
    }


def run_reference(out: Path, res: Resources, backbone: Any, case: Case, config: EvalConfig) -> dict[str, Any]:
    """The input and plain text-to-audio from the target prompt, scored against the input."""
    root = out / "runs" / "reference"
    store = ClipStore(root, case.clip)
    run_clip_unit(root, res, config, store, "reference", progress=False)
    row: dict[str, Any] = {}
    for output in unit_outputs(config, "reference", case.clip):
        scores = dict(store.record["outputs"][output.name]["scores"])
        scores["distance"] = mel_distance(backbone, case, read_wave(store.file(output)))
        row[output.method] = scores
    return row


def run_pair(out: Path, res: Resources, backbone: Any, case: Case, setting: Setting, config: EvalConfig) -> dict[str, Any]:
    """Fit one case with one setting and generate and score its η grid, as ``nrt eval`` does."""
    root = out / "runs" / setting.name
    store = ClipStore(root, case.clip)
    run_clip_unit(root, res, config, store, setting.method, progress=False)
    outputs = []
    for output in unit_outputs(config, setting.method, case.clip):
        scores = dict(store.record["outputs"][output.name]["scores"])
        scores["distance"] = mel_distance(backbone, case, read_wave(store.file(output)))
        outputs.append({"eta": output.value, **scores})
    path = bundle_dir(out, setting, case)
    losses = read_meta(path)["losses"] if (path / "bundle.json").is_file() else None
    return {"outputs": outputs, "fit_seconds": store.record.get("fit_seconds", {}).get(setting.method),
            "losses": losses}


def bundle_dir(out: Path, setting: Setting, case: Case) -> Path:
    return out / "runs" / setting.name / "bundles" / case.id / setting.method


def run_step1_only(out: Path, res: Resources, backbone: Any, case: Case, bundle_path: Path, name: str) -> dict[str, Any]:
    """η = 0 with e_opt and the base UNet: the input as step 1 alone reconstructs it."""
    bundle = load_bundle(bundle_path, backbone.info)
    wave = PreparedBundle(backbone, bundle).edit([0.0], SAMPLING, SEED, backbone.unet)[0]
    directory = out / "runs" / name
    directory.mkdir(parents=True, exist_ok=True)
    path = write_audio(directory / f"{case.id}.wav", wave, case.clip.clip.sample_rate)
    wave = read_wave(path)  # as written, like every other output
    clip = case.clip
    scorer = ReferenceScorer(res.scorer, clip.clip.samples, clip.clip.sample_rate, clip.row.target_prompt, clip.mask)
    scores = scorer.score([wave], clip.clip.sample_rate)[0]
    return {**scores, "distance": mel_distance(backbone, case, wave)}


# -- measures ---------------------------------------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def case_measures(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The four measures of one (setting, case), from its outputs and the case's references."""
    by_eta = {o["eta"]: o for o in row["outputs"]}
    etas = sorted(by_eta)
    distance = [by_eta[e]["distance"] for e in etas]
    sums = {e: by_eta[e]["sum"] for e in etas}
    best = choose_best(sums)
    t2a_distance = reference["t2a"]["distance"]
    return {
        "slope": float(np.polyfit(etas, distance, 1)[0]),
        "spearman": spearman(etas, distance),
        "delta_text": by_eta[max(etas)]["text"] - by_eta[min(etas)]["text"],
        "best_eta": best,
        "best_sum": sums[best],
        "fidelity_ratio": by_eta[0.0]["distance"] / t2a_distance if t2a_distance > 0 else float("nan"),
        "distance": distance,
        "text": [by_eta[e]["text"] for e in etas],
        "audio": [by_eta[e]["audio"] for e in etas],
    }


def mean(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def aggregate(measures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases of the scalar measures, and of the per-η curves."""
    if not measures:
        return {"n": 0}
    scalars = ("slope", "spearman", "delta_text", "best_eta", "best_sum", "fidelity_ratio")
    curves = ("distance", "text", "audio")
    result: dict[str, Any] = {"n": len(measures)}
    result.update({k: mean(m[k] for m in measures) for k in scalars})
    result.update({k: [mean(m[k][i] for m in measures) for i in range(len(ETAS))] for k in curves})
    return result


def summarize(setting: Setting, rows: dict[str, dict[str, Any]], cases: Sequence[Case],
              references: dict[str, dict[str, Any]], max_ratio: float) -> dict[str, Any]:
    """A setting's measures over all cases, over the fidelity cases and per type, and its verdict."""
    measures = {c.id: case_measures(rows[c.id], references[c.id]) for c in cases if c.id in rows}
    types = {c.id: c.edit_type for c in cases}
    overall = aggregate(list(measures.values()))
    fidelity = aggregate([m for cid, m in measures.items() if types[cid] in FIDELITY_TYPES])
    checks = {
        "distance_grows": fidelity.get("slope", float("nan")) > 0,
        "target_appears": overall.get("delta_text", float("nan")) > 0,
        "reconstructs": fidelity.get("fidelity_ratio", float("nan")) < max_ratio,
    }
    fit_seconds = [rows[cid]["fit_seconds"] for cid in measures]
    pair_seconds = [rows[cid]["seconds"] for cid in measures if rows[cid].get("seconds")]
    return {
        "setting": asdict(setting),
        "name": setting.name,
        "complete": len(measures) == len(cases),
        "all": overall,
        "fidelity_cases": fidelity,
        "by_type": {t: aggregate([m for cid, m in measures.items() if types[cid] == t]) for t in EDIT_TYPES},
        "checks": checks,
        "passes": all(checks.values()),
        "fit_seconds": mean(fit_seconds),
        "pair_seconds": mean(pair_seconds),
        "cases": measures,
    }


def rank_key(summary: dict[str, Any]) -> tuple[int, float]:
    """Settings that meet more criteria first; among passing ones the higher mean best-η sum.

    Among settings that all fail, the one where the target appears most (the larger ΔText):
    the sum rewards copying the input (the input itself scores highest), so without a passing
    setting it would favour the fit that edits least.
    """
    passes = summary["passes"]
    value = summary["all"].get("best_sum" if passes else "delta_text", float("nan"))
    return (sum(summary["checks"].values()), value if math.isfinite(value) else -math.inf)


def choose(summaries: Sequence[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """The passing setting of ``method`` with the best mean best-η sum, else the closest one."""
    pool = [s for s in summaries if s["setting"]["method"] == method and s["complete"]]
    return max(pool, key=rank_key) if pool else None


# -- report -----------------------------------------------------------------------------------
def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table's lines: the header, its rule, one line per row."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(row)} |" for row in rows)]


def settings_table(summaries: Sequence[dict[str, Any]], chosen: dict[str, str | None]) -> list[str]:
    rows = []
    for s in summaries:
        st, fid, al = s["setting"], s["fidelity_cases"], s["all"]
        mark = "yes" if s["passes"] else "no (" + ", ".join(k for k, v in s["checks"].items() if not v) + ")"
        if chosen.get(st["method"]) == s["name"]:
            mark += " **chosen**"
        if not s["complete"]:
            mark += " (incomplete)"
        rows.append([
            st["method"], f"{st['embed_steps']} + {st['tune_steps']}", f"{st['embed_lr']:g}", f"{st['tune_lr']:g}",
            fmt(fid.get("slope")), fmt(fid.get("spearman"), ".2f"), fmt(al.get("delta_text")), fmt(al.get("best_sum")),
            fmt(fid.get("fidelity_ratio"), ".2f"), fmt(s["fit_seconds"], ".1f"), mark,
        ])
    header = ["method", "steps (embed + tune)", "embed_lr", "tune_lr", "slope d/η", "ρ(d, η)", "ΔText (η1−η0)",
              "best-η sum", "d(η0)/d(t2a)", "fit s", "ok"]
    return markdown_table(header, rows)


def by_type_table(summaries: Sequence[dict[str, Any]]) -> list[str]:
    header = ["setting", "edit type", "slope d/η", "ΔText", "best-η sum", "best η", "d(η0)/d(t2a)", "d at η 0 … 1",
              "Text at η 0 … 1"]
    rows = (
        [s["name"], edit_type, fmt(a["slope"]), fmt(a["delta_text"]), fmt(a["best_sum"]), fmt(a["best_eta"], ".2f"),
         fmt(a["fidelity_ratio"], ".2f"), " ".join(fmt(v, ".2f") for v in a["distance"]),
         " ".join(fmt(v, ".2f") for v in a["text"])]
        for s in summaries for edit_type, a in s["by_type"].items() if a.get("n")
    )
    return markdown_table(header, rows)


def references_table(references: dict[str, dict[str, Any]], step1: dict[str, dict[str, dict[str, Any]]],
                     cases: Sequence[Case]) -> list[str]:
    groups = {"input": [references[c.id]["input"] for c in cases], "t2a": [references[c.id]["t2a"] for c in cases]}
    for name, per_case in step1.items():
        groups[f"{name} only (η 0, base UNet)"] = [per_case[c.id] for c in cases if c.id in per_case]
    rows = ([name, str(len(entries)), *(fmt(mean(e[k] for e in entries)) for k in ("text", "audio", "sum", "distance"))]
            for name, entries in groups.items())
    return markdown_table(["reference", "cases", "Text", "Audio", "Sum", "distance"], rows)


def chosen_lines(summaries: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for method in ("full", "lora"):
        pick = choose(summaries, method)
        if pick is None:
            lines.append(f"- {method}: no complete setting")
            continue
        st = pick["setting"]
        verdict = "meets all three criteria" if pick["passes"] else (
            "NO setting meets all criteria; closest (most criteria met, then the largest ΔText), failing: "
            + ", ".join(k for k, v in pick["checks"].items() if not v)
        )
        lines.append(
            f"- {method}: embed_steps={st['embed_steps']}, embed_lr={st['embed_lr']:g}, "
            f"tune_steps={st['tune_steps']}, tune_lr={st['tune_lr']:g} — {verdict}; mean best-η sum "
            f"{fmt(pick['all']['best_sum'])}, fit {fmt(pick['fit_seconds'], '.1f')} s"
        )
        for edit_type, a in pick["by_type"].items():
            if a.get("n") and edit_type in FIDELITY_TYPES and not a["slope"] > 0:
                lines.append(f"  - caveat: distance does not grow with η for {edit_type} (slope {fmt(a['slope'])})")
            if a.get("n") and not a["delta_text"] > 0:
                lines.append(f"  - caveat: Text CLAP does not rise with η for {edit_type} (Δ {fmt(a['delta_text'])})")
    return lines


def markdown(summaries: Sequence[dict[str, Any]], references: dict[str, dict[str, Any]],
             step1: dict[str, dict[str, dict[str, Any]]], cases: Sequence[Case], info: dict[str, Any]) -> str:
    chosen = {m: (c["name"] if (c := choose(summaries, m)) else None) for m in ("full", "lora")}
    types = ", ".join(f"{t} {sum(c.edit_type == t for c in cases)}" for t in EDIT_TYPES)
    parts = [
        "# nrt-mini fit defaults: does η trade fidelity for the target?",
        "",
        (
            f"Cases: {len(cases)} held-out edits ({types}); η {list(ETAS)}; DDIM {SAMPLING.steps} steps, guidance "
            f"{SAMPLING.guidance:g}, seed {SEED}; CLAP: nrt-mini's. Distance: mean |Δ log-mel| to the input (the "
            "backbone's front end) over frames outside any inpainting gap. Slope, ρ and d(η0)/d(t2a) are over the "
            f"{' and '.join(FIDELITY_TYPES)} cases; ΔText and best-η sum over all cases. Criteria: slope > 0, "
            f"ΔText > 0, d(η0)/d(t2a) < {info['max_fidelity_ratio']:g}."
        ),
        "",
        *settings_table(summaries, chosen),
        "",
        "## Chosen",
        "",
        *chosen_lines(summaries),
        "",
        "## References (means over cases)",
        "",
        *references_table(references, step1, cases),
        "",
        "## Per edit type",
        "",
        *by_type_table(summaries),
        "",
        "## Timings",
        "",
        (
            f"Mean fit (steps 1 and 2) {fmt(info['mean_fit_seconds'], '.1f')} s; mean (setting, case) including "
            f"generation and scoring {fmt(info['mean_pair_seconds'], '.1f')} s; this run "
            f"{info['run_seconds'] / 60:.1f} min, all runs {info['spent_seconds'] / 60:.1f} min of measured work "
            f"({info['threads']} threads). Per setting, the fit seconds are in the table above."
        ),
        "",
    ]
    return "\n".join(parts)


# -- the run ----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", choices=["quick", "full", "steps"], default="quick",
                        help="quick: full tune_lr 1e-5/5e-5/2e-4, LoRA 3e-4/1e-3/3e-3 at embed_lr 2e-3, then embed_lr "
                             "5e-3 for the best of each if time permits; full: four rates each at both embed_lr; "
                             "steps: the chosen rates at 200 and at 500 steps per stage")
    parser.add_argument("--cases", type=int, default=2, help="held-out cases per edit type")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mini_fit_defaults",
                        help="work directory: inputs, fits, outputs and the per-(setting, case) cache")
    parser.add_argument("--report", type=Path, default=HERE / "results" / "mini_fit_defaults",
                        help="report path without suffix (.json and .md are written)")
    parser.add_argument("--model", default=str(MODEL), help="nrt-mini's text-to-audio model (TANGO layout)")
    parser.add_argument("--clap", default=str(CLAP), help="the CLAP scorer")
    parser.add_argument("--max-fidelity-ratio", type=float, default=0.5,
                        help="largest d(η=0)/d(text-to-audio) that counts as reconstructing the input")
    parser.add_argument("--budget-minutes", type=float, default=25.0,
                        help="the embed_lr 5e-3 follow-up runs only if the measured time so far plus its estimate fit")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--keep-bundles", action="store_true",
                        help="keep every fit's bundle under --out (a full fine-tune's holds the whole UNet, ~35 MB)")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    return args


def follow_ups(summaries: Sequence[dict[str, Any]], done: set[str]) -> list[Setting]:
    """embed_lr 5e-3 for the best setting of each method, where not measured already."""
    extra = []
    for method in ("full", "lora"):
        pick = choose(summaries, method)
        if pick is not None:
            setting = replace(Setting(**pick["setting"]), embed_lr=FOLLOW_UP_EMBED_LR)
            if setting.name not in done:
                extra.append(setting)
    return extra


class Runner:
    """Holds the loaded models and the cached rows; runs what is missing, one unit at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.backbone = load_tango(args.model).to("cpu")
        self.reference_config = Setting("lora", 3e-4).eval_config(args.model, args.clap)
        self.res = Resources(self.reference_config, lambda: self.backbone, int(self.backbone.sample_rate),
                             progress=False)
        clips = load_clips(write_inputs(args.cases, self.out / "inputs"))
        self.cases = [make_case(self.backbone, clip) for clip in clips]
        self.references: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.step1: dict[str, dict[str, dict[str, Any]]] = {}

    def cache_path(self, unit: str, case: Case) -> Path:
        return self.out / "cache" / unit / f"{case.id}.json"

    def cached(self, unit: str, case: Case, key: dict[str, Any], make) -> tuple[dict[str, Any], bool]:
        """The row of ``unit`` for ``case``: from the cache, or made now (timed) and cached."""
        path = self.cache_path(unit, case)
        row = cache_read(path, key)
        if row is not None:
            return row, False
        started = time.perf_counter()
        row = {**make(), "seconds": time.perf_counter() - started, "key": key}
        write_json(path, row)
        return row, True

    def reference(self, case: Case) -> bool:
        key = cache_key(case, self.args.model, self.args.clap, unit="reference")
        row, made = self.cached("reference", case, key, lambda: run_reference(
            self.out, self.res, self.backbone, case, self.reference_config))
        self.references[case.id] = row
        return made

    def pair(self, setting: Setting, case: Case) -> tuple[dict[str, Any], bool]:
        key = cache_key(case, self.args.model, self.args.clap, setting=asdict(setting))
        config = setting.eval_config(self.args.model, self.args.clap)
        row, made = self.cached(setting.name, case, key, lambda: run_pair(
            self.out, self.res, self.backbone, case, setting, config))
        self.rows.setdefault(setting.name, {})[case.id] = row
        self.step1_only(setting, case)
        if not self.args.keep_bundles:  # a full fine-tune's bundle is the whole UNet; the cache has what counts
            shutil.rmtree(bundle_dir(self.out, setting, case), ignore_errors=True)
        return row, made

    def step1_only(self, setting: Setting, case: Case) -> None:
        key = cache_key(case, self.args.model, self.args.clap, unit=setting.step1_name)
        path = bundle_dir(self.out, setting, case)
        if cache_read(self.cache_path(setting.step1_name, case), key) is None and not (path / "bundle.json").is_file():
            return
        row, _ = self.cached(setting.step1_name, case, key, lambda: run_step1_only(
            self.out, self.res, self.backbone, case, path, setting.step1_name))
        self.step1.setdefault(setting.step1_name, {})[case.id] = row

    def summaries(self, settings: Sequence[Setting]) -> list[dict[str, Any]]:
        return [summarize(s, self.rows.get(s.name, {}), self.cases, self.references, self.args.max_fidelity_ratio)
                for s in settings]

    def is_cached(self, setting: Setting, case: Case) -> bool:
        key = cache_key(case, self.args.model, self.args.clap, setting=asdict(setting))
        return cache_read(self.cache_path(setting.name, case), key) is not None

    def missing_seconds(self, settings: Sequence[Setting]) -> float:
        """Expected seconds of the (setting, case) pairs not cached yet, at the mean measured pace."""
        missing = [s for s in settings for c in self.cases if not self.is_cached(s, c)]
        measured = [r["seconds"] for per in self.rows.values() for r in per.values()]
        return sum(mean(measured) if measured else estimate_pair_seconds(s) for s in missing)

    def spent_seconds(self) -> float:
        """Measured seconds of every cached unit, whichever run made it."""
        rows = [*self.references.values(), *(r for per in self.rows.values() for r in per.values()),
                *(r for per in self.step1.values() for r in per.values())]
        return sum(r.get("seconds", 0.0) for r in rows)


def progress_line(done: int, total: int, setting: Setting, case: Case, row: dict[str, Any], made: bool,
                  eta_seconds: float) -> str:
    by_eta = {o["eta"]: o for o in row["outputs"]}
    lo, hi = by_eta[min(by_eta)], by_eta[max(by_eta)]
    timing = f"fit {row['fit_seconds']:.1f} s, all {row['seconds']:.1f} s" if made else "cached"
    return (f"[{done}/{total}] {setting.name} {case.id}: {timing}; distance {lo['distance']:.3f} -> "
            f"{hi['distance']:.3f}, text {lo['text']:.3f} -> {hi['text']:.3f} (about {eta_seconds / 60:.1f} min left)")


def rounds(cases: Sequence[Case]) -> list[list[Case]]:
    """Case i of every edit type together: round 0 first, so a cut-short run still covers every type."""
    by_type: dict[str, list[Case]] = {}
    for case in cases:
        by_type.setdefault(case.edit_type, []).append(case)
    depth = max(len(v) for v in by_type.values())
    return [[v[i] for v in by_type.values() if i < len(v)] for i in range(depth)]


def run_settings(runner: Runner, settings: Sequence[Setting], label: str) -> None:
    """Every (setting, case) of ``settings``, one round of cases at a time, printing one line per fit."""
    pairs = [(s, c) for group in rounds(runner.cases) for s in settings for c in group]
    to_make = sum(not runner.is_cached(s, c) for s, c in pairs)
    made_seconds: list[float] = []
    for i, (setting, case) in enumerate(pairs, start=1):
        row, made = runner.pair(setting, case)
        if made:
            made_seconds.append(row["seconds"])
        per_pair = mean(made_seconds) if made_seconds else estimate_pair_seconds(setting)
        left = per_pair * (to_make - len(made_seconds))
        print(f"{label} " + progress_line(i, len(pairs), setting, case, row, made, left), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    started = time.perf_counter()
    settings = grid(args.grid)
    follow_up_estimate = args.cases * len(EDIT_TYPES) * sum(
        estimate_pair_seconds(Setting(m, 1e-3, embed_lr=FOLLOW_UP_EMBED_LR)) for m in ("full", "lora"))
    estimate = estimate_run_seconds(settings, args.cases * len(EDIT_TYPES))
    print(f"grid {args.grid}: {len(settings)} settings x {args.cases * len(EDIT_TYPES)} cases; estimated "
          f"{estimate / 60:.1f} min" + (f" (+{follow_up_estimate / 60:.1f} min for the embed_lr "
                                        f"{FOLLOW_UP_EMBED_LR:g} follow-ups if time permits)"
                                        if args.grid == "quick" else ""), flush=True)

    runner = Runner(args)
    for case in runner.cases:
        runner.reference(case)
    run_settings(runner, settings, "grid")

    if args.grid == "quick":
        extra = follow_ups(runner.summaries(settings), {s.name for s in settings})
        needed = runner.missing_seconds(extra)
        if runner.spent_seconds() + needed <= args.budget_minutes * 60:
            run_settings(runner, extra, "follow-up")
            settings = [*settings, *extra]
        else:
            print(f"follow-up {', '.join(s.name for s in extra)} skipped: about {needed / 60:.1f} min more would "
                  f"pass --budget-minutes {args.budget_minutes:g} ({runner.spent_seconds() / 60:.1f} min spent)",
                  flush=True)

    summaries = runner.summaries(settings)
    fit_seconds = [r["fit_seconds"] for per in runner.rows.values() for r in per.values()]
    pair_seconds = [r["seconds"] for per in runner.rows.values() for r in per.values()]
    info = {
        "grid": args.grid, "cases_per_type": args.cases, "etas": list(ETAS), "sample": asdict(SAMPLING),
        "seed": SEED, "case_seed": CASE_SEED, "model": args.model, "clap": args.clap,
        "max_fidelity_ratio": args.max_fidelity_ratio, "fidelity_types": list(FIDELITY_TYPES),
        "threads": args.threads, "mean_fit_seconds": mean(fit_seconds), "mean_pair_seconds": mean(pair_seconds),
        "spent_seconds": runner.spent_seconds(), "run_seconds": time.perf_counter() - started,
    }
    chosen = {m: (c["name"] if (c := choose(summaries, m)) else None) for m in ("full", "lora")}
    write_json(args.report.with_suffix(".json"), {
        "info": info,
        "chosen": {m: {"name": name, "passes": next(s["passes"] for s in summaries if s["name"] == name),
                       "setting": next(s["setting"] for s in summaries if s["name"] == name)} if name else None
                   for m, name in chosen.items()},
        "settings": summaries,
        "references": runner.references,
        "step1_only": runner.step1,
        "cases": [{"id": c.id, "edit_type": c.edit_type, "target_prompt": c.clip.row.target_prompt,
                   "mask": c.clip.mask, "observed_frames": int(c.observed.sum())} for c in runner.cases],
        "rows": runner.rows,
    })
    text = markdown(summaries, runner.references, runner.step1, runner.cases, info)
    write_text(args.report.with_suffix(".md"), text)
    print()
    print(text)
    print(f"written {args.report.with_suffix('.json')} and {args.report.with_suffix('.md')}")


if __name__ == "__main__":
    main()
