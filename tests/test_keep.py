"""Keeping the input where an edit did not change it (nrt.keep)."""

import numpy as np
import pytest

from nrt.errors import InputError
from nrt.keep import frame_length, keep_input

RATE = 16_000


def _band_energy(wave: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave[:, 0])) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


@pytest.fixture()
def scene():
    """A noisy input, a codec that colours it (lower level, some noise), and an edit adding a tone."""
    rng = np.random.default_rng(0)
    n = 2 * RATE
    x = 0.2 * rng.standard_normal((n, 1))
    codec = 0.8 * x + 0.02 * rng.standard_normal((n, 1))
    t = np.arange(n) / RATE
    tone = np.where((t >= 0.8) & (t < 1.2), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)[:, None]
    return x.astype(np.float32), codec.astype(np.float32), (codec + tone).astype(np.float32)


def test_an_edit_equal_to_the_codecs_round_trip_gives_the_input_back(scene):
    x, codec, _ = scene
    np.testing.assert_allclose(keep_input(x, codec, codec, RATE, 10.0), x, atol=1e-6)
    stereo = np.concatenate([x, -x], axis=1)
    twice = np.concatenate([codec, codec], axis=1)
    np.testing.assert_allclose(keep_input(stereo, twice, twice, RATE, 10.0), stereo, atol=1e-6)


def test_an_added_event_comes_from_the_edit_and_the_rest_from_the_input(scene):
    x, codec, edit = scene
    out = keep_input(x, edit, codec, RATE, 6.0)
    before = slice(0, int(0.7 * RATE))  # well before the tone (and the smoothing's reach)
    err_out = np.abs(out[before] - x[before]).mean()
    err_edit = np.abs(edit[before] - x[before]).mean()
    assert err_out < 0.1 * err_edit  # the untouched part is the input's, not the codec's
    during = slice(int(0.85 * RATE), int(1.15 * RATE))
    tone_out = _band_energy(out[during], 950, 1050)
    tone_edit = _band_energy(edit[during], 950, 1050)
    assert tone_out == pytest.approx(tone_edit, rel=0.1)  # the new event is the edit's


def test_a_lower_threshold_takes_more_of_the_edit(scene):
    x, codec, edit = scene
    far = [np.abs(keep_input(x, edit, codec, RATE, db) - x).mean() for db in (1.0, 6.0, 30.0)]
    assert far[0] > far[1] > far[2]


def test_short_clips_any_rate_and_bad_settings(scene):
    x, codec, edit = scene
    assert frame_length(16_000) == 512 and frame_length(48_000) == 2048 and frame_length(44_100) == 1024
    short = keep_input(x[:300], edit[:300], codec[:300], RATE, 10.0)
    assert short.shape == (300, 1) and np.isfinite(short).all()
    np.testing.assert_array_equal(keep_input(x, edit, codec, RATE, 0.0), edit)  # 0: off, the edit as it is
    with pytest.raises(InputError, match="keep_db"):
        keep_input(x, edit, codec, RATE, -1.0)
    with pytest.raises(InputError, match="keep_db"):
        keep_input(x, edit, codec, RATE, float("nan"))
    with pytest.raises(InputError, match="shape"):
        keep_input(x, edit[:-1], codec, RATE, 10.0)


def test_the_sampling_settings_check_keep_db():
    from nrt.settings import SampleConfig

    assert SampleConfig().keep_db == 0.0 and SampleConfig(keep_db=10).keep_db == 10.0
    for bad in (-1.0, float("inf"), float("nan"), True, "10", None):
        with pytest.raises(InputError, match="keep_db"):
            SampleConfig(keep_db=bad)


def test_an_inpainting_edit_is_left_as_it_is(scene):
    from nrt.edit import keep_recording

    edit = scene[2]

    def round_trip():
        raise AssertionError("decoded")

    # its context is the recording already and its gap all edit: nothing to merge, nothing decoded
    assert keep_recording(None, [(0.5, 1.0)], [edit], 10.0, round_trip)[0] is edit
    assert keep_recording(None, None, [edit], 0.0, round_trip)[0] is edit  # off: nothing decoded either
