"""`nrt eval` on the tiny backbone and tiny CLAP: outputs, choices of η, resuming, bad manifests."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import stats

import nrt.evaluate
from nrt.cli import main
from nrt.errors import InputError
from nrt.evaluate import EvalConfig, choose_best, choose_fixed, choose_fixed_values
from nrt.manifest import read_manifest, validate_clip_id
from nrt.report import interval

GAP = (0.3, 0.7)  # the inpainting clip's silent gap, in seconds
FAST = [
    "--model",
    "tiny",
    "--clap",
    "tiny",
    "--device",
    "cpu",
    "--quiet",
    "--embed-steps",
    "2",
    "--tune-steps",
    "2",
    "--steps",
    "2",
    "--etas",
    "0",
    "0.5",
    "1",
    "--strengths",
    "0.5",
    "1",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_clips(directory: Path) -> Path:
    """An addition clip (mono 16 kHz tone bursts) and an inpainting clip (stereo 22.05 kHz noise, zero gap)."""
    rng = np.random.default_rng(0)
    rate = 16_000
    t = np.arange(rate) / rate
    bursts = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0) + 0.01 * rng.standard_normal(rate)
    (directory / "audio").mkdir(parents=True, exist_ok=True)
    sf.write(directory / "audio" / "add.wav", bursts.astype(np.float32), rate, subtype="PCM_16")
    rate = 22_050
    noise = 0.2 * rng.standard_normal((rate, 2))
    noise[int(GAP[0] * rate) : int(GAP[1] * rate)] = 0.0
    sf.write(directory / "audio" / "inp.wav", noise.astype(np.float32), rate, subtype="PCM_16")
    manifest = directory / "manifest.csv"
    manifest.write_text(
        "id,edit_type,audio,target_prompt,origin\n"
        'add-1,addition,audio/add.wav,"a bell rings while a dog barks",synthetic\n'
        'inp-1,inpainting,audio/inp.wav,"a dog barks",synthetic\n'
    )
    return manifest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and lose much when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, Path]:
    """One evaluation of the two clips; the tests below read what it left."""
    root = tmp_path_factory.mktemp("eval")
    manifest = _write_clips(root / "data")
    output = root / "out"
    assert main(["eval", str(manifest), "-o", str(output), *FAST]) == 0
    return manifest, output


def _results(output: Path) -> dict:
    return json.loads((output / "results.json").read_text())


def test_eval_writes_tables_results_figures_and_audio(run: tuple[Path, Path]) -> None:
    manifest, output = run
    table = (output / "table.md").read_text()
    assert "| Addition |" in table and "| Inpainting |" in table
    assert "Microsoft" in table and "16000 Hz" in table  # the CLAP caveat and the band limit
    with open(output / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pipelines = {(r["edit_type"], r["method"], r["selection"]) for r in rows}
    for edit_type in ("addition", "inpainting"):
        assert {(edit_type, "input", "reference"), (edit_type, "t2a", "reference")} <= pipelines
        for method in ("full", "lora"):
            assert {(edit_type, method, s) for s in ("eta0", "oracle", "fixed")} <= pipelines
        assert {(edit_type, "sdedit", s) for s in ("oracle", "fixed")} <= pipelines
    input_rows = [r for r in rows if r["method"] == "input"]
    assert all(float(r["audio_mean"]) == pytest.approx(1.0, abs=1e-5) for r in input_rows)
    assert all(r["text_filled_mean"] == "" for r in rows if r["edit_type"] == "addition")
    assert all(r["text_filled_mean"] != "" for r in rows if r["edit_type"] == "inpainting")

    results = _results(output)
    assert {"settings", "clips", "table", "curves", "caveats"} <= set(results)
    assert results["settings"]["band_limit_rate"] == 16_000
    assert [c["id"] for c in results["clips"]] == ["add-1", "inp-1"]
    for name in ("eta_curves.png", "spectrograms.png"):
        data = (output / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000

    rows_by_id = {r.clip_id: r for r in read_manifest(manifest)}
    for clip in results["clips"]:
        source = sf.info(rows_by_id[clip["id"]].audio)
        made = {(o["method"], o["value"]) for o in clip["outputs"]}
        expected = {("input", None), ("t2a", None), ("sdedit", 0.5), ("sdedit", 1.0)}
        expected |= {(m, v) for m in ("full", "lora") for v in (0.0, 0.5, 1.0)}
        if clip["edit_type"] == "inpainting":
            expected |= {("fill", None)}  # the base model filling the gap from the prompt
        assert made == expected
        for out in clip["outputs"]:
            info = sf.info(output / out["file"])
            assert (info.frames, info.samplerate, info.channels) == (source.frames, source.samplerate, source.channels)
            # what is scored is what the model made: a 16-bit file would clip peaks above full scale
            assert info.subtype == ("PCM_16" if out["method"] == "input" else "FLOAT")
            assert math.isfinite(out["sum"]) and out["sum"] == pytest.approx(out["text"] + out["audio"])
            assert ("text_filled" in out) == (clip["edit_type"] == "inpainting")


def test_eval_with_references_measures_every_start_and_the_inversion_baseline(
    tmp_path: Path, one_thread: None
) -> None:
    """References in the manifest: reference metrics on every output, the objective's agreement, the figure."""
    manifest = _write_clips(tmp_path / "data")
    rng = np.random.default_rng(1)
    rate = 16_000
    target = 0.3 * np.sin(2 * np.pi * 880 * np.arange(rate) / rate) + 0.01 * rng.standard_normal(rate)
    sf.write(tmp_path / "data" / "audio" / "add-ref.wav", target.astype(np.float32), rate)
    inp, inp_rate = sf.read(tmp_path / "data" / "audio" / "inp.wav", dtype="float32")
    gap = slice(int(GAP[0] * inp_rate), int(GAP[1] * inp_rate))
    inp[gap] = 0.2 * rng.standard_normal((gap.stop - gap.start, 2))
    sf.write(tmp_path / "data" / "audio" / "inp-ref.wav", inp, inp_rate)
    lines = manifest.read_text().splitlines()
    manifest.write_text(
        "\n".join([lines[0] + ",reference", lines[1] + ",audio/add-ref.wav", lines[2] + ",audio/inp-ref.wav"]) + "\n"
    )
    output = tmp_path / "out"
    methods = ["lora", "lora-input", "lora-inversion", "ddpm-inversion"]
    fast = [*FAST, "--methods", *methods, "--t-starts", "0.5", "1", "--t-start", "0.5"]
    assert main(["eval", str(manifest), "-o", str(output), *fast]) == 0
    # a rerun reads every record back from disk, undefined gains as null, and reports the same
    first = _results(output)
    assert main(["eval", str(manifest), "-o", str(output), *fast]) == 0
    assert _results(output)["clips"] == first["clips"]

    results = _results(output)
    for clip in results["clips"]:
        made = {(o["method"], o["value"]) for o in clip["outputs"]}
        assert {("lora-inversion", 0.5), ("lora-input", 1.0), ("ddpm-inversion", 1.0)} <= made
        for out in clip["outputs"]:
            assert {"ref_logmel_l1", "ref_clap", "ref_onset_f1", "ref_gain", "ref_codec_gain"} <= set(out)
        unchanged = next(o for o in clip["outputs"] if o["method"] == "input")
        assert unchanged["ref_gain"] is None or unchanged["ref_gain"] == pytest.approx(0.0, abs=1e-9)
        # the input as it is was never through the codec: in the codec's space it is not the start
        assert unchanged["ref_codec_gain"] is None or unchanged["ref_codec_gain"] < 1.0
        for method in methods:
            for key in ("objective_spearman", "objective_spearman_codec"):
                rho = clip["methods"][method][key]
                assert rho is None or -1.0 <= rho <= 1.0
    assert (output / "audio" / "add-1" / "lora-inversion-0.50.wav").is_file()
    assert len(list((output / "bundles" / "add-1").iterdir())) == 1  # the starts share the lora fit
    table = (output / "table.md").read_text()
    assert "Ref. gain" in table and "Ours (LoRA), from its inversion" in table and "DDPM inversion" in table
    assert "Ref. gain (codec)" in table
    data = (output / "reference_gain.png").read_bytes()
    assert data[:8] == PNG_MAGIC
    with open(output / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} >= {"input", "t2a", "fill", *methods}
    assert all(r["ref_logmel_l1_mean"] != "" for r in rows)


