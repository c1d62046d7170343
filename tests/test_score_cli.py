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
