"""The sweep on a local Ray with 2 CPUs: tiny backbone, tiny CLAP, three steps, two trials a clip."""

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from nrt.defaults import MINI_FIT, MINI_SAMPLE, MINI_TUNE_LR
from nrt.errors import InputError
from nrt.settings import DEFAULT_TUNE_LR, STARTS, FitConfig
from nrt.storage import Storage, bundle_rel, read_registry_entry
from tests.conftest import SMOKE_FITS, smoke_config, write_manifest, write_tone_clip

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

from nrt.sweep import fit_key, parse_param, read_clips, run_sweep  # noqa: E402 (after the skip)

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("sweep_script", ROOT / "tune" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """Two one-second clips: a beep, and a beep with a silent gap to inpaint."""
    directory = tmp_path_factory.mktemp("clips")
    write_tone_clip(directory / "beep.wav")
    data, rate = sf.read(directory / "beep.wav")
    data[int(0.55 * rate): int(0.85 * rate)] = 0.0
    sf.write(directory / "gap.wav", data, rate, subtype="PCM_16")
    return directory


@pytest.fixture(scope="module")
def manifest(clip_dir):
    return write_manifest(clip_dir, [
        ("beep", "addition", "beep.wav", "a beep with a dog barking"),
        ("gap", "inpainting", "gap.wav", "a beep and a knock in the middle"),
    ])


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="nrt", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def swept(ray_local, manifest, tmp_path_factory):
    """Two clips, two fit settings each (two step 2 learning rates)."""
    storage = tmp_path_factory.mktemp("sweep") / "root"
    fits = tuple(FitConfig(**SMOKE_FITS, tune_lr=lr) for lr in (1e-4, 2e-4))
    space = {"steps": parse_param("steps", "3"), "eta": parse_param("eta", "0:1"),
             "start": parse_param("start", list(STARTS)), "t_start": parse_param("t_start", "0.2:1")}
    lines = []
    result = run_sweep(manifest, smoke_config(storage, fits=fits, space=space), on_progress=lines.append,
                       poll_seconds=0.5)
    return Storage(storage), result, fits, lines


# -- a whole sweep ------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_writes_registry_entries_and_the_study_database(swept):
    storage, result, _, lines = swept
    assert [r["clip_id"] for r in result.rows] == ["beep", "gap"]
    assert [r["status"] for r in result.rows] == ["done", "done"]
    for row in result.rows:
        entry = read_registry_entry(storage, row["clip_id"])
        assert entry is not None
        assert entry["trials"] == {"run": 4, "done": 4, "failed": 0}  # two settings, two trials each
        assert 0.0 <= entry["best"]["eta"] <= 1.0 and entry["best"]["steps"] == 3
        assert entry["best"]["start"] in STARTS and 0.2 <= entry["best"]["t_start"] <= 1.0
        assert entry["search"]["start"] == "noise|input|inversion" and entry["search"]["t_start"] == "0.2:1"
        assert entry["scores"]["sum"] == pytest.approx(entry["scores"]["text"] + entry["scores"]["audio"])
        assert storage.exists(f"{entry['bundle']}/bundle.json")
        assert storage.read_bytes(entry["plot"]).startswith(b"\x89PNG")
        trials = list(csv.DictReader(storage.read_bytes(entry["trials_csv"]).decode().splitlines()))
        assert len(trials) == 4 and max(float(t["sum"]) for t in trials) == pytest.approx(entry["scores"]["sum"])
        assert {t["start"] for t in trials} <= set(STARTS) and all(0.2 <= float(t["t_start"]) <= 1 for t in trials)
        best = max(trials, key=lambda t: float(t["sum"]))
        assert (best["start"], float(best["t_start"])) == (entry["best"]["start"], entry["best"]["t_start"])
        assert {t["fit_key"] for t in trials} == {s["fit_key"] for s in entry["settings"]}
        assert json.loads(storage.read_bytes(f"status/{row['clip_id']}.json"))["state"] == "done"
    # the inpainting clip was scored on its own filled region too, the addition clip not
    assert "text_filled" in read_registry_entry(storage, "gap")["scores"]
    assert "text_filled" not in read_registry_entry(storage, "beep")["scores"]

    studies = optuna.get_all_study_summaries(f"sqlite:///{storage.local_path('optuna.db')}")
    assert sorted(s.n_trials for s in studies) == [2, 2, 2, 2]
    assert {s.study_name.split(".")[0] for s in studies} == {"beep", "gap"}
    table = list(csv.DictReader(storage.read_bytes("results.csv").decode().splitlines()))
    assert [(r["clip_id"], r["status"]) for r in table] == [("beep", "done"), ("gap", "done")]
    assert all(r["start"] in STARTS and r["t_start"] for r in table)
    assert any("beep: searching" in line for line in lines) and any("gap: done" in line for line in lines)


@pytest.mark.slow
def test_each_fit_setting_is_fitted_exactly_once(swept):
    storage, result, fits, _ = swept
    assert result.fits["computed"] == 4 and result.fits["reused"] == 0
    for clip in ("beep", "gap"):
        keys = storage.list(f"fits/{clip}")
        assert len(keys) == len(fits) == len(storage.list(f"bundles/{clip}"))
        for key in keys:
            attempts = storage.list(f"fits/{clip}/{key}")
            assert len(attempts) == 1
            assert storage.read_json(f"fits/{clip}/{key}/{attempts[0]}")["state"] == "done"


@pytest.mark.slow
def test_a_second_sweep_needs_resume_and_then_reuses_everything(swept, manifest):
    storage, _, fits, _ = swept
    with pytest.raises(InputError, match="--resume"):
        run_sweep(manifest, smoke_config(storage.root, fits=fits))
    before = {p: p.stat().st_mtime_ns for p in storage.local_path("bundles").rglob("bundle.json")}
    result = run_sweep(manifest, smoke_config(storage.root, fits=fits, resume=True))
    assert [r["status"] for r in result.rows] == ["earlier", "earlier"]
    assert {p: p.stat().st_mtime_ns for p in storage.local_path("bundles").rglob("bundle.json")} == before


@pytest.mark.slow
def test_two_callers_of_one_fit_share_one_computation(ray_local, manifest, tmp_path):
    from nrt.sweep.clips import stage_clip
    from nrt.sweep.fits import coordinator, fit_task

    storage = Storage(tmp_path / "root")
    clip = read_clips(manifest)[0]
    stage_clip(storage, clip)
    fit = FitConfig(**SMOKE_FITS)
    key = fit_key(fit, "tiny", "fp32", clip.job.identity())
    fits = coordinator()
    before = ray.get(fits.counts.remote())
    args = (storage, clip.job, fit.to_dict(), key, "tiny", "fp32", "cpu")
    options = {"num_cpus": 1, "max_retries": 0}
    first, second = ray.get([fits.ensure.remote((clip.job.clip_id, key), fit_task, args, options) for _ in range(2)])
    after = ray.get(fits.counts.remote())

    assert first == second and first["computed"] is True
    assert after.get("joined", 0) - before.get("joined", 0) == 1
    assert len(storage.list(f"fits/{clip.job.clip_id}/{key}")) == 1  # one attempt, one computation
    again = ray.get(fits.ensure.remote((clip.job.clip_id, key), fit_task, args, options))
    assert again == {"bundle": bundle_rel(clip.job.clip_id, key), "computed": False}


# -- faults -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failing_clip_does_not_stop_the_others(ray_local, clip_dir, tmp_path):
    manifest = write_manifest(tmp_path, [
        ("good", "addition", str(clip_dir / "beep.wav"), "a beep with a dog barking"),
        ("bad-fit", "addition", str(clip_dir / "beep.wav"), "a beep with a cat"),
        ("bad-trials", "addition", str(clip_dir / "beep.wav"), "a beep with a bird"),
    ])
    storage = Storage(tmp_path / "root")
    config = smoke_config(storage.root, trials=1)
    clips = {c.job.clip_id: c for c in read_clips(manifest)}
    # bad-fit: its staged input is damaged after staging, so every fit attempt raises
    bad = clips["bad-fit"].job
    storage.write_bytes(bad.input, b"RIFF but not audio")
    storage.write_json(f"clips/{bad.clip_id}/clip.json", {**bad.to_dict(), "source": "test"})
    # bad-trials: a bundle whose weights are damaged, so the fit is skipped and every trial raises
    job = clips["bad-trials"].job
    rel = bundle_rel(job.clip_id, fit_key(config.fits[0], config.model, config.dtype, job.identity()))
    for name in ("embeddings.safetensors", "unet_lora.safetensors", "input.flac"):
        storage.write_bytes(f"{rel}/{name}", b"damaged")
    storage.write_json(f"{rel}/bundle.json", {"format": "nrt-bundle", "format_version": 1,
                                              "files": ["embeddings.safetensors", "unet_lora.safetensors", "input.flac"]})

    result = run_sweep(manifest, config)

    status = {r["clip_id"]: r for r in result.rows}
    assert status["good"]["status"] == "done" and read_registry_entry(storage, "good") is not None
    assert status["bad-fit"]["status"] == "failed" and "InputError" in status["bad-fit"]["error"]
    assert status["bad-trials"]["status"] == "failed"
    assert result.failed == ["bad-fit", "bad-trials"]
    assert read_registry_entry(storage, "bad-fit") is None and read_registry_entry(storage, "bad-trials") is None
    # a fit that raises is retried (max_retries=1) and no more: two attempts, both failed
    [key] = storage.list("fits/bad-fit")
    attempts = [storage.read_json(f"fits/bad-fit/{key}/{a}") for a in storage.list(f"fits/bad-fit/{key}")]
    assert [a["state"] for a in attempts] == ["failed", "failed"]
    assert storage.read_json("status/bad-trials.json")["state"] == "failed"
    table = list(csv.DictReader(storage.read_bytes("results.csv").decode().splitlines()))
    assert [r["status"] for r in table] == ["done", "failed", "failed"]


def test_bad_manifest_rows_are_reported_by_row_before_any_work(clip_dir, tmp_path, capsys):
    (tmp_path / "noise.wav").write_bytes(os.urandom(2000))
    short = tmp_path / "short.wav"
    sf.write(short, np.full(800, 0.1), 16000)
    rows = [
        ("ok", "addition", str(clip_dir / "beep.wav"), "a beep"),
        ("missing", "addition", str(tmp_path / "nowhere.wav"), "a beep"),
        ("../evil", "addition", str(clip_dir / "beep.wav"), "a beep"),
        ("ok", "addition", str(clip_dir / "beep.wav"), "a beep again"),
    ]
    root = tmp_path / "root"
    script = _load_script()
    code = script.main(["--manifest", str(write_manifest(tmp_path, rows)), "--storage", str(root), "--smoke-test"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "line 3 ('missing')" in err and "line 4 ('../evil')" in err and "line 5 ('ok')" in err
    assert not root.exists()  # nothing staged, no Ray started

    rows = [("noise", "addition", "noise.wav", "a beep"), ("short", "addition", "short.wav", "a beep"),
            ("ok", "addition", str(clip_dir / "beep.wav"), "a beep")]
    with pytest.raises(InputError) as caught:
        run_sweep(write_manifest(tmp_path, rows), smoke_config(root))
    assert "line 2 ('noise')" in str(caught.value) and "not a readable audio file" in str(caught.value)
    assert "line 3 ('short')" in str(caught.value) and "too short" in str(caught.value)
    assert not root.exists()


# -- the command line ---------------------------------------------------------------------------
def test_flags_become_the_fit_grid_and_the_search_space():
    script = _load_script()
    args = script.build_parser().parse_args([
        "--method", "full", "lora", "--tune-lr", "1e-5", "2e-5", "--lora-rank", "4", "8", "--embed-steps", "7",
        "--eta", "0.3:0.9", "--steps", "20", "40", "--guidance", "3", "--trials", "5", "--storage", "somewhere",
    ])
    config = script.sweep_config(args)
    # full ignores the LoRA rank: 2 rates for full + 2 rates x 2 ranks for LoRA
    assert len(config.fits) == 6
    assert {(f.method, f.tune_lr, f.lora_rank if f.method == "lora" else None) for f in config.fits} == {
        ("full", 1e-5, None), ("full", 2e-5, None), ("lora", 1e-5, 4), ("lora", 1e-5, 8), ("lora", 2e-5, 4),
        ("lora", 2e-5, 8)}
    assert all(f.embed_steps == 7 and f.tune_steps == MINI_FIT["tune_steps"] for f in config.fits)  # mini's default
    assert all(f.embed_lr == MINI_FIT["embed_lr"] for f in config.fits)
    assert config.space["eta"].kind == "range" and config.space["eta"].values == (0.3, 0.9)
    assert config.space["steps"].kind == "choice" and config.space["steps"].values == (20, 40)
    assert config.space["guidance"].fixed and config.param_space() == {
        "guidance": 3.0, "scheduler": "ddpm", "keep_db": MINI_SAMPLE["keep_db"], "seed": 0}  # keep_db: mini's
    # the η/timestep search: t_start is searched beside η, the start chosen among the three
    assert config.space["start"].kind == "choice" and config.space["start"].values == STARTS
    assert config.space["t_start"].kind == "range" and config.space["t_start"].values == (0.2, 1.0)
    assert type(config.space["start"].distribution()).__name__ == "CategoricalDistribution"
    assert type(config.space["t_start"].distribution()).__name__ == "FloatDistribution"
    assert config.trials == 5 and config.clap == "mini" and config.storage == "somewhere"
    # a rate left out takes the model's default for its method
    mini = script.sweep_config(script.build_parser().parse_args(["--method", "full", "lora"]))
    assert {(f.method, f.tune_lr) for f in mini.fits} == {("full", MINI_TUNE_LR["full"]), ("lora", MINI_TUNE_LR["lora"])}
    toy = script.sweep_config(script.build_parser().parse_args(["--model", "tiny"]))
    assert toy.clap == "tiny" and toy.fits[0].resolved_tune_lr == DEFAULT_TUNE_LR["lora"] and toy.fits[0].tune_steps == 40
    assert set(config.searched) == {"eta", "steps", "start", "t_start"}
    chosen = script.sweep_config(script.build_parser().parse_args(["--start", "inversion", "--t-start", "0.3", "0.5"]))
    assert chosen.param_space()["start"] == "inversion" and chosen.space["t_start"].values == (0.3, 0.5)
    noise = script.sweep_config(script.build_parser().parse_args(["--start", "noise", "--smoke-test"]))
    assert noise.param_space()["start"] == "noise" and noise.space["steps"].values == (3,)
    # a sweep given no start, as before this setting existed, runs every trial from noise
    assert smoke_config("x").param_space() == {"steps": 3, "guidance": 3.0, "scheduler": "ddpm", "start": "noise",
                                               "t_start": 0.6, "keep_db": 0.0, "seed": 0}
    kept = script.sweep_config(script.build_parser().parse_args(["--keep-db", "12"]))
    assert kept.param_space()["keep_db"] == 12.0 and "keep_db" not in kept.searched
    both = script.sweep_config(script.build_parser().parse_args(["--keep-db", "0", "12"]))
    assert both.space["keep_db"].kind == "choice" and both.space["keep_db"].values == (0.0, 12.0)
    with pytest.raises(InputError, match="keep_db must be a number of dB >= 0"):
        script.sweep_config(script.build_parser().parse_args(["--keep-db", "-2"]))


@pytest.mark.parametrize("name, texts, message", [
    ("eta", ["1.5"], "eta must lie in"),
    ("eta", ["0.9:0.1"], "from low to high"),
    ("steps", ["0:10"], "steps must be"),
    ("steps", ["ten"], "not a int"),
    ("guidance", ["1", "2:3"], "not both"),
    ("start", ["noise", "middle"], "start must be one of noise, input, inversion, got 'middle'"),
    ("t_start", ["0:0.5"], "t_start must lie in"),
    ("t_start", ["1.5"], "t_start must lie in"),
    ("t_start", ["soon"], "--t-start: 'soon' is not a float"),
])
def test_bad_search_values_name_the_flag(name, texts, message):
    with pytest.raises(InputError, match=message):
        parse_param(name, texts)


def test_bad_flags_exit_2_with_one_line(capsys):
    script = _load_script()
    assert script.main(["--trials", "0", "--storage", "/nonexistent/x"]) == 2
    assert "trials must be" in capsys.readouterr().err


def test_a_registry_entry_from_before_the_start_was_searched_reads_as_noise():
    from nrt.sweep import sample_config
    from nrt.sweep.progress import render_table
    from nrt.sweep.runner import _earlier_row

    old = {"clip_id": "old", "bundle": "bundles/old/k", "seconds": 1.0,
           "best": {"eta": 0.4, "steps": 3, "guidance": 2.0, "scheduler": "ddpm", "seed": 0},
           "scores": {"text": 0.1, "audio": 0.9, "sum": 1.0}, "trials": {"run": 2, "done": 2, "failed": 0}}
    row = _earlier_row(old)
    assert (row["start"], row["t_start"], row["eta"]) == ("noise", 0.6, 0.4)
    config = sample_config(old["best"])
    assert (config.start, config.t_start, config.steps, config.guidance) == ("noise", 0.6, 3, 2.0)
    new = _earlier_row({**old, "best": {**old["best"], "start": "inversion", "t_start": 0.45}})
    table = render_table([row, new]).splitlines()
    assert " noise " in table[2] and " inversion@0.45 " in table[3]


def test_fit_keys_change_with_what_changes_the_fit():
    clip = {"input": "abc", "prompt": "p", "edit_type": "addition", "mask": None}
    base = fit_key(FitConfig(method="full"), "tiny", "fp32", clip)
    assert base == fit_key(FitConfig(method="full", lora_rank=4, gradient_checkpointing=True), "tiny", "fp32", clip)
    assert base != fit_key(FitConfig(method="full", tune_lr=2e-6), "tiny", "fp32", clip)
    assert base != fit_key(FitConfig(method="full"), "tiny", "fp32", {**clip, "prompt": "q"})
    assert fit_key(FitConfig(lora_rank=4), "tiny", "fp32", clip) != fit_key(FitConfig(lora_rank=8), "tiny", "fp32", clip)


def test_a_worker_edit_is_the_edit_generate_makes(backbone, tone_wav, tmp_path):
    """The trial's cached clip (UNet fitted once, input prepared once) changes nothing in the output."""
    import torch

    from nrt.audio import load_audio
    from nrt.bundle import load_bundle, save_bundle
    from nrt.edit import generate, prepare_input
    from nrt.fit import fit
    from nrt.scoring import load_scorer
    from nrt.settings import SampleConfig
    from nrt.sweep.fitted import FittedClip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a worker with one CPU uses; two threads are slower on these ops
    clip = load_audio(tone_wav)
    result = fit(backbone, prepare_input(backbone, clip).wave, "a beep", FitConfig(**SMOKE_FITS), progress=False)
    bundle = load_bundle(save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="a beep"))
    fitted = FittedClip(backbone, bundle, load_scorer("tiny", band_limit_rate=backbone.sample_rate))
    config = SampleConfig(steps=3, guidance=2.0)
    try:
        cached = [fitted.edit_one(eta, config, seed=5) for eta in (0.2, 0.8)]
    finally:
        fitted.close()
    reference = generate(backbone, bundle, [0.2, 0.8], config, seed=5, progress=False)
    torch.set_num_threads(threads)
    for a, b in zip(cached, reference):
        assert a.shape == clip.samples.shape
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not torch.equal(torch.from_numpy(cached[0]), torch.from_numpy(cached[1]))