def test_inpainting_outputs_keep_the_context_sample_for_sample(run: tuple[Path, Path]) -> None:
    manifest, output = run
    source, rate = sf.read(read_manifest(manifest)[1].audio, dtype="float32", always_2d=True)
    outside = np.ones(len(source), bool)
    outside[int(GAP[0] * rate) : int(np.ceil(GAP[1] * rate))] = False
    clip = _results(output)["clips"][1]
    assert clip["mask"] == [[pytest.approx(GAP[0], abs=1e-3), pytest.approx(GAP[1], abs=1e-3)]]
    for out in clip["outputs"]:
        if out["method"] in ("full", "lora", "sdedit", "fill"):
            edited, _ = sf.read(output / out["file"], dtype="float32", always_2d=True)
            np.testing.assert_array_equal(edited[outside], source[outside])


def test_oracle_and_fixed_eta_are_the_argmax_of_the_per_value_sums(run: tuple[Path, Path]) -> None:
    clips = _results(run[1])["clips"]
    for clip in clips:
        other = next(c for c in clips if c["id"] != clip["id"])
        for method, entry in clip["methods"].items():
            grid = [v for v in entry["values"] if v["in_grid"]]
            values = [v["value"] for v in grid]
            assert entry["oracle"] == values[int(np.argmax([v["sum"] for v in grid]))]
            # one clip per edit type: the fixed value comes from the other clip alone
            other_grid = [v for v in other["methods"][method]["values"] if v["in_grid"]]
            assert entry["fixed"] == values[int(np.argmax([v["sum"] for v in other_grid]))]
            assert entry["fixed_chosen_on"]["clips"] == [other["id"]]


