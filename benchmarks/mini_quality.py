"""nrt-mini's quality, measured on held-out scenes: its CLAP, its generation, its edits.

    python benchmarks/mini_quality.py                       # all four parts (about an hour on 2 cores)
    python benchmarks/mini_quality.py --parts clap generation
    python benchmarks/mini_quality.py --parts generation stay --model DIR --first-scene 5000 --out OUT

1. CLAP: top-1 retrieval between held-out scenes and their captions (a wording other than
   the canonical one), against chance (1/N), and the cosine of matched against shuffled pairs.
2. Generation follows captions: clips generated from held-out captions (DDIM, 50 steps,
   guidance 3) are retrieved by their captions with nrt-mini's CLAP, against chance and
   against real renders of the same scenes (the ceiling). Per event kind: the area under the
   ROC curve of "does the clip hold this kind", scored by the cosine with the captions of that
   kind alone ("a church bell", "a small bell"), for generated clips and for real renders.
3. Staying put: SDEdit at strength 0.4 with a held-out scene's own canonical caption, the
   Audio CLAP cosine between the render and the edit (the model should stay where its caption
   already is; target ≥ 0.9), beside the cosine of the codec's round trip (its ceiling).
4. Editing, by the protocol of ``nrt eval``: held-out addition, style transfer and inpainting
   cases (``nrt.mini.scenes.edit_cases``) written as a manifest with their references, the
   target scenes (``nrt.mini.cases``), then ``nrt eval`` with the mini model's default fit
   (full and LoRA) against SDEdit, with its reference rows (the input, η = 0, plain
   text-to-audio); Text, Audio and Sum, and onset F1.

Everything lands in ``--out`` (quality.json, quality.md, and the eval run); a rerun skips
what is done (``nrt eval`` resumes on its own). ``--model`` measures other text-to-audio weights
in generation and staying put (a candidate, before it is shipped), ``--first-scene`` other
held-out scenes than the report's (the first of them): a candidate is chosen on those.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from nrt.audio import AudioClip
from nrt.backbones import load_backbone
from nrt.cli import main as nrt_main
from nrt.files import write_json, write_text
from nrt.mini.cases import write_cases
from nrt.mini.clap import embedding_retrieval, kind_aucs, kind_prompts, retrieval_accuracy
from nrt.mini.model import CLAP_DIR, T2A_DIR
from nrt.mini.scenes import KINDS, SAMPLE_RATE, edit_cases, scene_for
from nrt.reference import codec_round_trip
from nrt.report import interval
from nrt.sample import sample
from nrt.scoring import load_scorer
from nrt.sdedit import sdedit
from nrt.settings import SampleConfig

GENERATION = SampleConfig(steps=50, guidance=3.0, scheduler="ddim")
STAY_STRENGTH = 0.4
STAY_TARGET = 0.9
PARTS = ("clap", "generation", "stay", "edits")


def clap_weights() -> str:
    """Which CLAP weights scored a part: the first 12 hex digits of their file's SHA-256, and how they were trained."""
    directory = CLAP_DIR
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()[:12]
    training = json.loads((directory / "training.json").read_text())
    how = "with one-event hard negatives" if training.get("hard_negatives") else "on captions alone"
    return f"{digest} (trained {how}, step {training['step']})"


def t2a_weights(model: str) -> str:
    """Which text-to-audio weights generated: their folder and the first 12 hex digits of the UNet file's SHA-256."""
    directory = T2A_DIR if model == "mini" else Path(model)
    digest = hashlib.sha256((directory / "pytorch_model_main.bin").read_bytes()).hexdigest()[:12]
    return f"{model} ({digest})"


def part_clap(scorer, n: int) -> dict:
    return retrieval_accuracy(scorer, [scene_for("heldout", i) for i in range(n)])


def heldout_scenes(n: int, first: int) -> list:
    return [scene_for("heldout", i) for i in range(first, first + n)]


