"""Onset fidelity on synthetic events at known times."""

from __future__ import annotations

import numpy as np
import pytest

from nrt.errors import InputError
from nrt.onsets import OnsetConfig, detect_onsets, match_onsets, onset_f1, onset_scores

# Off the 10 ms analysis grid on purpose, and at least 0.4 s apart.
TIMES = np.array([0.437, 1.093, 1.712, 2.268, 3.051, 3.604, 4.329, 4.985])


def _clicks(times: np.ndarray, rate: int = 44_100, seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    wave = 1e-4 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    burst = 0.8 * np.hanning(int(0.001 * rate))
    for t in times:
        start = int(round(t * rate))
        wave[start : start + len(burst)] += burst
    return wave.astype(np.float32)


def _tones(times: np.ndarray, rate: int = 22_050, seconds: float = 6.0) -> np.ndarray:
    """Decaying tones of different pitches, each 5 ms attack, fading out before the next."""
    wave = np.zeros(int(seconds * rate))
    t = np.arange(int(0.35 * rate)) / rate
    envelope = np.minimum(1.0, t / 0.005) * np.exp(-t / 0.06)
    for onset, pitch in zip(times, (220, 440, 880, 1760, 330, 660, 1320, 3000)):
        start = int(round(onset * rate))
        wave[start : start + len(t)] += 0.3 * np.sin(2 * np.pi * pitch * t) * envelope
    return wave.astype(np.float32)


def test_clicks_match_themselves_and_small_shifts_but_not_large_ones() -> None:
    reference = _clicks(TIMES)
    np.testing.assert_allclose(detect_onsets(reference, 44_100), TIMES, atol=0.02)
    assert onset_f1(reference, 44_100, reference, 44_100).f1 == 1.0

    shifted = onset_f1(reference, 44_100, _clicks(TIMES + 0.02, seed=1), 44_100, tolerance=0.05)
    assert (shifted.f1, shifted.n_ref, shifted.n_edit) == (1.0, len(TIMES), len(TIMES))
    far = onset_f1(reference, 44_100, _clicks(TIMES + 0.1, seed=1), 44_100, tolerance=0.05)
    assert (far.f1, far.n_matched, far.n_edit) == (0.0, 0, len(TIMES))


def test_tone_onsets_are_found_within_20_ms() -> None:
    found = detect_onsets(_tones(TIMES), 22_050)
    assert len(found) == len(TIMES)
    assert np.abs(found - TIMES).max() <= 0.02


def test_removing_half_the_events_halves_recall() -> None:
    score = onset_f1(_clicks(TIMES), 44_100, _clicks(TIMES[::2], seed=2), 44_100)
    assert (score.recall, score.precision) == (0.5, 1.0)
    assert score.f1 == pytest.approx(2 * 0.5 / 1.5)


def test_silence_and_steady_noise_have_no_onsets() -> None:
    rng = np.random.default_rng(3)
    assert len(detect_onsets(np.zeros(32_000, np.float32), 16_000)) == 0
    for level in (1e-3, 0.1):
        assert len(detect_onsets(level * rng.standard_normal(5 * 16_000), 16_000)) == 0


def test_empty_sides_are_defined() -> None:
    both = onset_scores(np.array([]), np.array([]))
    assert (both.precision, both.recall, both.f1) == (1.0, 1.0, 1.0)
    dropped = onset_scores(TIMES, np.array([]))
    assert (dropped.precision, dropped.recall, dropped.f1) == (1.0, 0.0, 0.0)
    added = onset_scores(np.array([]), TIMES)
    assert (added.precision, added.recall, added.f1) == (0.0, 1.0, 0.0)


def test_matching_is_one_to_one_and_maximal() -> None:
    assert match_onsets(np.array([1.0]), np.array([0.98, 1.02]), 0.05) == 1
    # Pairing 1.0 with its nearest onset (1.03) would leave 1.07 without a partner.
    assert match_onsets(np.array([1.0, 1.07]), np.array([0.96, 1.03]), 0.05) == 2
    assert onset_scores(np.array([1.0]), np.array([0.98, 1.02])).precision == 0.5


def test_stereo_and_other_rates_are_accepted() -> None:
    mono = _clicks(TIMES)
    score = onset_f1(np.stack([mono, mono]), 44_100, np.stack([mono, mono], axis=1), 44_100)
    assert score.f1 == 1.0
    np.testing.assert_allclose(detect_onsets(_clicks(TIMES, rate=8_000), 8_000), TIMES, atol=0.02)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InputError, match="hop_length"):
        OnsetConfig(hop_length=0)
    with pytest.raises(InputError, match="tolerance"):
        onset_scores(TIMES, TIMES, tolerance=-0.1)
    with pytest.raises(InputError, match="sample_rate"):
        detect_onsets(_clicks(TIMES), 0)
