"""The `nrt` command line as a user runs it: outputs, exit codes, one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from nrt.cli import build_parser, main
from nrt.errors import InputError

FAST_FIT = ["--embed-steps", "3", "--tune-steps", "3"]
FAST_SAMPLE = ["--steps", "3"]


@pytest.fixture()
def model(tiny_dir):
    return ["--model", str(tiny_dir), "--device", "cpu", "--quiet"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_then_generate(tmp_path, tone_wav, model, capsys):
    bundle = tmp_path / "bundle"
    code, out, err = run(["fit", str(tone_wav), "a dog barks", "-o", str(bundle), *FAST_FIT, *model], capsys)
    assert code == 0, err
    assert (bundle / "bundle.json").exists() and out.strip() == str(bundle)
    code, out, err = run(["generate", str(bundle), "--eta", "0.2", "0.8", "-o", str(tmp_path / "gen"),
                          "--format", "flac", *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    files = sorted((tmp_path / "gen").iterdir())
    assert [f.name for f in files] == ["eta-0.20.flac", "eta-0.80.flac"]
    info = sf.info(files[0])
    assert (info.samplerate, info.frames) == (16000, 16000)


def test_edit_to_one_file_keeps_the_bundle_beside_it(tmp_path, model, capsys):
    rate = 44100
    t = np.arange(int(0.8 * rate) + 11) / rate
    sf.write(tmp_path / "in.wav", np.stack([np.sin(2 * np.pi * 300 * t)] * 2, 1) * 0.2, rate, subtype="PCM_24")
    out_file = tmp_path / "edit.wav"
    code, out, err = run(["edit", str(tmp_path / "in.wav"), "a bell", "--eta", "0.5", "-o", str(out_file),
                          *FAST_FIT, *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    info = sf.info(out_file)
    assert (info.samplerate, info.channels, info.frames) == (rate, 2, len(t))
    assert (tmp_path / "edit.bundle" / "bundle.json").exists()


def test_inpainting_finds_the_gap(tmp_path, model, capsys):
    rate = 16000
    audio = 0.3 * np.sin(2 * np.pi * 400 * np.arange(rate) / rate)
    audio[4000:9000] = 0
    sf.write(tmp_path / "gap.wav", audio, rate)
    code, _, err = run(["edit", str(tmp_path / "gap.wav"), "a bell", "--edit-type", "inpainting", "--eta", "0.5",
                        "-o", str(tmp_path / "e.wav"), *FAST_FIT, *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    out, _ = sf.read(tmp_path / "e.wav")
    keep = np.ones(rate, bool)
    keep[4000:9000] = False
    np.testing.assert_allclose(out[keep], audio[keep], atol=1 / 32768)  # 16-bit output of the same samples


def test_sdedit_writes_one_file_per_strength(tmp_path, tone_wav, model, capsys):
    code, out, err = run(["sdedit", str(tone_wav), "rain", "--strength", "0.3", "0.6", "-o", str(tmp_path / "s"),
                          *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["strength-0.30.wav", "strength-0.60.wav"]


def test_edit_with_the_inversion_start_and_the_ddpm_inversion_baseline(tmp_path, tone_wav, model, capsys):
    code, _, err = run(["edit", str(tone_wav), "a bell", "--eta", "0", "1", "--start", "inversion", "--t-start",
                        "0.7", "-o", str(tmp_path / "e"), *FAST_FIT, *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["bundle", "eta-0.00.wav", "eta-1.00.wav"]
    code, out, err = run(["invert", str(tone_wav), "rain", "--t-start", "0.4", "0.8", "--source-prompt", "a beep",
                          "--source-guidance", "1", "-o", str(tmp_path / "z"), *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == ["t_start-0.40.wav", "t_start-0.80.wav"]
    assert out.split() == [str(tmp_path / "z" / "t_start-0.40.wav"), str(tmp_path / "z" / "t_start-0.80.wav")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["edit", "{tone}", "x", "--start", "middle", "-o", "{out}"], "invalid choice"),
        (["edit", "{tone}", "x", "--start", "input", "--t-start", "0", "-o", "{out}"], "t_start must lie in (0, 1]"),
        (["invert", "{tone}", "x", "--t-start", "1.2", "-o", "{out}"], "t_start must lie in (0, 1]"),
        (["invert", "{tone}", "x", "--source-guidance", "30", "-o", "{out}"], "guidance must lie in 0-20"),
        (["edit", "{missing}", "x", "-o", "{out}"], "no such file"),
        (["edit", "{corrupt}", "x", "-o", "{out}"], "not a readable audio file"),
        (["edit", "{tone}", "x", "--eta", "1.5", "-o", "{out}"], "eta must lie in [0, 1]"),
        (["edit", "{tone}", "x", "--steps", "0", "-o", "{out}"], "steps"),
        (["edit", "{tone}", "x", "--max-seconds", "0.6", "-o", "{out}"], "too long"),
        (["edit", "{tone}", "", "-o", "{out}"], "prompt is empty"),
        (["edit", "{tone}", "x", "--mask", "3-2", "-o", "{out}"], "must be before end"),
        (["generate", "{nobundle}", "-o", "{out}"], "no bundle.json"),
        (["fit", "{tone}", "x", "--method", "qlora", "-o", "{out}"], "invalid choice"),
        (["edit", "{tone}", "x", "--model", "nobody/nothing", "-o", "{out}"], "nobody/nothing"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(argv, message, tmp_path, tone_wav, capsys):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "nobundle").mkdir()
    paths = {"missing": tmp_path / "missing.wav", "corrupt": tmp_path / "corrupt.wav", "tone": tone_wav,
             "out": tmp_path / "out.wav", "nobundle": tmp_path / "nobundle"}
    argv = [a.format(**paths) for a in argv] + ["--quiet"]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("nrt: error:") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.wav").exists() and not (tmp_path / "out.bundle").exists()


def test_help_names_every_option_and_default():
    text = build_parser()._subparsers._group_actions[0].choices["edit"].format_help()
    for flag in ["--model", "--device", "--dtype", "--eta", "--steps", "--guidance", "--seed", "--method",
                 "--embed-steps", "--embed-lr", "--tune-steps", "--tune-lr", "--lora-rank", "--mask",
                 "--output", "--quiet"]:
        assert flag in text
    flat = " ".join(text.split())
    assert "(default: 200 for mini, 20 for the toy models, 500 otherwise)" in flat
    assert "(default: 200 for mini, 40 for the toy models, 1500 otherwise)" in flat
    assert "(default: 200)" in text  # sampling steps
    assert "(default: None)" not in text  # an unset default is explained, not printed


def test_models_and_bench(capsys, tiny_dir):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "tiny" in out and "declare-lab/tango" in out
    code, out, err = run(["bench", "--model", str(tiny_dir), "--device", "cpu", "--seconds", "1", "--iters", "1",
                          "--edit-seconds", "0"], capsys)
    assert code == 0, err
    for stage in ["step 1", "step 2 full", "step 2 LoRA", "sampling"]:
        assert stage in out
    assert out.count("s/step") == 4 and "nrt edit" not in out


def test_bench_times_a_whole_edit_at_the_models_defaults():
    from nrt.bench import time_edit
    from nrt.settings import SampleConfig

    # the built-in tiny model's fit is a few steps, and sampling is cut to three: this checks the
    # path, not a speed
    seconds = time_edit("tiny", "cpu", "fp32", 1.0, SampleConfig(steps=3))
    assert 0 < seconds < float("inf")
    with pytest.raises(InputError, match="--edit-seconds"):
        time_edit("tiny", "cpu", "fp32", 0.1)


def test_console_script_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nrt.cli", "generate", str(tmp_path), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "bundle.json" in result.stderr


def test_fit_flags_left_out_take_the_models_defaults():
    from nrt.cli import _fit_config
    from nrt.defaults import MINI_FIT, MINI_TUNE_LR
    from nrt.settings import FitConfig

    parse = build_parser().parse_args
    mini = _fit_config(parse(["edit", "in.wav", "p", "-o", "out.wav"]))
    assert (mini.embed_steps, mini.embed_lr, mini.tune_steps) == (
        MINI_FIT["embed_steps"], MINI_FIT["embed_lr"], MINI_FIT["tune_steps"])
    assert mini.resolved_tune_lr == MINI_TUNE_LR["lora"]
    full = _fit_config(parse(["edit", "in.wav", "p", "-o", "out.wav", "--method", "full"]))
    assert full.resolved_tune_lr == MINI_TUNE_LR["full"]
    paper = _fit_config(parse(["edit", "in.wav", "p", "-o", "out.wav", "--model", "declare-lab/tango"]))
    d = FitConfig()
    assert (paper.embed_steps, paper.tune_steps, paper.resolved_tune_lr) == (d.embed_steps, d.tune_steps, 3e-4)
    given = _fit_config(parse(["edit", "in.wav", "p", "-o", "out.wav", "--embed-steps", "7", "--tune-lr", "1e-5"]))
    assert given.embed_steps == 7 and given.tune_lr == 1e-5 and given.tune_steps == MINI_FIT["tune_steps"]


def test_sample_flags_left_out_take_the_models_defaults(monkeypatch):
    from types import MappingProxyType

    from nrt.cli import _etas, _sample_config
    from nrt.settings import SampleConfig

    # values no other default has, so that a flag that ignored the model's table would show
    monkeypatch.setattr(
        "nrt.defaults.MINI_SAMPLE", MappingProxyType({"start": "inversion", "t_start": 0.35, "keep_db": 7.5})
    )
    monkeypatch.setattr("nrt.defaults.MINI_ETA", {"lora": {"style_transfer": 0.15}, "full": {"addition": 0.65}})
    parse = build_parser().parse_args
    args = parse(["edit", "in.wav", "p", "-o", "out.wav", "--edit-type", "style_transfer"])
    config = _sample_config(args)
    assert (config.start, config.t_start, config.keep_db) == ("inversion", 0.35, 7.5)
    assert _etas(args, "lora", "style_transfer") == [0.15]
    assert _etas(args, "full", "addition") == [0.65]
    assert _etas(args, "full", "inpainting") == [0.5]  # not in the table: the general default
    given = parse(["edit", "in.wav", "p", "-o", "out.wav", "--start", "input", "--t-start", "0.8", "--eta", "1"])
    config = _sample_config(given)
    assert (config.start, config.t_start) == ("input", 0.8) and _etas(given, "lora", "addition") == [1.0]
    assert _sample_config(parse(["edit", "in.wav", "p", "-o", "o.wav", "--keep-db", "12"])).keep_db == 12.0
    paper = _sample_config(parse(["edit", "in.wav", "p", "-o", "out.wav", "--model", "declare-lab/tango"]))
    assert (paper.start, paper.t_start, paper.keep_db) == (SampleConfig().start, SampleConfig().t_start, 0.0)
    with pytest.raises(InputError, match="eta"):
        _etas(parse(["edit", "in.wav", "p", "-o", "out.wav", "--eta", "1.5"]), "lora", "addition")


def test_generate_takes_eta_for_the_bundles_method_and_edit_type(tmp_path, tone_wav, model, capsys, monkeypatch):
    bundle = tmp_path / "bundle"
    code, _, err = run(["fit", str(tone_wav), "a dog barks", "-o", str(bundle), "--method", "full",
                        "--edit-type", "style_transfer", *FAST_FIT, *model], capsys)
    assert code == 0, err
    import dataclasses

    import nrt.defaults

    table = {"full": {"style_transfer": 0.35, "addition": 0.9}, "lora": {"style_transfer": 0.75}}
    plain = nrt.defaults.model_defaults
    monkeypatch.setattr(nrt.defaults, "model_defaults", lambda m: dataclasses.replace(plain(m), eta=table))
    code, out, err = run(["generate", str(bundle), "-o", str(tmp_path / "gen"), *FAST_SAMPLE, *model], capsys)
    assert code == 0, err
    assert [f.name for f in (tmp_path / "gen").iterdir()] == ["eta-0.35.wav"]  # full, style transfer


def test_the_inversion_at_eta_0_kept_gives_the_recording_back(tmp_path, tone_wav, model, capsys):
    bundle = tmp_path / "bundle"
    code, _, err = run(["fit", str(tone_wav), "a dog barks", "-o", str(bundle), *FAST_FIT, *model], capsys)
    assert code == 0, err
    common = ["--eta", "0", "--start", "inversion", "--t-start", "0.5", *FAST_SAMPLE, *model]
    code, _, err = run(["generate", str(bundle), "-o", str(tmp_path / "plain"), *common], capsys)
    assert code == 0, err
    code, _, err = run(["generate", str(bundle), "-o", str(tmp_path / "kept"), "--keep-db", "10", *common], capsys)
    assert code == 0, err
    source, _ = sf.read(tone_wav, dtype="float32")
    plain, _ = sf.read(tmp_path / "plain" / "eta-0.00.wav", dtype="float32")
    kept, _ = sf.read(tmp_path / "kept" / "eta-0.00.wav", dtype="float32")
    assert np.abs(plain - source).max() > 0.01  # the codec's round trip of the input, not the input
    np.testing.assert_allclose(kept, source, atol=2e-4)  # the recording itself (16-bit file)


def test_a_bad_keep_db_exits_2_before_the_fit(tmp_path, tone_wav, model, capsys):
    code, _, err = run(["edit", str(tone_wav), "a bell", "--keep-db", "-3", "-o", str(tmp_path / "e.wav"), *model],
                       capsys)
    assert code == 2 and "keep_db must be a number of dB >= 0" in err
    assert not (tmp_path / "e.bundle").exists()


def test_the_baselines_take_keep_db_too(tmp_path, tone_wav, model, capsys):
    source, _ = sf.read(tone_wav, dtype="float32")
    for command, grid in (("sdedit", ["--strength", "0.6"]), ("invert", ["--t-start", "0.6"])):
        out = tmp_path / f"{command}.wav"
        # a change of 1000 dB is never reached: every bin is the recording's
        code, _, err = run([command, str(tone_wav), "a bell", *grid, "--keep-db", "1000", "-o", str(out),
                            *FAST_SAMPLE, *model], capsys)
        assert code == 0, err
        kept, _ = sf.read(out, dtype="float32")
        np.testing.assert_allclose(kept, source, atol=2e-4)