def part_generation(scorer, model: str, n: int, first: int, batch: int = 8) -> dict:
    backbone = load_backbone(model, device="cpu")
    scenes = heldout_scenes(n, first)
    captions = [s.caption(1) for s in scenes]
    length = len(scenes[0].render(SAMPLE_RATE))
    shape = backbone.latent_shape(length)
    started = time.perf_counter()
    waves = []
    for start in range(0, n, batch):
        chunk = captions[start : start + batch]
        latents = sample(backbone, backbone.encode_text(chunk), shape, GENERATION,
                         list(range(start, start + len(chunk))), progress=False)
        waves.extend(backbone.decode(latents, length).numpy())
    seconds = (time.perf_counter() - started) / n
    text = scorer.embed_text(captions)
    generated = scorer.embed_audio(waves, SAMPLE_RATE)
    real = scorer.embed_audio([s.render(SAMPLE_RATE) for s in scenes], SAMPLE_RATE)
    prompts = kind_prompts(scorer)
    return {
        "t2a_weights": t2a_weights(model),
        "first_scene": first,
        "sampling": {"steps": GENERATION.steps, "guidance": GENERATION.guidance, "scheduler": GENERATION.scheduler},
        "seconds_per_clip": seconds,
        "generated": embedding_retrieval(text, generated),
        "real": embedding_retrieval(text, real),
        "kind_auc_generated": kind_aucs(prompts, generated, scenes),
        "kind_auc_real": kind_aucs(prompts, real, scenes),
    }


def part_stay(scorer, model: str, n: int, first: int) -> dict:
    """SDEdit at STAY_STRENGTH towards each scene's own canonical caption: how close it stays."""
    backbone = load_backbone(model, device="cpu")
    scenes = heldout_scenes(n, first)
    renders = [scene.render(SAMPLE_RATE) for scene in scenes]
    edits, round_trips = [], []
    for seed, (scene, wave) in enumerate(zip(scenes, renders)):
        clip = AudioClip(wave[:, None], SAMPLE_RATE, "FLOAT", "WAV")
        [edit] = sdedit(backbone, clip, scene.caption(0), [STAY_STRENGTH], GENERATION, seed, progress=False)
        edits.append(edit[:, 0])
        round_trips.append(codec_round_trip(backbone, clip)[:, 0])
    source = scorer.embed_audio(renders, SAMPLE_RATE)
    cosines = (source * scorer.embed_audio(edits, SAMPLE_RATE)).sum(-1).tolist()
    ceilings = (source * scorer.embed_audio(round_trips, SAMPLE_RATE)).sum(-1).tolist()
    return {
        "t2a_weights": t2a_weights(model),
        "strength": STAY_STRENGTH,
        "target": STAY_TARGET,
        "first_scene": first,
        "cosine": interval(cosines),
        "at_target": sum(c >= STAY_TARGET for c in cosines) / len(cosines),
        "codec_cosine": interval(ceilings),
    }


def part_edits(root: Path, per_type: int) -> dict:
    # the held-out edit cases as input wavs, reference wavs (the target scenes) and a manifest
    manifest = write_cases(edit_cases(n_per_type=per_type), root / "cases")
    run = root / "eval"
    code = nrt_main(["eval", str(manifest), "-o", str(run), "--model", "mini", "--clap", "mini",
                     "--steps", str(GENERATION.steps), "--scheduler", GENERATION.scheduler, "--quiet"])
    if code != 0:
        raise SystemExit(f"nrt eval failed with exit code {code}")
    # a resumed run times only what it computed; the table gives the fit time per clip
    table = (run / "table.md").read_text(encoding="utf-8")
    return {"t2a_weights": t2a_weights("mini"), "cases": 3 * per_type, "run": str(run), "table": table}


def _scored_by(part: dict) -> str:
    if "clap_weights" not in part:  # measured before the weights were recorded: the first CLAP's time
        return "Scored by the first nrt-mini CLAP, trained on captions alone (its weights were not recorded then)."
    generated = f" Text-to-audio weights: {part['t2a_weights']}." if "t2a_weights" in part else ""
    return f"Scored by nrt-mini's CLAP {part['clap_weights']}.{generated}"


def _mean_interval(cell: dict) -> str:
    return f"{cell['mean']:.3f} [{cell['lo']:.3f}, {cell['hi']:.3f}]"


