"""Inpainting regions: time ranges in seconds, and how they map onto samples and latent frames.

A mask is a list of ``(start, end)`` ranges in seconds, written ``"1.5-3"`` and joined by ``;``
in the manifest (``"0.2-2.2;6-8"``). The edit regenerates what lies inside the ranges and keeps
everything outside them sample for sample (:func:`composite`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from nrt.errors import InputError

logger = logging.getLogger(__name__)

Range = tuple[float, float]

# The shortest run of digital silence that an inpainting edit without a mask fills, in seconds.
MIN_GAP = 0.25

# Below one step of 16-bit audio: exactly zero in a 16-bit file, and in any deeper file it is
# what would round to zero if it were written at 16 bits. Blanked gaps are digital silence.
SILENCE_THRESHOLD = 1.0 / 32768
# A range boundary that lands within this fraction of a frame of a frame edge counts as on
# the edge, so that float rounding (2.0 s * 25 fps = 49.999…) never adds a spurious frame.
_EDGE_TOLERANCE = 1e-6

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*$")


def _check_range(start: float, end: float, what: str) -> Range:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InputError(f"mask range {what}: start and end must be finite numbers of seconds")
    if start < 0:
        raise InputError(f"mask range {what}: start must be >= 0 s, but is {start:g}")
    if not start < end:
        raise InputError(f"mask range {what}: start ({start:g} s) must be before end ({end:g} s)")
    return float(start), float(end)


def parse_mask(text: str) -> list[Range]:
    """Parse ``"start-end"`` ranges in seconds, joined by ``;``, e.g. ``"0.2-2.2; 6-8"``.

    Ranges are returned in the order given; see :func:`merge_ranges` to sort and merge them.
    """
    pieces = [piece for piece in text.split(";") if piece.strip()]
    if not pieces:
        raise InputError(f"empty mask {text!r}: expected start-end in seconds, e.g. '1.5-3'")
    ranges = []
    for piece in pieces:
        match = _RANGE.match(piece)
        if match is None:
            raise InputError(
                f"bad mask range {piece.strip()!r} in {text!r}: expected start-end in seconds, "
                "e.g. '1.5-3', several joined by ';'"
            )
        ranges.append(_check_range(float(match.group(1)), float(match.group(2)), repr(piece.strip())))
    return ranges


def _seconds(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def format_mask(ranges: Iterable[Range]) -> str:
    """The inverse of :func:`parse_mask`: ``[(1.5, 3.0), (4.0, 5.0)]`` -> ``"1.5-3;4-5"``."""
    return ";".join(f"{_seconds(start)}-{_seconds(end)}" for start, end in ranges)


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort ranges and merge those that overlap or touch."""
    merged: list[Range] = []
    for start, end in sorted((float(s), float(e)) for s, e in ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def validate_ranges(ranges: Iterable[Range], duration: float) -> list[Range]:
    """Check ranges against a clip of ``duration`` seconds: merged, sorted, clipped to the clip.

    Raises :class:`InputError` for a malformed range or one that starts at or past the clip's end.
    """
    checked = [_check_range(float(s), float(e), f"{_seconds(s)}-{_seconds(e)}") for s, e in ranges]
    for start, end in checked:
        if start >= duration:
            raise InputError(
                f"mask range {_seconds(start)}-{_seconds(end)} starts past the end of the clip ({duration:.3f} s long)"
            )
    return [(start, min(end, duration)) for start, end in merge_ranges(checked)]


def _span(start: float, end: float, rate: float, count: int) -> tuple[int, int]:
    """Indices ``[first, stop)`` of the frames at ``rate`` per second that overlap ``[start, end)``.

    Frame ``i`` covers ``[i / rate, (i + 1) / rate)``; a frame the range touches at all is in,
    so a mask is dilated to whole frames, never shrunk.
    """
    first = math.floor(start * rate + _EDGE_TOLERANCE)
    stop = math.ceil(end * rate - _EDGE_TOLERANCE)
    return max(0, min(first, count)), max(0, min(stop, count))


def ranges_to_sample_mask(ranges: Iterable[Range], num_frames: int, sample_rate: int) -> np.ndarray:
    """Boolean ``[num_frames]``, True on the samples inside any range."""
    mask = np.zeros(num_frames, dtype=bool)
    for start, end in ranges:
        first, stop = _span(start, end, sample_rate, num_frames)
        mask[first:stop] = True
    return mask


def ranges_to_latent_mask(ranges: Iterable[Range], num_latent_frames: int, frames_per_second: float) -> np.ndarray:
    """Boolean ``[num_latent_frames]``, True on every latent frame that overlaps a range at all."""
    mask = np.zeros(num_latent_frames, dtype=bool)
    for start, end in ranges:
        first, stop = _span(start, end, frames_per_second, num_latent_frames)
        mask[first:stop] = True
    return mask


def find_silence_gaps(samples: np.ndarray, sample_rate: int, min_gap: float = MIN_GAP) -> list[Range]:
    """Runs of digital silence of at least ``min_gap`` seconds, as ``(start, end)`` in seconds.

    A frame is silent when every channel is below one 16-bit step (``|x| < 1/32768``): exactly
    zero in a 16-bit file. Silence alone does not mark a gap to fill (clips of any kind have
    silent stretches), so callers should show what was found and let the user override it.
    """
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise ValueError(f"expected [frames] or [frames, channels], got shape {samples.shape}")
    silent = np.all(np.abs(samples) < SILENCE_THRESHOLD, axis=1)
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    min_frames = min_gap * sample_rate
    return [
        (int(a) / sample_rate, int(b) / sample_rate)
        for a, b in zip(starts, stops)
        if b - a >= min_frames - _EDGE_TOLERANCE
    ]


def resolve_mask(
    edit_type: str,
    ranges: Iterable[Range] | None,
    samples: np.ndarray,
    sample_rate: int,
    *,
    hint: str,
    name: str | None = None,
) -> list[Range] | None:
    """The inpainting ranges of a clip: None for other edits, else ``ranges`` checked against it.

    An inpainting edit given no ranges fills the clip's silent gaps (:func:`find_silence_gaps`)
    and logs them, under ``name`` where given; with none to fill, the :class:`InputError` ends with
    ``hint``, which says how to give the region (``"with --mask START-END"``).
    """
    if edit_type != "inpainting":
        return None
    ranges = list(ranges or [])
    if ranges:
        return validate_ranges(ranges, len(samples) / sample_rate)
    gaps = find_silence_gaps(samples, sample_rate)
    if not gaps:
        raise InputError(f"no silent gap of {MIN_GAP:g} s or more to inpaint; give the region {hint}")
    found = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in gaps)
    logger.info("%sinpainting the silent gaps %s", f"{name}: " if name else "", found)
    return gaps


