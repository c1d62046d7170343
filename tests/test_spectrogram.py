"""The NumPy spectrograms and peak picking give librosa's numbers, and scoring never touches numba."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nrt.onsets import OnsetConfig, detect_onsets, onset_envelope
from nrt.spectrogram import FULL_SCALE_DB, log_mel, mel_filters, mel_power, pick_peaks, stft_power

ROOT = Path(__file__).resolve().parents[1]


def _waves() -> list[tuple[str, np.ndarray, int]]:
    """The example clips, and bursts of noise at several rates and odd lengths."""
    waves = []
    for path in sorted((ROOT / "examples").glob("*.wav")):
        data, rate = sf.read(path, dtype="float32")
        waves.append((path.name, data, rate))
    rng = np.random.default_rng(0)
    for i, rate in enumerate((8_000, 16_000, 22_050, 44_100, 48_000, 16_000)):
        n = int(rng.integers(300, 3 * rate))
        gate = np.repeat(rng.random(n // 400 + 1) > 0.8, 400)[:n]
        waves.append((f"bursts-{i}", (rng.standard_normal(n) * rng.random() * gate).astype(np.float32), rate))
    return waves


def _librosa_onsets(wave: np.ndarray, rate: int, config: OnsetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Onset detection as it was written on librosa's STFT, onset strength and peak picking."""
    import librosa
    import soxr

    mono = wave.mean(axis=1) if wave.ndim == 2 else wave
    if rate != config.sample_rate:
        mono = soxr.resample(mono, rate, config.sample_rate).astype(np.float32)
    power = np.abs(librosa.stft(mono, n_fft=config.n_fft, hop_length=config.hop_length, center=True)) ** 2
    mel = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, norm=None) @ power
    level = 10 * np.log10(np.maximum(mel / (config.n_fft / 4) ** 2, 10 ** (config.floor_db / 10)))
    envelope = librosa.onset.onset_strength(S=level, sr=config.sample_rate, n_fft=config.n_fft,
                                            hop_length=config.hop_length, lag=1, max_size=config.max_size,
                                            aggregate=np.mean, center=True)
    peak, average = config.frames(config.peak_window_s), config.frames(config.average_window_s)
    frames = librosa.util.peak_pick(envelope, pre_max=peak, post_max=peak, pre_avg=average, post_avg=average,
                                    delta=config.delta_db, wait=config.frames(config.min_gap_s))
    return envelope, frames * config.hop_length / config.sample_rate


@pytest.mark.parametrize("name, wave, rate", _waves(), ids=lambda v: v if isinstance(v, str) else "")
def test_onsets_are_librosas_bit_for_bit(name: str, wave: np.ndarray, rate: int) -> None:
    config = OnsetConfig()
    envelope, onsets = _librosa_onsets(wave, rate, config)
    np.testing.assert_array_equal(onset_envelope(wave, rate, config), envelope)
    np.testing.assert_array_equal(detect_onsets(wave, rate, config), onsets)


def test_peak_picking_is_librosas_on_random_signals_and_windows() -> None:
    import librosa

    rng = np.random.default_rng(1)
    for _ in range(500):
        x = rng.random(int(rng.integers(1, 200))).astype(np.float32)
        if rng.random() < 0.4:  # ties, where "the maximum of the window" must agree too
            x = np.round(x * 4) / 4
        pre_max, post_max = int(rng.integers(0, 6)), int(rng.integers(1, 6))
        pre_avg, post_avg = int(rng.integers(0, 12)), int(rng.integers(1, 12))
        delta, wait = float(rng.random() * 0.3), int(rng.integers(0, 5))
        expected = librosa.util.peak_pick(x, pre_max=pre_max, post_max=post_max, pre_avg=pre_avg,
                                          post_avg=post_avg, delta=delta, wait=wait)
        np.testing.assert_array_equal(pick_peaks(x, pre_max, post_max, pre_avg, post_avg, delta, wait), expected)


def test_peak_picking_refuses_empty_windows() -> None:
    with pytest.raises(ValueError, match="post_max"):
        pick_peaks(np.ones(10), 1, 0, 1, 1, 0.0, 0)
    assert pick_peaks(np.zeros(0), 1, 1, 1, 1, 0.0, 0).size == 0


