"""What nrt-mini's codec loses, and what a richer front end or a longer vocoder would buy.

    python benchmarks/mini_codec.py                          # round trips on 48 held-out scenes (about 10 minutes)
    python benchmarks/mini_codec.py --parts time             # a 5 s `nrt edit` with three front ends (about 10 more)
    python benchmarks/mini_codec.py --scenes 8 --out /tmp/codec

nrt-mini's latent is its log-mel folded into patches, exactly invertible, so everything its
codec loses is lost between the log-mel and the waveform: the mel's bands and hop, and the
vocoder (non-negative least squares onto the linear spectrum, then fast Griffin-Lim). Each
candidate front end (mels, hop) and vocoder (Griffin-Lim iterations, least-squares iterations)
takes held-out scenes through the mel and back; per candidate, mean over scenes [95 %
Student-t interval]:

- ``d``: the log-mel L1 distance in dB between round trip and scene, the yardstick of
  ``nrt.reference`` (64 bands, levels floored at -80 dB): what the faithful-edits benchmark
  counts as the codec's loss (its 64 bands favour front ends with at least as many);
- ``d_stft``: the same on the linear spectrum (1024-point STFT, hop 160, floored at -80 dB),
  which no candidate's bands are closer to than another's;
- ``clap``: the Audio CLAP cosine (nrt-mini's CLAP) between round trip and scene;
- ``onset_f1``: the scene's onsets found in the round trip (``nrt.onsets``, 50 ms);
- ``decode_s``: seconds to decode one 2.56 s clip here (median, on ``--threads`` threads).

The shipped front end and vocoder are also taken along the path every edit takes
(``nrt.reference.codec_round_trip``: the input padded to whole latent patches, encoded, decoded)
as a check that the direct path measures the same codec.

``--parts time`` times one whole ``nrt edit`` of a 5 s clip at nrt-mini's defaults
(``nrt.bench.time_edit``) with the shipped front end and with 64 mels at hop 320 and 160, each
a model folder with the shipped text encoder and UNet over that front end (the UNet is
convolutional, so it runs on a latent of any size; it was not trained for the other front
ends, so only the time means anything). A richer front end has to
keep that under a minute on two cores.

Results: ``--out``/codec.json and codec.md (``benchmarks/results/mini_codec`` by default; a part
run alone keeps the other's results there), and ``--listen N`` round trips of the first N scenes
per candidate as wavs under ``--out``/listen.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nrt.audio import AudioClip
from nrt.backbones import load_backbone
from nrt.backbones.mel import MelFrontEnd, StftConfig, tacotron_stft_buffers
from nrt.backbones.patch import GriffinLimVocoder
from nrt.bench import time_edit
from nrt.files import write_json, write_text
from nrt.mini.model import T2A_DIR
from nrt.mini.scenes import SAMPLE_RATE, scene_for
from nrt.onsets import detect_onsets, onset_scores
from nrt.reference import FLOOR_DB, codec_round_trip, log_mel_distance
from nrt.report import interval
from nrt.scoring import load_scorer

EDIT_SECONDS = 5.0
TIMED = [(64, 320), (64, 160)]  # the front ends timed beside the shipped one: 64 mels, at its hop and at TANGO's
STFT_FLOOR = 10 ** (FLOOR_DB / 20)  # the linear spectrum's floor, as the log-mel's


@dataclass(frozen=True)
class Candidate:
    """A front end (mel bands, hop) and a vocoder (Griffin-Lim and least-squares iterations)."""

    n_mels: int
    hop: int
    n_iter: int
    nnls_iter: int

    @property
    def name(self) -> str:
        return f"{self.n_mels} mels, hop {self.hop}, GL {self.n_iter}, NNLS {self.nnls_iter}"

    @property
    def front_end(self) -> tuple[int, int]:
        return self.n_mels, self.hop


def shipped() -> tuple[StftConfig, dict]:
    """nrt-mini's front end and vocoder settings, as its weights folder gives them."""
    stft = StftConfig.from_dict(json.loads((T2A_DIR / "stft_config.json").read_text()))
    vocoder = json.loads((T2A_DIR / "vae_config.json").read_text())["vocoder"]
    return stft, vocoder


def candidates() -> list[Candidate]:
    stft, vocoder = shipped()
    base = Candidate(stft.n_mel_channels, stft.hop_length, int(vocoder["n_iter"]), int(vocoder["nnls_iter"]))
    vocoders = [(base.n_iter, base.nnls_iter), (base.n_iter, 200), (128, 200)]
    front_ends = [(base.n_mels, base.hop), (64, base.hop), (base.n_mels, 160), (64, 160), (128, 160)]
    return [replace(base, n_mels=m, hop=h, n_iter=g, nnls_iter=n) for m, h in front_ends for g, n in vocoders]


