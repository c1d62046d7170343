"""The reference yardstick on nrt-mini, the manifest's reference column, and nrt-mini's cases on disk."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nrt.audio import AudioClip, load_audio, resample
from nrt.backbones import load_backbone
from nrt.errors import InputError
from nrt.manifest import load_clips, read_manifest
from nrt.mini.cases import write_cases
from nrt.mini.scenes import SAMPLE_RATE, edit_cases
from nrt.reference import DEFAULT_MIN_SPAN_DB, REFERENCE_KEYS, ReferenceYardstick
from nrt.scoring import load_scorer


def _clip(samples: np.ndarray, rate: int = SAMPLE_RATE) -> AudioClip:
    samples = np.asarray(samples, np.float32)
    return AudioClip(samples[:, None] if samples.ndim == 1 else samples, rate, "FLOAT", "WAV")


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("mini", device="cpu")


@pytest.fixture(scope="module")
def scorer():
    return load_scorer("mini", device="cpu", progress=False)


@pytest.fixture(scope="module")
def cases():
    return edit_cases(n_per_type=2)


@pytest.fixture(scope="module")
def addition(cases) -> tuple[AudioClip, AudioClip]:
    """add-000: two low beeps join heavy rain; the input is far from the reference."""
    case = cases[0]
    return _clip(case.source_audio()), _clip(case.target.render())


@pytest.fixture(scope="module")
def yardstick(backbone, scorer, addition) -> ReferenceYardstick:
    return ReferenceYardstick(backbone, scorer, *addition)


def test_codec_output_gains_exactly_one_and_the_input_exactly_zero(yardstick, addition, cases) -> None:
    input_clip, reference = addition
    unrelated = cases[3].target.render()  # add-001's target: footsteps and an engine over a drone
    rows = yardstick.score([yardstick.codec_reference, input_clip.samples, reference.samples, unrelated], SAMPLE_RATE)
    codec, unchanged, perfect, other = rows
    assert all(set(row) == set(REFERENCE_KEYS) for row in rows)

    # the room is real: the input is much further from the reference than the codec's output
    assert yardstick.input_distance > yardstick.codec_distance + 5.0
    assert codec["ref_gain"] == 1.0 and codec["ref_logmel_l1"] == yardstick.codec_distance
    assert unchanged["ref_gain"] == 0.0 and unchanged["ref_logmel_l1"] == yardstick.input_distance
    assert perfect["ref_logmel_l1"] == 0.0 and perfect["ref_gain"] > 1.0
    assert perfect["ref_clap"] == pytest.approx(1.0, abs=1e-6) and perfect["ref_onset_f1"] == 1.0
    assert other["ref_gain"] < 0.0 and other["ref_logmel_l1"] > yardstick.input_distance
    assert other["ref_clap"] < codec["ref_clap"] - 0.5 and other["ref_onset_f1"] < codec["ref_onset_f1"]
    for row in rows:
        assert row["input_ref_logmel_l1"] == yardstick.input_distance
        assert row["codec_ref_logmel_l1"] == yardstick.codec_distance
        assert row["codec_input_codec_ref_logmel_l1"] == yardstick.codec_input_distance


def test_the_codec_gain_measures_from_codec_input_to_codec_ref(backbone, yardstick, addition, cases) -> None:
    from nrt.reference import codec_round_trip

    input_clip, reference = addition
    codec_input = codec_round_trip(backbone, input_clip)
    outputs = [yardstick.codec_reference, codec_input, input_clip.samples, reference.samples, cases[3].target.render()]
    codec, codec_in, unchanged, perfect, other = yardstick.score(outputs, SAMPLE_RATE)
    assert codec["ref_codec_logmel_l1"] == 0.0 and codec["ref_codec_gain"] == 1.0
    assert codec_in["ref_codec_logmel_l1"] == yardstick.codec_input_distance and codec_in["ref_codec_gain"] == 0.0
    assert yardstick.codec_input_distance > 5.0  # the room: the edit has a whole event to add
    # the input and the reference as they are lie between, the codec's loss counted against them
    assert perfect["ref_codec_gain"] > 0.8 and unchanged["ref_codec_gain"] < 0.2
    assert other["ref_codec_gain"] < 0.0


def test_the_codec_gain_is_defined_where_the_codecs_loss_swamps_the_plain_gain(backbone, scorer, addition) -> None:
    # a noisy reference, which the codec gives back 1.7 dB off, and an input only 0.9 dB off it
    # (the reference 1 dB quieter): the plain gain has no room, the codec's space has
    _, reference = addition
    rng = np.random.default_rng(0)
    noisy = _clip(reference.samples[:, 0] + 0.05 * rng.standard_normal(len(reference.samples)).astype(np.float32))
    yardstick = ReferenceYardstick(backbone, scorer, _clip(noisy.samples[:, 0] * 0.9), noisy)
    assert yardstick.input_distance < yardstick.codec_distance and yardstick.codec_input_distance > DEFAULT_MIN_SPAN_DB
    [row] = yardstick.score([yardstick.codec_reference], SAMPLE_RATE)
    assert math.isnan(row["ref_gain"])
    assert row["ref_codec_gain"] == 1.0


def test_scores_are_deterministic_and_one_at_a_time_equals_a_batch(
    backbone, scorer, yardstick, addition, cases
) -> None:
    outputs = [cases[3].target.render(), addition[0].samples]
    batch = yardstick.score(outputs, SAMPLE_RATE)
    assert batch == yardstick.score(outputs, SAMPLE_RATE)
    again = ReferenceYardstick(backbone, scorer, *addition)
    np.testing.assert_array_equal(again.codec_reference, yardstick.codec_reference)
    singles = [again.score([output], SAMPLE_RATE)[0] for output in outputs]
    for single, row in zip(singles, batch, strict=True):
        assert single["ref_clap"] == pytest.approx(row["ref_clap"], abs=1e-6)
        assert {k: v for k, v in single.items() if k != "ref_clap"} == {k: v for k, v in row.items() if k != "ref_clap"}
    assert yardstick.score([], SAMPLE_RATE) == []


def test_distances_alone_need_no_clap_and_agree_with_the_scores(backbone, yardstick, addition, cases) -> None:
    outputs = [cases[3].target.render(), addition[0].samples]
    plain = ReferenceYardstick(backbone, None, *addition)
    rows = plain.distances(outputs, SAMPLE_RATE)
    for row, full in zip(rows, yardstick.score(outputs, SAMPLE_RATE), strict=True):
        assert row == {k: full[k] for k in ("ref_logmel_l1", "ref_gain", "ref_codec_logmel_l1", "ref_codec_gain")}
    assert rows[1]["ref_gain"] == 0.0  # the input itself
    with pytest.raises(InputError, match="no CLAP scorer"):
        plain.score(outputs, SAMPLE_RATE)


def test_any_rate_channels_and_length(backbone, scorer, addition) -> None:
    input_clip, reference = addition
    # the input at 44.1 kHz in stereo (two levels), the reference at 22.05 kHz and 0.3 s longer
    source = resample(input_clip.samples[:, 0], SAMPLE_RATE, 44_100)
    stereo_input = _clip(np.stack([source, 0.5 * source], axis=1), 44_100)
    target = resample(reference.samples[:, 0], SAMPLE_RATE, 22_050)
    longer_reference = _clip(np.concatenate([target, target[: int(0.3 * 22_050)]]), 22_050)
    yardstick = ReferenceYardstick(backbone, scorer, stereo_input, longer_reference)

    assert yardstick.num_samples == round(input_clip.duration * backbone.sample_rate)
    assert yardstick.codec_reference.shape == longer_reference.samples.shape
    assert yardstick.input_distance > yardstick.codec_distance + 5.0
    assert yardstick.score([stereo_input.samples], 44_100)[0]["ref_gain"] == 0.0
    # the reference at a third rate, mono and as two equal channels (which mix to the same mono)
    target_48k = resample(reference.samples[:, 0], SAMPLE_RATE, 48_000)
    close, close_stereo = yardstick.score([target_48k, np.stack([target_48k, target_48k], axis=1)], 48_000)
    assert close["ref_clap"] == pytest.approx(close_stereo["ref_clap"], abs=1e-6)
    assert {k: v for k, v in close.items() if k != "ref_clap"} == {
        k: v for k, v in close_stereo.items() if k != "ref_clap"
    }
    assert close["ref_gain"] > 0.9 and close["ref_clap"] > 0.95


def test_a_short_output_is_padded_with_silence(yardstick, addition) -> None:
    reference = addition[1].samples[:, 0]
    half = reference[: len(reference) // 2]
    padded = np.concatenate([half, np.zeros(len(reference) - len(half), np.float32)])
    short, explicit = yardstick.score([half], SAMPLE_RATE) + yardstick.score([padded], SAMPLE_RATE)
    assert short["ref_logmel_l1"] == explicit["ref_logmel_l1"] > 1.0


def test_the_gain_is_undefined_without_room(backbone, scorer, addition, yardstick) -> None:
    input_clip, _ = addition
    same = ReferenceYardstick(backbone, scorer, input_clip, input_clip)  # the input is the reference
    assert same.span < DEFAULT_MIN_SPAN_DB
    (row,) = same.score([yardstick.codec_reference], SAMPLE_RATE)
    assert math.isnan(row["ref_gain"]) and math.isnan(row["ref_codec_gain"])  # nothing to change, in either space
    assert all(math.isfinite(v) for k, v in row.items() if k not in ("ref_gain", "ref_codec_gain"))
    assert yardstick.gain(yardstick.codec_distance) == 1.0


def test_inpainting_keeps_the_reference_outside_the_mask(backbone, scorer, cases) -> None:
    case = next(c for c in cases if c.edit_type == "inpainting")
    reference = _clip(case.target.render())
    yardstick = ReferenceYardstick(backbone, scorer, _clip(case.source_audio()), reference, mask=[case.mask])
    start, end = (round(t * SAMPLE_RATE) for t in case.mask)
    np.testing.assert_array_equal(yardstick.codec_reference[:start], reference.samples[:start])
    np.testing.assert_array_equal(yardstick.codec_reference[end:], reference.samples[end:])
    assert not np.array_equal(yardstick.codec_reference[start:end], reference.samples[start:end])
    assert yardstick.score([yardstick.codec_reference], SAMPLE_RATE)[0]["ref_gain"] == 1.0


@pytest.mark.parametrize(
    "change, message",
    [({"min_span_db": -1.0}, "min_span_db"), ({"onset_tolerance": -0.1}, "onset_tolerance")],
)
def test_bad_settings_are_refused(backbone, scorer, addition, change, message) -> None:
    with pytest.raises(InputError, match=message):
        ReferenceYardstick(backbone, scorer, *addition, **change)


def test_bad_outputs_are_refused(yardstick, addition) -> None:
    with pytest.raises(InputError, match="sample rate"):
        yardstick.score([addition[0].samples], 0)
    with pytest.raises(InputError, match="list"):
        yardstick.score(addition[0].samples, SAMPLE_RATE)
    with pytest.raises(InputError, match="NaN"):
        yardstick.score([np.full(100, np.nan, np.float32)], SAMPLE_RATE)


# -- the manifest's reference column ------------------------------------------------------------
def _manifest(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tone = np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000).astype(np.float32) * 0.3
    sf.write(directory / "in.wav", tone, 16_000)
    sf.write(directory / "ref.wav", np.stack([tone, tone], axis=1)[:12_000], 22_050)
    (directory / "refs").mkdir(exist_ok=True)
    sf.write(directory / "refs" / "b.wav", tone[::-1].copy(), 16_000)
    path = directory / "manifest.csv"
    path.write_text(body, encoding="utf-8")
    return path


def test_manifest_with_and_without_references(tmp_path: Path) -> None:
    with_column = _manifest(
        tmp_path / "a",
        "id,edit_type,audio,target_prompt,reference,note\n"
        "a,addition,in.wav,a beep,ref.wav,first\n"
        "b,addition,in.wav,a beep,refs/b.wav,\n"
        "c,addition,in.wav,a beep,,third\n",
    )
    a, b, c = read_manifest(with_column)
    assert a.reference == tmp_path / "a" / "ref.wav" and b.reference == tmp_path / "a" / "refs" / "b.wav"
    assert c.reference is None
    assert a.extra == {"note": "first"} and (a.line, b.line, c.line) == (2, 3, 4)
    clips = load_clips([a, b, c])
    assert clips[0].reference is not None and clips[0].reference.sample_rate == 22_050
    assert clips[0].reference.channels == 2 and clips[0].reference.num_frames == 12_000
    np.testing.assert_array_equal(clips[1].reference.samples, load_audio(b.reference).samples)
    assert clips[2].reference is None

    without = _manifest(tmp_path / "b", "id,edit_type,audio,target_prompt\nx,addition,in.wav,a beep\n")
    (row,) = read_manifest(without)
    assert row.reference is None and row.extra == {}
    assert load_clips([row])[0].reference is None


def test_a_missing_reference_is_a_bad_row(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path,
        "id,edit_type,audio,target_prompt,reference\na,addition,in.wav,a beep,nothere.wav\n"
        "b,addition,in.wav,a beep,ref.wav\n",
    )
    with pytest.raises(InputError, match=r"1 bad row: line 2 \('a'\): reference 'nothere.wav' is not a file"):
        read_manifest(manifest)


def test_an_unreadable_reference_is_a_bad_clip(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "id,edit_type,audio,target_prompt,reference\na,addition,in.wav,a beep,bad.wav\n")
    (tmp_path / "bad.wav").write_text("not audio")
    rows = read_manifest(manifest)
    with pytest.raises(InputError, match=r"line 2 \('a'\): reference: .*bad.wav: not a readable audio file"):
        load_clips(rows)


# -- nrt-mini's cases on disk ---------------------------------------------------------------------
def test_mini_cases_are_written_with_their_references(tmp_path: Path, cases) -> None:
    manifest = write_cases(cases, tmp_path / "cases")
    rows = read_manifest(manifest)
    assert [r.clip_id for r in rows] == [c.id for c in cases]
    clips = load_clips(rows)
    for case, row, clip in zip(cases, rows, clips, strict=True):
        assert row.edit_type == case.edit_type and row.target_prompt == case.target_prompt
        assert row.reference == tmp_path / "cases" / "reference" / f"{case.id}.wav"
        assert row.mask == ([case.mask] if case.mask else None)
        assert clip.reference is not None and clip.reference.sample_rate == SAMPLE_RATE
        # 16-bit files: within one step of the rendered samples
        np.testing.assert_allclose(clip.clip.samples[:, 0], case.source_audio(), atol=1 / 32_768)
        np.testing.assert_allclose(clip.reference.samples[:, 0], case.target.render(), atol=1 / 32_768)