@pytest.mark.parametrize("rate, n_fft, n_mels, fmax, norm", [
    (16_000, 512, 40, None, None), (16_000, 1024, 64, 8000.0, "slaney"), (44_100, 1024, 64, 8000.0, "slaney"),
    (22_050, 2048, 128, None, None), (48_000, 1024, 64, 2000.0, "slaney"),
])
def test_mel_filters_are_librosas(rate: int, n_fft: int, n_mels: int, fmax: float | None, norm: str | None) -> None:
    import librosa

    expected = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmax=fmax, norm=norm)
    np.testing.assert_array_equal(mel_filters(rate, n_fft, n_mels, fmax=fmax, norm=norm), expected)


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100])
def test_mel_power_is_librosas_melspectrogram(rate: int) -> None:
    import librosa

    wave = np.random.default_rng(rate).standard_normal(rate + 123).astype(np.float32)
    hop, fmax = rate // 100, min(8000.0, rate / 2)
    expected = librosa.feature.melspectrogram(y=wave, sr=rate, n_fft=1024, hop_length=hop, n_mels=64, fmax=fmax)
    np.testing.assert_array_equal(mel_power(wave, rate, 1024, hop, 64, fmax=fmax), expected)


@pytest.mark.parametrize("norm, floor_db", [("slaney", -100.0), (None, FULL_SCALE_DB - 80.0)])
def test_log_mel_is_librosas_melspectrogram_in_db(norm: str | None, floor_db: float) -> None:
    import librosa

    rate = 16_000
    wave = np.zeros(rate, np.float32)
    wave[4000:8000] = 0.5 * np.random.default_rng(0).standard_normal(4000)  # silence around: the floor counts
    mel = librosa.feature.melspectrogram(y=wave, sr=rate, n_fft=1024, hop_length=160, n_mels=64, fmax=8000.0, norm=norm)
    expected = 10 * np.log10(np.maximum(mel, 10 ** (floor_db / 10)))
    got = log_mel(wave, rate, norm=norm, floor_db=floor_db)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert got.min() == pytest.approx(floor_db) and got.max() > floor_db + 40


@pytest.mark.parametrize("hz", [300.0, 1000.0, 5000.0])
def test_a_full_scale_sine_reads_full_scale_db_without_normalisation(hz: float) -> None:
    rate = 16_000
    wave = np.sin(2 * np.pi * hz * np.arange(rate) / rate).astype(np.float32)
    loudest = log_mel(wave, rate, norm=None, floor_db=-50.0)[:, 10:-10].max(axis=0)
    assert np.abs(loudest - FULL_SCALE_DB).max() < 2.0


def test_stft_of_a_clip_shorter_than_half_a_window() -> None:
    power = stft_power(np.ones(100, np.float32), n_fft=512, hop_length=160)
    assert power.shape == (257, 1) and np.isfinite(power).all()


SCORE_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
import torch
from nrt.backbones import load_backbone
from nrt.report import _log_mel
from nrt.scoring import ReferenceScorer, load_scorer

rate = 16000
wave = np.random.default_rng(0).standard_normal(2 * rate).astype(np.float32) * 0.1
backbone = load_backbone("mini", device="cpu")
backbone.decode(backbone.encode(torch.from_numpy(wave)[None]), len(wave))
scorer = ReferenceScorer(load_scorer("mini", progress=False), wave, rate, "a beep", mask=[(0.5, 1.0)])
rows = scorer.score([wave[::-1].copy()], rate)
_log_mel(wave, rate)
print(json.dumps({"keys": sorted(rows[0]), "utils": "librosa.util.utils" in sys.modules}))
"""


def test_scoring_an_edit_compiles_and_loads_no_numba_code(tmp_path: Path) -> None:
    """Why onsets avoid librosa's STFT and peak picking: its numba kernels are compiled with
    ``cache=True`` on import, and two fresh processes doing so at once can leave cache files
    that crash every later process (SIGSEGV in Ray workers). With the cache pointed at an empty
    directory, scoring an edit (CLAP and onsets, with an inpainting mask), the backbone's front
    end and the report's spectrogram must write no file to it."""
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "NRT_CACHE": str(tmp_path / "nrt-cache")}
    done = subprocess.run([sys.executable, "-c", SCORE_IN_A_FRESH_PROCESS], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "onset_f1" in result["keys"] and "text_filled" in result["keys"]
    assert result["utils"] is False
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == []  # numba may make empty folders
