"""Analysis spectrograms in plain NumPy: the STFT, mel power and peak picking behind onset
detection and report figures.

These are librosa's numbers (``librosa.stft`` with its defaults, ``librosa.feature.melspectrogram``,
``librosa.util.peak_pick``) computed without numba. librosa compiles the numba kernels of
``librosa.util.utils`` with ``cache=True`` when that module is first imported, which its STFT,
onset and peak-picking functions do. Two fresh processes compiling them at once can leave
cache files on disk that do not belong together (numba issue 10128, open in numba 0.68), and
every process that loads them afterwards dies with SIGSEGV: Ray workers that score edits on a
fresh install are such processes. Nothing here imports librosa (even its mel filter bank loads
that module for unnormalised filters); ``tests/test_spectrogram.py`` checks the parity with
librosa and that scoring leaves numba's cache untouched.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view


def stft_power(wave: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """The power spectrum [1 + n_fft // 2, 1 + len // hop] of a mono float32 waveform.

    Frames are centred (zero padding of half a window on each side) and weighted by a periodic
    Hann window, as ``librosa.stft`` does by default; the result is float32.
    """
    wave = np.asarray(wave, dtype=np.float32)
    padded = np.pad(wave, n_fft // 2)
    if len(padded) < n_fft:
        padded = np.pad(padded, (0, n_fft - len(padded)))
    frames = sliding_window_view(padded, n_fft)[::hop_length]
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    spectrum = np.fft.rfft(frames * window, axis=-1).astype(np.complex64)
    return (np.abs(spectrum) ** 2).T


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """The Slaney mel scale: linear below 1 kHz (200/3 Hz a mel), logarithmic above (6.4 per 27 mels)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    knee, step = 1000.0 / (200.0 / 3), np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, knee + np.log(np.maximum(hz, 1000.0) / 1000.0) / step, linear)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    knee, step = 1000.0 / (200.0 / 3), np.log(6.4) / 27.0
    return np.where(mels >= knee, 1000.0 * np.exp(step * (np.maximum(mels, knee) - knee)), mels * (200.0 / 3))


def mel_filters(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular filters [n_mels, 1 + n_fft // 2] on the Slaney mel scale (float32); with
    ``norm="slaney"`` each is scaled to unit area per Hz, as ``librosa.filters.mel`` does."""
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    fmax = sample_rate / 2 if fmax is None else fmax
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    distance = edges[:, None] - bins[None, :]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def mel_power(
    wave: np.ndarray,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmax: float | None = None,
    norm: str | None = "slaney",
) -> np.ndarray:
    """The mel power spectrogram [n_mels, frames], as ``librosa.feature.melspectrogram``."""
    return mel_filters(sample_rate, n_fft, n_mels, fmax=fmax, norm=norm) @ stft_power(wave, n_fft, hop_length)


FULL_SCALE_DB = float(10 * np.log10((1024 / 4) ** 2))  # a full-scale sine's peak bin under a 1024-point Hann


def log_mel(wave: np.ndarray, sample_rate: int, norm: str | None = "slaney", floor_db: float = -100.0) -> np.ndarray:
    """The log mel power [64, frames] in dB of a mono waveform, floored at ``floor_db``.

    The one analysis view of whole clips, shared by the report's spectrograms and the
    reference distance: a 1024-point FFT, a 10 ms hop and 64 bands up to ``min(8 kHz,
    rate / 2)``. With ``norm=None`` each band sums the power of its bins, so a full-scale sine
    inside a band reads about :data:`FULL_SCALE_DB`.
    """
    mel = mel_power(
        wave, sample_rate, 1024, max(1, sample_rate // 100), 64, fmax=min(8000.0, sample_rate / 2), norm=norm
    )
    return 10 * np.log10(np.maximum(mel, 10 ** (floor_db / 10)))


def pick_peaks(
    x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int
) -> np.ndarray:
    """Indices of the peaks of ``x``, as ``librosa.util.peak_pick`` finds them.

    Frame n is a peak when it is the maximum of ``x[n - pre_max : n + post_max]``, at least
    ``delta`` above the mean of ``x[n - pre_avg : n + post_avg]`` (both windows cut at the ends),
    and more than ``wait`` frames after the previous peak.
    """
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if min(pre_max, pre_avg, wait) < 0 or min(post_max, post_avg) < 1:
        raise ValueError(
            f"pick_peaks needs pre_max, pre_avg, wait >= 0 and post_max, post_avg >= 1, got "
            f"{pre_max}, {pre_avg}, {wait} and {post_max}, {post_avg}"
        )
    index = np.arange(n)
    padded = np.concatenate([np.full(pre_max, -np.inf), x, np.full(post_max, -np.inf)])
    local_max = sliding_window_view(padded, pre_max + post_max).max(axis=1)[:n]
    sums = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    low, high = np.maximum(0, index - pre_avg), np.minimum(n, index + post_avg)
    local_mean = (sums[high] - sums[low]) / (high - low)
    candidates = np.flatnonzero((x == local_max) & (x >= local_mean + delta))
    peaks: list[int] = []
    for i in candidates:
        if not peaks or i > peaks[-1] + wait:
            peaks.append(int(i))
    return np.asarray(peaks, dtype=np.int64)


__all__ = ["FULL_SCALE_DB", "hz_to_mel", "log_mel", "mel_filters", "mel_power", "mel_to_hz", "pick_peaks", "stft_power"]
