"""Onset fidelity: does an edit keep the onsets of the input's events?

The paper (section 4.2) notes that Audio CLAP cannot tell whether an edit keeps the onsets
and offsets of the input's events, which is where Imagic-style editing beats AudioLDM. This
module measures it: onsets are detected in the reference and in the edit the same way, matched
one to one within a tolerance, and scored by precision, recall and F1.

Detection (fixed, so numbers are comparable across clips and runs): mono, resampled with soxr
to 16 kHz; a mel power spectrogram (512-point FFT, 10 ms hop, 40 bands to 8 kHz) in dB relative
to a full-scale sine, floored at -80 dB; SuperFlux-style spectral flux (the positive dB rise of
each band over the previous frame's maximum of three neighbouring bands, averaged over bands);
peaks picked where the flux is the largest within 30 ms and at least ``delta_db`` above its
mean over the surrounding 100 ms, at most one per 30 ms. The threshold is absolute (dB of mean
rise), not relative to the clip's loudest onset, so an edit that drops a loud event does not
change which quiet events count, and stationary noise gives no onsets.

Matching: each reference onset matches at most one edit onset within ``tolerance`` seconds, to
the most matches possible (onsets in time order, each matched to the earliest free partner in
reach, which is optimal on a line with one tolerance for all).

Edge cases: precision is 1 when the edit has no onsets, recall is 1 when the reference has
none, and F1 is their harmonic mean (0 when either is 0). So both empty gives F1 = 1 (nothing
to keep and nothing added); one side empty and not the other gives F1 = 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage
import soxr

from nrt.errors import InputError
from nrt.spectrogram import mel_power, pick_peaks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnsetConfig:
    """Settings of onset detection; the defaults are the ones reported."""

    sample_rate: int = field(default=16_000, metadata={"help": "analysis rate (Hz); inputs are resampled to it"})
    n_fft: int = field(default=512, metadata={"help": "FFT size in samples"})
    hop_length: int = field(default=160, metadata={"help": "frame hop in samples (160 = 10 ms at 16 kHz)"})
    n_mels: int = field(default=40, metadata={"help": "mel bands up to half the analysis rate"})
    floor_db: float = field(default=-80.0, metadata={"help": "level floor, dB re a full-scale sine"})
    max_size: int = field(default=3, metadata={"help": "bands of the SuperFlux maximum filter"})
    delta_db: float = field(default=2.0, metadata={"help": "flux above its local mean to count (dB)"})
    peak_window_s: float = field(default=0.03, metadata={"help": "a peak is the largest within this"})
    average_window_s: float = field(default=0.1, metadata={"help": "span of the local mean, each side"})
    min_gap_s: float = field(default=0.03, metadata={"help": "at most one onset per this span"})

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "max_size"):
            if getattr(self, name) < 1:
                raise InputError(f"OnsetConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("delta_db", "peak_window_s", "average_window_s", "min_gap_s"):
            if getattr(self, name) < 0:
                raise InputError(f"OnsetConfig.{name} must be non-negative, got {getattr(self, name)}")

    def frames(self, seconds: float) -> int:
        return max(1, round(seconds * self.sample_rate / self.hop_length))


@dataclass(frozen=True)
class OnsetScore:
    """How well the edit's onsets match the reference's."""

    precision: float
    recall: float
    f1: float
    n_ref: int
    n_edit: int
    n_matched: int


def _mono(wave: np.ndarray, what: str) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim == 2:
        wave = wave.mean(axis=int(np.argmin(wave.shape)))  # the shorter axis is channels
    if wave.ndim != 1 or wave.size == 0:
        raise InputError(f"{what} must be a non-empty 1-D or 2-D waveform, got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise InputError(f"{what} holds NaN or infinite samples")
    return wave.astype(np.float32, copy=False)


def onset_envelope(wave: np.ndarray, sample_rate: int, config: OnsetConfig = OnsetConfig()) -> np.ndarray:
    """The spectral flux per frame (dB of mean rise), one value per ``config.hop_length``."""
    if sample_rate <= 0:
        raise InputError(f"sample_rate must be positive, got {sample_rate}")
    wave = _mono(wave, "waveform")
    if sample_rate != config.sample_rate:
        wave = soxr.resample(wave, sample_rate, config.sample_rate).astype(np.float32, copy=False)
    mel = mel_power(wave, config.sample_rate, config.n_fft, config.hop_length, config.n_mels, norm=None)
    full_scale = (config.n_fft / 4) ** 2  # a full-scale sine's peak power with a Hann window
    level = 10 * np.log10(np.maximum(mel / full_scale, 10 ** (config.floor_db / 10)))
    # SuperFlux: each band's rise over the previous frame's maximum of its neighbouring bands
    reference = scipy.ndimage.maximum_filter1d(level, config.max_size, axis=0)
    flux = np.maximum(0.0, level[:, 1:] - reference[:, :-1]).mean(axis=0)
    # the flux of frame t belongs to frame t + 1, and centred frames lag by half a window
    delay = 1 + config.n_fft // (2 * config.hop_length)
    return np.pad(flux, (delay, 0))[: level.shape[1]]


def detect_onsets(wave: np.ndarray, sample_rate: int, config: OnsetConfig = OnsetConfig()) -> np.ndarray:
    """Onset times in seconds, ascending."""
    envelope = onset_envelope(wave, sample_rate, config)
    peak, average = config.frames(config.peak_window_s), config.frames(config.average_window_s)
    frames = pick_peaks(
        envelope,
        pre_max=peak,
        post_max=peak,
        pre_avg=average,
        post_avg=average,
        delta=config.delta_db,
        wait=config.frames(config.min_gap_s),
    )
    return frames * config.hop_length / config.sample_rate


def match_onsets(reference: np.ndarray, edit: np.ndarray, tolerance: float) -> int:
    """The largest number of one-to-one pairs closer than ``tolerance`` seconds."""
    reference, edit = np.sort(np.asarray(reference, float)), np.sort(np.asarray(edit, float))
    matched, j = 0, 0
    for t in reference:
        while j < len(edit) and edit[j] < t - tolerance:
            j += 1
        if j < len(edit) and edit[j] <= t + tolerance:
            matched += 1
            j += 1
    return matched


def onset_scores(reference: np.ndarray, edit: np.ndarray, tolerance: float = 0.05) -> OnsetScore:
    """Precision, recall and F1 of onset times (seconds); see the module notes for empty sides."""
    if tolerance < 0:
        raise InputError(f"tolerance must be non-negative seconds, got {tolerance}")
    matched = match_onsets(reference, edit, tolerance)
    n_ref, n_edit = len(reference), len(edit)
    precision = matched / n_edit if n_edit else 1.0
    recall = matched / n_ref if n_ref else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return OnsetScore(precision, recall, f1, n_ref, n_edit, matched)


def onset_f1(
    reference: np.ndarray,
    ref_rate: int,
    edit: np.ndarray,
    edit_rate: int,
    tolerance: float = 0.05,
    config: OnsetConfig = OnsetConfig(),
) -> OnsetScore:
    """Onset fidelity of an edit to its reference waveform, matched within ``tolerance`` seconds."""
    ref_onsets = detect_onsets(reference, ref_rate, config)
    edit_onsets = detect_onsets(edit, edit_rate, config)
    logger.debug("onsets: %d in the reference, %d in the edit", len(ref_onsets), len(edit_onsets))
    return onset_scores(ref_onsets, edit_onsets, tolerance)


__all__ = ["OnsetConfig", "OnsetScore", "detect_onsets", "match_onsets", "onset_envelope", "onset_f1", "onset_scores"]