def render(results: dict) -> str:
    lines = ["# nrt-mini quality", ""]
    if "clap" in results:
        c = results["clap"]
        lines += ["## CLAP retrieval (held-out scenes, non-canonical captions)", "",
                  f"{c['n']} scenes: text→audio top-1 {c['text_to_audio']:.1%}, audio→text {c['audio_to_text']:.1%} "
                  f"(chance {c['chance']:.1%}); counting same-content scenes {c['text_to_audio_content']:.1%} / "
                  f"{c['audio_to_text_content']:.1%}; cosine matched {c['matched_cosine']:.3f}, "
                  f"shuffled {c['mismatched_cosine']:.3f}.", "", _scored_by(c), ""]
    if "generation" in results:
        g = results["generation"]
        gen, real = g["generated"], g["real"]
        lines += ["## Generation follows captions", "",
                  f"{gen['n']} held-out captions (from scene {g.get('first_scene', 0)}), {g['sampling']['steps']} {g['sampling']['scheduler'].upper()} "
                  f"steps, guidance {g['sampling']['guidance']:g}, {g['seconds_per_clip']:.2f} s per clip here.", "",
                  "| clips | top-1 retrieval by caption | chance | matched cosine | shuffled cosine |",
                  "| --- | --- | --- | --- | --- |",
                  f"| generated | {gen['text_to_audio']:.1%} | {gen['chance']:.1%} | {gen['matched_cosine']:.3f} | "
                  f"{gen['mismatched_cosine']:.3f} |",
                  f"| real renders | {real['text_to_audio']:.1%} | {real['chance']:.1%} | {real['matched_cosine']:.3f} | "
                  f"{real['mismatched_cosine']:.3f} |", "",
                  "Per kind, AUC of \"the clip holds this kind\" from the cosine with the kind's solo captions "
                  "(0.5 = chance; — where the held-out clips never or always hold it):", "",
                  "| kind | generated | real |", "| --- | --- | --- |"]
        for kind in KINDS:
            a, b = g["kind_auc_generated"][kind], g["kind_auc_real"][kind]
            lines.append(f"| {kind} | {'—' if a is None else f'{a:.2f}'} | {'—' if b is None else f'{b:.2f}'} |")
        lines += ["", _scored_by(g), ""]
    if "stay" in results:
        st = results["stay"]
        c, r = st["cosine"], st["codec_cosine"]
        lines += ["## Staying put", "",
                  f"SDEdit at strength {st['strength']:g} towards a held-out scene's own canonical caption "
                  f"({c['n']} scenes from held-out scene {st['first_scene']}; DDIM, 50 steps, guidance 3): Audio "
                  f"CLAP cosine between the render and the edit {_mean_interval(c)}, at least {st['target']:g} in "
                  f"{st['at_target']:.0%} of scenes; the codec's round trip alone {_mean_interval(r)}.", "",
                  _scored_by(st), ""]
    if "edits" in results:
        e = results["edits"]
        lines += [f"## Editing: {e['cases']} held-out cases, `nrt eval` protocol", "", _scored_by(e), "",
                  e["table"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mini_quality"), help="results folder")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--clap-scenes", type=int, default=200, help="held-out scenes of the CLAP retrieval")
    parser.add_argument("--generate", type=int, default=48, help="held-out captions to generate from")
    parser.add_argument("--stay-scenes", type=int, default=24, help="held-out scenes edited towards their own caption")
    parser.add_argument("--first-scene", type=int, default=0, help="first held-out scene of generation and staying put")
    parser.add_argument("--model", default="mini", help="text-to-audio weights of generation and staying put")
    parser.add_argument("--cases", type=int, default=10, help="edit cases per edit type")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "quality.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    scorer = load_scorer("mini", progress=False)
    for part in args.parts:
        print(f"measuring {part} ...", file=sys.stderr, flush=True)
        if part == "clap":
            results["clap"] = part_clap(scorer, args.clap_scenes)
        elif part == "generation":
            results["generation"] = part_generation(scorer, args.model, args.generate, args.first_scene)
        elif part == "stay":
            results["stay"] = part_stay(scorer, args.model, args.stay_scenes, args.first_scene)
        else:
            results["edits"] = part_edits(args.out, args.cases)
        results[part]["clap_weights"] = clap_weights()
        write_json(saved, results)
    report = render(results)
    write_text(args.out / "quality.md", report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
