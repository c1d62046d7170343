"""`nrt score`: the numbers are the scorer's and the onset metric's, and errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nrt.audio import load_audio
from nrt.clap import ClapScorer
from nrt.cli import main
from nrt.onsets import onset_f1

PROMPT = "a dog barks in the distance"


def _clicks(times: list[float], rate: int, seconds: float = 2.0) -> np.ndarray:
    wave = 0.005 * np.random.default_rng(1).standard_normal(int(seconds * rate))
    for t in times:
        start = int(t * rate)
        n = int(0.03 * rate)
        wave[start : start + n] += (
            0.6 * np.exp(-np.arange(n) / (0.004 * rate)) * np.sin(2 * np.pi * 1500 * np.arange(n) / rate)
        )
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("score")
    sf.write(root / "input.wav", _clicks([0.2, 0.7, 1.2, 1.6], 16_000), 16_000, subtype="PCM_16")
    sf.write(root / "edit.wav", _clicks([0.2, 0.72, 1.4], 44_100), 44_100, subtype="PCM_16")
    return root / "input.wav", root / "edit.wav"


def _score_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["score", *args, "--clap", "tiny", "--device", "cpu", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("band_limit", [None, 16_000])
def test_score_json_equals_the_scorer_and_onset_f1(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture, band_limit: int | None
) -> None:
    input_path, edit_path = files
    extra = [] if band_limit is None else ["--band-limit", str(band_limit)]
    got = _score_json(capsys, str(input_path), str(edit_path), PROMPT, *extra)

    reference, edit = load_audio(input_path), load_audio(edit_path)
    scorer = ClapScorer.from_pretrained("tiny", band_limit_rate=band_limit)
    clap = scorer.score_one(edit.samples, edit.sample_rate, reference.samples, reference.sample_rate, PROMPT)
    onsets = onset_f1(reference.samples, reference.sample_rate, edit.samples, edit.sample_rate)
    assert got["text"] == pytest.approx(clap.text, abs=1e-6)
    assert got["audio"] == pytest.approx(clap.audio, abs=1e-6)
    assert got["sum"] == pytest.approx(clap.sum, abs=1e-6)
    assert (got["onset_f1"], got["onset_precision"], got["onset_recall"]) == (
        onsets.f1,
        onsets.precision,
        onsets.recall,
    )
    assert got["band_limit_rate"] == band_limit
    assert 0 < onsets.f1 < 1  # a real partial match, not a degenerate case


def test_an_edit_identical_to_the_input_scores_audio_clap_1(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    input_path, _ = files
    got = _score_json(capsys, str(input_path), str(input_path), PROMPT)
    assert got["audio"] == pytest.approx(1.0, abs=1e-6)
    assert got["onset_f1"] == 1.0 and got["onset_n_input"] == 4


def test_human_output_names_the_numbers_and_the_clap_caveat(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    assert main(["score", *map(str, files), PROMPT, "--clap", "tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for label in ("Text CLAP", "Audio CLAP", "Sum", "Onset F1", "precision", "recall"):
        assert label in out
    caveat = [line for line in out.splitlines() if "Microsoft" in line]
    assert len(caveat) == 1 and "Table 1" in caveat[0]


def test_laion_model_offline_fails_in_one_line(files: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["score", *map(str, files), PROMPT, "--clap", "laion/clap-htsat-unfused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "laion/clap-htsat-unfused" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.wav", "{edit}", PROMPT], "no such file"),
        (["{input}", "{edit}", " "], "the prompt is empty"),
        (["{input}", "{edit}", PROMPT, "--band-limit", "0"], "--band-limit"),
    ],
)
def test_bad_input_exits_2(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    args = [a.format(input=files[0], edit=files[1]) for a in args]
    assert main(["score", *args, "--clap", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


# -- --reference: the edit against the audio it should produce ---------------------------------
@pytest.fixture(scope="module")
def reference_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clicks the edit should have produced, at a third rate, in stereo and 0.5 s longer."""
    path = tmp_path_factory.mktemp("score-reference") / "reference.wav"
    wave = _clicks([0.2, 0.7, 1.4, 1.8], 22_050, seconds=2.5)
    sf.write(path, np.stack([wave, 0.8 * wave], axis=1), 22_050, subtype="PCM_16")
    return path


def test_reference_metrics_are_the_yardsticks(
    files: tuple[Path, Path], reference_file: Path, capsys: pytest.CaptureFixture
) -> None:
    from nrt.backbones import load_backbone
    from nrt.reference import REFERENCE_KEYS, ReferenceYardstick

    input_path, edit_path = files
    got = _score_json(capsys, str(input_path), str(edit_path), PROMPT, "--reference", str(reference_file))

    input_clip, edit, reference = load_audio(input_path), load_audio(edit_path), load_audio(reference_file)
    yardstick = ReferenceYardstick(
        load_backbone("mini", device="cpu"), ClapScorer.from_pretrained("tiny"), input_clip, reference
    )
    (expected,) = yardstick.score([edit.samples], edit.sample_rate)
    assert got["reference"] == str(reference_file) and got["model"] == "mini"
    for key in REFERENCE_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert 0 < got["ref_gain"] < 1 and got["input_ref_logmel_l1"] > got["codec_ref_logmel_l1"]
    assert got["ref_codec_gain"] < 1 and got["codec_input_codec_ref_logmel_l1"] > 0
    # the scores against the input are those of a run without --reference
    plain = _score_json(capsys, str(input_path), str(edit_path), PROMPT)
    assert not set(plain) & set(REFERENCE_KEYS) and "reference" not in plain
    assert {k: v for k, v in got.items() if k in plain} == plain


def test_reference_equal_to_the_input_gives_an_undefined_gain(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    input_path, edit_path = files
    got = _score_json(capsys, str(input_path), str(edit_path), PROMPT, "--reference", str(input_path))
    assert got["ref_gain"] is None and got["input_ref_logmel_l1"] == 0.0
    assert got["ref_codec_gain"] is None and got["codec_input_codec_ref_logmel_l1"] == 0.0
    assert main(["score", str(input_path), str(edit_path), PROMPT, "--clap", "tiny", "--device", "cpu",
                 "--reference", str(input_path)]) == 0
    out = capsys.readouterr().out
    assert "Against the reference" in out and "Gain        undefined" in out and "Codec gain  undefined" in out
    for label in ("Log-mel L1", "d(codec(ref), ref)", "cos(edit, ref)", "the reference's onsets"):
        assert label in out


@pytest.mark.parametrize("name, content, message", [
    ("missing.wav", None, "no such file"),
    ("text.wav", "not audio", "not a readable audio file"),
])
def test_a_bad_reference_exits_2_in_one_line(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: str | None,
    message: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["score", *map(str, files), PROMPT, "--clap", "tiny", "--reference", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nrt: error: --reference: ") and message in err