def test_rerun_skips_what_is_on_disk(run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, first = run
    output = tmp_path / "out"
    shutil.copytree(first, output)
    mtimes = {p: p.stat().st_mtime_ns for p in output.rglob("*.wav")}
    calls: dict[str, list] = {"fit_clip": [], "generate": [], "sdedit": [], "text_to_audio": []}
    for name in calls:
        real = getattr(nrt.evaluate, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name].append(args)
            return _real(*args, **kwargs)

        monkeypatch.setattr(nrt.evaluate, name, counted)

    # 1. Same settings: nothing is fitted, generated or loaded again
    assert main(["eval", str(manifest), "-o", str(output), *FAST]) == 0
    assert all(not c for c in calls.values())
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*.wav")} == mtimes
    assert _results(output)["clips"] == _results(first)["clips"]

    # 2. One more η: the bundles are reused, only the new η is generated
    assert main(["eval", str(manifest), "-o", str(output), *FAST, "--etas", "0", "0.25", "0.5", "1"]) == 0
    assert not calls["fit_clip"] and not calls["sdedit"] and not calls["text_to_audio"]
    assert sorted(call[2] for call in calls["generate"]) == [[0.25]] * 4  # 2 clips x full, lora
    assert (output / "audio" / "add-1" / "lora-0.25.wav").is_file()


def _bad_manifest(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    sf.write(directory / "ok.wav", 0.1 * np.ones(8000, np.float32), 16_000)
    path = directory / "manifest.csv"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    "body, message",
    [
        ("id,audio,target_prompt\nx,ok.wav,a dog\n", "missing column(s) edit_type"),
        ("id,edit_type,audio,target_prompt\nx,addition,gone.wav,a dog\n", "'gone.wav' is not a file"),
        ("id,edit_type,audio,target_prompt\n../x,addition,ok.wav,a dog\n", "clip id '../x' may hold only"),
        ("id,edit_type,audio,target_prompt\n.x,addition,ok.wav,a dog\n", "must not start with a dot"),
        ("id,edit_type,audio,target_prompt\nx,remix,ok.wav,a dog\n", "edit_type 'remix' is not one of"),
    ],
)
def test_bad_manifest_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, body: str, message: str
) -> None:
    manifest = _bad_manifest(tmp_path / "data", body)
    assert main(["eval", str(manifest), "-o", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()  # nothing heavy started


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "0"], "--limit must be at least 1"),
        (["--etas", "1.5"], "eta must lie in [0, 1]"),
        (["--fixed-eta-holdout", "nowhere/results.json"], "no such file"),
        (["--figure-clip", "other"], "'other' is not a clip of this run"),
    ],
)
def test_bad_settings_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    manifest = _bad_manifest(tmp_path / "data", "id,edit_type,audio,target_prompt\nx,addition,ok.wav,a dog\n")
    assert main(["eval", str(manifest), "-o", str(tmp_path / "out"), *FAST, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out" / "bundles").exists()


def test_default_laion_clap_offline_exits_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = _bad_manifest(tmp_path / "data", "id,edit_type,audio,target_prompt\nx,addition,ok.wav,a dog\n")
    clap, model = FAST.index("--clap"), FAST.index("--model")
    args = [a for i, a in enumerate(FAST) if i not in (clap, clap + 1, model, model + 1)]
    # a real backbone's default CLAP is LAION's, which is not on this machine
    assert main(["eval", str(manifest), "-o", str(tmp_path / "out"), *args, "--model", "declare-lab/tango"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "laion/clap-htsat-unfused" in err
    assert not (tmp_path / "out").exists()


def test_every_bad_row_is_listed_at_once(tmp_path: Path) -> None:
    manifest = _bad_manifest(
        tmp_path,
        "id,edit_type,audio,target_prompt,mask\n"
        "a/b,addition,ok.wav,a dog,\n"
        "fine,addition,ok.wav,a dog,\n"
        "fine,addition,ok.wav,a cat,\n"
        "m,addition,ok.wav,a dog,0-1\n"
        "n,inpainting,ok.wav,,\n",
    )
    with pytest.raises(InputError) as err:
        read_manifest(manifest)
    text = str(err.value)
    assert "4 bad rows" in text
    for piece in ("line 2", "line 4", "repeats line 3", "line 5", "a mask applies to inpainting", "line 6"):
        assert piece in text


def test_manifest_rows_resolve_paths_and_keep_extra_columns(tmp_path: Path) -> None:
    manifest = _bad_manifest(
        tmp_path,
        "id,edit_type,audio,target_prompt,mask,origin\n"
        "one,inpainting,ok.wav,a dog,0.4-0.5;0.1-0.2,authors\n"
        "two,addition,ok.wav,a cat,,audit\n",
    )
    one, two = read_manifest(manifest)
    assert one.audio == tmp_path / "ok.wav" and one.mask == [(0.1, 0.2), (0.4, 0.5)] and two.mask is None
    assert one.extra == {"origin": "authors"} and (one.line, two.line) == (2, 3)


@pytest.mark.parametrize("good", ["addition-e1", "A_b.c-9", "x" * 128])
def test_clip_id_accepts(good: str) -> None:
    assert validate_clip_id(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", ".hidden", "x" * 129, "a b", "é", "a\n"])
def test_clip_id_refuses(bad: str) -> None:
    with pytest.raises(InputError):
        validate_clip_id(bad)


def _summary(clip_id: str, edit_type: str, sums: dict[float, float]) -> dict:
    values = [{"value": v, "sum": s, "in_grid": True} for v, s in sums.items()]
    return {"id": clip_id, "edit_type": edit_type, "methods": {"full": {"values": values}}}


def test_fixed_eta_is_chosen_without_the_clip_it_is_reported_on() -> None:
    config = EvalConfig(methods=("full",), etas=(0.0, 0.5, 1.0))
    summaries = [
        _summary("a", "addition", {0.0: 1.0, 0.5: 1.1, 1.0: 3.0}),  # a alone would pick 1.0
        _summary("b", "addition", {0.0: 1.0, 0.5: 1.2, 1.0: 1.1}),
        _summary("c", "addition", {0.0: 1.0, 0.5: 1.3, 1.0: 1.0}),
        _summary("d", "inpainting", {0.0: 2.0, 0.5: 1.0, 1.0: 1.0}),
    ]
    choose_fixed_values(config, summaries)
    fixed = {s["id"]: s["methods"]["full"]["fixed"] for s in summaries}
    assert fixed["a"] == 0.5  # b and c prefer 0.5
    assert fixed["b"] == 1.0  # a and c: mean 2.0 at 1.0 beats 1.2 at 0.5
    assert fixed["c"] == 1.0
    assert fixed["d"] == 1.0  # no other inpainting clip: chosen on the addition clips
    assert summaries[3]["methods"]["full"]["fixed_chosen_on"]["scope"] == "every edit type"
    assert choose_best({0.0: 1.0, 0.5: 1.0}) == 0.0  # a tie goes to the more faithful value
    assert choose_fixed([], [0.0]) is None


def test_fixed_eta_from_a_holdout_run_uses_only_its_clips() -> None:
    config = EvalConfig(methods=("full",), etas=(0.0, 0.5, 1.0))
    summaries = [_summary("a", "addition", {0.0: 1.0, 0.5: 2.0, 1.0: 1.0})]
    holdout = [
        _summary("dev-1", "addition", {0.0: 1.0, 0.5: 1.0, 1.0: 2.0}),
        _summary("dev-2", "inpainting", {0.0: 9.0, 0.5: 1.0, 1.0: 1.0}),
    ]
    choose_fixed_values(config, summaries, holdout)
    entry = summaries[0]["methods"]["full"]
    assert entry["fixed"] == 1.0  # dev-1's choice; "a" itself would pick 0.5, dev-2 is another edit type
    assert entry["fixed_chosen_on"] == {"how": "holdout", "scope": "edit type", "clips": ["dev-1"]}


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    values = [0.2, 0.5, 0.6, 0.9]
    half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    got = interval(values)
    assert got["mean"] == pytest.approx(0.55) and got["n"] == 4
    assert (got["lo"], got["hi"]) == (pytest.approx(0.55 - half), pytest.approx(0.55 + half))
    assert interval([0.3]) == {"mean": 0.3, "lo": None, "hi": None, "n": 1}


def test_the_objectives_agreement_is_measured_with_either_gain() -> None:
    from nrt.evaluate import objective_spearman
    from nrt.report import objective_agreement

    grid = [
        {"sum": 0.1, "ref_gain": float("nan"), "ref_codec_gain": 0.3},
        {"sum": 0.2, "ref_gain": float("nan"), "ref_codec_gain": 0.2},
        {"sum": 0.3, "ref_gain": float("nan"), "ref_codec_gain": 0.1},
    ]
    assert objective_spearman(grid) is None  # the plain gain is undefined on every value
    assert objective_spearman(grid, "ref_codec_gain") == pytest.approx(-1.0)  # the sum ranks them backwards
    results = {"clips": [{"edit_type": "addition", "methods": {"lora": {
        "objective_spearman": None, "objective_spearman_codec": -1.0}}}]}
    assert objective_agreement(results, None) == {}
    codec = objective_agreement(results, None, "objective_spearman_codec")
    assert codec["addition"]["lora"]["mean"] == -1.0 and codec["addition"]["lora"]["n"] == 1


def test_outputs_louder_than_full_scale_are_kept_and_scored_as_made(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _write_clips(tmp_path / "data")
    made: dict[str, np.ndarray] = {}

    def loud(root, res, config, clip, unit, todo, progress):  # SDEdit's outputs, three times full scale
        rows = clip.clip.samples.shape[0]
        waves = {o: np.full((rows, clip.clip.channels), 3.0 * (i + 1), np.float32) for i, o in enumerate(todo)}
        made.update({f"{o.method}-{o.value}": w for o, w in waves.items()})
        return waves

    monkeypatch.setattr(nrt.evaluate, "_make", loud)
    output = tmp_path / "out"
    argv = [*FAST, "--methods", "sdedit", "--limit", "1"]
    assert main(["eval", str(manifest), "-o", str(output), *argv]) == 0
    for out in _results(output)["clips"][0]["outputs"]:
        if out["method"] == "sdedit":
            kept, _ = sf.read(output / out["file"], dtype="float32", always_2d=True)
            np.testing.assert_array_equal(kept, made[f"sdedit-{out['value']}"])