def _raised_cosine(length: int) -> np.ndarray:
    """A rising fade of ``length`` samples, strictly between 0 and 1, symmetric about 0.5."""
    phase = (np.arange(length) + 0.5) / length
    return 0.5 - 0.5 * np.cos(np.pi * phase)


def composite(
    original: np.ndarray,
    generated: np.ndarray,
    ranges: Sequence[Range],
    sample_rate: int,
    crossfade: float = 0.01,
) -> np.ndarray:
    """Keep ``original`` outside the ranges and take ``generated`` inside them.

    The crossfade (raised cosine, ``crossfade`` seconds, at most half a range) lies inside each
    range at its borders, so every sample outside the ranges is bit-identical to ``original``.
    A border at the start or end of the clip has nothing to fade from and gets no crossfade.
    """
    original = np.asarray(original)
    generated = np.asarray(generated)
    if original.shape != generated.shape:
        raise ValueError(f"original {original.shape} and generated {generated.shape} differ in shape")
    if crossfade < 0:
        raise ValueError(f"crossfade must be >= 0 s, but is {crossfade}")
    out = original.copy()
    num_frames = original.shape[0]
    fade_frames = int(round(crossfade * sample_rate))
    for start, end in merge_ranges(ranges):
        first, stop = _span(start, end, sample_rate, num_frames)
        if stop <= first:
            continue
        fade = min(fade_frames, (stop - first) // 2)
        weight = np.ones(stop - first)
        if fade and first > 0:
            weight[:fade] = _raised_cosine(fade)
        if fade and stop < num_frames:
            weight[-fade:] = _raised_cosine(fade)[::-1]
        if original.ndim == 2:
            weight = weight[:, None]
        mixed = (1.0 - weight) * original[first:stop] + weight * generated[first:stop]
        # Where the weight is 1 this is generated exactly: 0 * x + 1 * y == y in floating point.
        out[first:stop] = mixed.astype(out.dtype, copy=False)
    return out