def round_trip(wave: np.ndarray, candidate: Candidate, momentum: float) -> tuple[np.ndarray, float]:
    """``wave`` through the candidate's mel and vocoder, cut or padded to its length; and the decode's seconds."""
    stft = replace(shipped()[0], n_mel_channels=candidate.n_mels, hop_length=candidate.hop)
    front = MelFrontEnd(stft)
    vocoder = GriffinLimVocoder(stft, candidate.n_iter, momentum, candidate.nnls_iter)
    with torch.no_grad():
        mel = front(torch.from_numpy(wave).float()[None])
        started = time.perf_counter()
        out = vocoder(mel)[0].numpy()
        seconds = time.perf_counter() - started
    return np.pad(out, (0, max(0, len(wave) - len(out))))[: len(wave)], seconds


def stft_distance(wave: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute difference in dB of two linear magnitude spectra (1024 points, hop 160), floored at -80 dB."""

    def db(x: np.ndarray) -> np.ndarray:
        spec = torch.stft(torch.from_numpy(x).float(), 1024, 160, window=torch.hann_window(1024), return_complex=True)
        return 20 * np.log10(np.maximum(spec.abs().numpy() / 512, STFT_FLOOR))

    return float(np.abs(db(wave) - db(target)).mean())


def measure(waves: list[np.ndarray], trips: list[np.ndarray], scorer) -> dict:
    """Distances, Audio CLAP and onset F1 of round trips against their scenes."""
    clap = (scorer.embed_audio(waves, SAMPLE_RATE) * scorer.embed_audio(trips, SAMPLE_RATE)).sum(-1).tolist()
    f1 = [onset_scores(detect_onsets(w, SAMPLE_RATE), detect_onsets(t, SAMPLE_RATE)).f1 for w, t in zip(waves, trips)]
    return {
        "d": interval([log_mel_distance(t, w, SAMPLE_RATE) for w, t in zip(waves, trips)]),
        "d_stft": interval([stft_distance(t, w) for w, t in zip(waves, trips)]),
        "clap": interval(clap),
        "onset_f1": interval(f1),
    }


def candidate_model(front_end: tuple[int, int], directory: Path) -> Path:
    """A model folder: nrt-mini's text encoder and UNet over another front end (for timing only)."""
    n_mels, hop = front_end
    shutil.copytree(T2A_DIR, directory)
    stft = replace(shipped()[0], n_mel_channels=n_mels, hop_length=hop)
    stft_json = json.loads((T2A_DIR / "stft_config.json").read_text())
    stft_json.update(n_mel_channels=n_mels, hop_length=hop)
    (directory / "stft_config.json").write_text(json.dumps(stft_json, indent=2))
    vae = json.loads((T2A_DIR / "vae_config.json").read_text())
    vae["n_mels"] = n_mels
    (directory / "vae_config.json").write_text(json.dumps(vae, indent=2))
    torch.save({"mel_basis": tacotron_stft_buffers(stft)["mel_basis"]}, directory / "pytorch_model_stft.bin")
    state = torch.load(T2A_DIR / "pytorch_model_vae.bin", map_location="cpu")
    # the per-bin mean, stretched over the new bands (the standardisation only scales; timing does not depend on it)
    mean = state["mean"][None, None]
    state["mean"] = torch.nn.functional.interpolate(mean, size=n_mels, mode="linear", align_corners=True)[0, 0]
    torch.save(state, directory / "pytorch_model_vae.bin")
    return directory


def time_front_ends(front_ends: list[tuple[int, int]]) -> dict[str, float]:
    times = {}
    with tempfile.TemporaryDirectory(prefix="nrt-codec-") as tmp:
        for n_mels, hop in front_ends:
            model = candidate_model((n_mels, hop), Path(tmp) / f"m{n_mels}-h{hop}")
            print(f"timing a {EDIT_SECONDS:g} s edit with {n_mels} mels, hop {hop} ...", flush=True)
            times[f"{n_mels}/{hop}"] = time_edit(str(model), "cpu", "fp32", EDIT_SECONDS, defaults="mini")
    return times


def render(results: dict) -> str:
    def cell(c: dict, digits: int = 3) -> str:
        return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"

    lines = [
        "# nrt-mini's codec: what a round trip loses",
        "",
        f"{results['scenes']} held-out scenes (from {results['first_scene']}), 2.56 s at 16 kHz; mean [95 % interval]. "
        "d: log-mel L1 in dB (nrt.reference's 64 bands); d_stft: linear-spectrum L1 in dB; CLAP: Audio CLAP "
        "with the scene (nrt-mini's CLAP); onset F1 against the scene's onsets; decode: seconds per clip, one thread.",
        "",
        "| mels | hop | GL iter | NNLS iter | d (dB) | d_stft (dB) | CLAP | onset F1 | decode s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        c = row["candidate"]
        lines.append(
            f"| {c['n_mels']} | {c['hop']} | {c['n_iter']} | {c['nnls_iter']} | {cell(row['d'])} | "
            f"{cell(row['d_stft'])} | {cell(row['clap'])} | {cell(row['onset_f1'], 2)} | {row['decode_s']:.3f} |"
        )
    path = results["edit_path"]
    lines += [
        "",
        f"The shipped codec along the path of every edit (`codec_round_trip`): d {cell(path['d'])}, "
        f"d_stft {cell(path['d_stft'])}, CLAP {cell(path['clap'])}, onset F1 {cell(path['onset_f1'], 2)}.",
    ]
    if results.get("edit_seconds"):
        threads = results["edit_threads"]
        lines += ["", f"One whole `nrt edit` of a {EDIT_SECONDS:g} s clip at nrt-mini's defaults, per front end "
                  f"(the shipped UNet and text encoder; `nrt.bench.time_edit`; {threads} torch "
                  f"thread{'s' if threads > 1 else ''}, one run):", "",
                  "| mels / hop | latent (channels x frames x bands) | edit s | against the shipped |", "|---|---|---|---|"]  # fmt: skip
        shipped_seconds = next(iter(results["edit_seconds"].values()))
        frames = int(EDIT_SECONDS * SAMPLE_RATE)
        for key, seconds in results["edit_seconds"].items():
            n_mels, hop = map(int, key.split("/"))
            latent = f"16 x {-(-(frames // hop + 1) // 16) * 4} x {n_mels // 4}"
            lines.append(f"| {n_mels} / {hop} | {latent} | {seconds:.1f} | {seconds / shipped_seconds:.2f}x |")
    return "\n".join(lines) + "\n"


def round_trips(args: argparse.Namespace) -> dict:
    """Every candidate's round trips of the held-out scenes, and the shipped codec's along the edits' path."""
    scorer = load_scorer("mini", progress=False)
    scenes = range(args.first_scene, args.first_scene + args.scenes)
    waves = [scene_for("heldout", i).render(SAMPLE_RATE).astype(np.float32) for i in scenes]
    momentum = float(shipped()[1].get("momentum", 0.99))

    # 1. every candidate, mel and back
    rows = []
    for candidate in candidates():
        trips, seconds = zip(*(round_trip(w, candidate, momentum) for w in waves))
        row = {
            "candidate": asdict(candidate),
            **measure(waves, list(trips), scorer),
            "decode_s": float(np.median(seconds)),
        }
        rows.append(row)
        print(f"{candidate.name}: d {row['d']['mean']:.3f} dB, d_stft {row['d_stft']['mean']:.3f} dB, "
              f"CLAP {row['clap']['mean']:.3f}, onset F1 {row['onset_f1']['mean']:.2f}", flush=True)  # fmt: skip
        folder = (
            args.out / "listen" / f"m{candidate.n_mels}-h{candidate.hop}-gl{candidate.n_iter}-nnls{candidate.nnls_iter}"
        )
        for i, trip in zip(scenes, trips[: args.listen]):
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"scene-{i}.wav", trip, SAMPLE_RATE, subtype="FLOAT")

    # 2. the shipped codec along the edits' path
    backbone = load_backbone("mini", device="cpu")
    clips = [AudioClip(w[:, None], SAMPLE_RATE, "FLOAT", "WAV") for w in waves]
    edit_trips = [codec_round_trip(backbone, clip)[:, 0] for clip in clips]
    return {"scenes": args.scenes, "first_scene": args.first_scene, "rows": rows,
            "edit_path": measure(waves, edit_trips, scorer)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=48, help="held-out scenes")
    parser.add_argument("--first-scene", type=int, default=0, help="the first held-out scene")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mini_codec"), help="results folder")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("round-trip", "time"),
        default=["round-trip"],
        help="round-trip: the codec's loss per candidate; time: a 5 s `nrt edit` per front end",
    )
    parser.add_argument("--listen", type=int, default=0, help="write the round trips of this many scenes as wavs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the decode times are per thread)")
    args = parser.parse_args(argv)
    if args.scenes < 2:
        parser.error(f"--scenes must be at least 2 (an interval needs two), got {args.scenes}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "codec.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    if "round-trip" in args.parts:
        results.update(round_trips(args))
    if "rows" not in results:
        parser.error(f"{saved} holds no round trips yet: run --parts round-trip first")
    if "time" in args.parts:
        stft = shipped()[0]
        results["edit_seconds"] = time_front_ends([(stft.n_mel_channels, stft.hop_length), *TIMED])
        results["edit_threads"] = args.threads
    write_json(args.out / "codec.json", results)
    report = render(results)
    write_text(args.out / "codec.md", report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
