"""Keeping the input where an edit did not change it: a time-frequency merge after decoding.

Every output of a latent diffusion model passes through its codec (mel front end, VAE,
vocoder), and the codec alone moves a clip away from itself: nrt-mini's round trip of an
input is further from the intended result than the input is, so an edit that changes one
event can still end up further from it than not editing at all. The merge keeps the input's
own short-time spectrum wherever the edit matches what the codec makes of the unchanged input,
and takes the edit's wherever the two differ:

    W = ramp(smooth(|dB(E) − dB(C)|), keep_db, 2·keep_db)
    output = ISTFT((1 − W)·X + W·E)

with X, E and C the STFTs of the input, the edit and the codec's round trip of the input (at
the clip's rate, per channel). ``smooth`` is a mean over a few neighbouring bins and frames, so
that single noisy bins do not switch; ``keep_db`` is the change, in dB, below which a bin is
the input's. Where the edit is the codec's round trip (the inversion start at η = 0) the output
is the input itself, up to the STFT's round-off; where an edit adds an event, its bins differ
by far more than ``keep_db`` and come from the edit, with the edit's phase.

An inpainting edit is left as it is: outside its gap it is the recording already, and inside the
gap everything is meant to change (merging there would put back the recording's silence wherever
the fill is quiet).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError

FLOOR = 1e-4  # magnitudes below this (−80 dB of full scale) count as silence
SMOOTH_BINS, SMOOTH_FRAMES = 5, 3


def frame_length(sample_rate: int) -> int:
    """About 32 ms: the power of two nearest ``0.032 · sample_rate`` (512 at 16 kHz)."""
    return 2 ** max(6, round(math.log2(0.032 * sample_rate)))


def check_keep_db(keep_db: float) -> float:
    """``keep_db`` as a float if it is a finite number of dB >= 0 (0: off); InputError otherwise."""
    number = isinstance(keep_db, (int, float)) and not isinstance(keep_db, bool)
    if not (number and math.isfinite(keep_db) and keep_db >= 0):
        raise InputError(f"keep_db must be a number of dB >= 0 (0: off), got {keep_db!r}")
    return float(keep_db)


def keep_weights(edit_spec: np.ndarray, codec_spec: np.ndarray, keep_db: float) -> np.ndarray:
    """Per bin, how much of the edit to take (0: the input's, 1: the edit's)."""
    from scipy import ndimage

    change = np.abs(20 * np.log10(np.abs(edit_spec) + FLOOR) - 20 * np.log10(np.abs(codec_spec) + FLOOR))
    change = ndimage.uniform_filter(change, size=(SMOOTH_BINS, SMOOTH_FRAMES), mode="nearest")
    return np.clip((change - keep_db) / keep_db, 0.0, 1.0)


def keep_input(
    input: np.ndarray, edit: np.ndarray, codec_input: np.ndarray, sample_rate: int, keep_db: float
) -> np.ndarray:
    """The edit with the input kept where it matches ``codec_input`` within about ``keep_db`` dB.

    All three are ``[frames, channels]`` at ``sample_rate``, as the pipeline returns them (the
    edit and the codec's round trip at the input's rate, length and channels). Returns float32
    of the same shape.
    """
    if check_keep_db(keep_db) == 0:  # the merge's limit as keep_db falls to 0: every change is the edit's
        return np.asarray(edit, dtype=np.float32)
    x, e, c = (np.asarray(w, dtype=np.float64) for w in (input, edit, codec_input))
    if x.ndim != 2 or e.shape != x.shape or c.shape != x.shape:
        raise InputError(
            f"the input, the edit and the codec's round trip must share one [frames, channels] shape, "
            f"got {x.shape}, {e.shape} and {c.shape}"
        )
    from scipy import signal

    n = frame_length(sample_rate)
    n = min(n, 2 ** int(math.log2(max(len(x), 2))))  # a clip shorter than one frame
    hop = n // 4
    out = np.empty_like(x)
    for ch in range(x.shape[1]):
        specs = [signal.stft(w[:, ch], nperseg=n, noverlap=n - hop, boundary="even")[2] for w in (x, e, c)]
        weights = keep_weights(specs[1], specs[2], float(keep_db))
        _, merged = signal.istft((1 - weights) * specs[0] + weights * specs[1], nperseg=n, noverlap=n - hop)
        merged = merged[: len(x)]
        out[: len(merged), ch] = merged
        out[len(merged) :, ch] = e[len(merged) :, ch]
    return out.astype(np.float32)


__all__ = ["check_keep_db", "frame_length", "keep_input", "keep_weights"]
