"""The reference yardstick: how close an edit comes to the audio it should produce.

Where a clip comes with a reference (a manifest's ``reference`` column; nrt-mini's edit cases
render the target scene), an edit is measured against the intended result, not only against
the input and the prompt:

- ``ref_logmel_l1``: d(edit, ref), the mean absolute difference of the two log-mel
  spectrograms in dB (:func:`nrt.spectrogram.log_mel`: 64 bands up to ``min(8 kHz, rate / 2)``,
  filters that sum their bins' power, levels floored at :data:`FLOOR_DB`, -80 dB relative to
  a full-scale sine, so that digital silence and a codec's faint noise count the same);
- ``ref_clap``: cos(CLAP(edit), CLAP(ref)), the Audio CLAP of the edit against the reference;
- ``ref_onset_f1`` (with ``ref_onset_precision`` and ``ref_onset_recall``): the reference's
  onsets found in the edit (:mod:`nrt.onsets`);
- ``ref_gain`` = (d(input, ref) − d(edit, ref)) / (d(input, ref) − d(codec(ref), ref)): how far
  the edit went from the input towards the reference, as a fraction of the way the backbone can
  go at all. codec(ref) is the reference encoded and decoded by the backbone along the path of
  every edit (:func:`nrt.edit.prepare_input`, ``backbone.encode``, :func:`nrt.edit.decode_outputs`;
  with an inpainting ``mask``, the reference itself outside it, as an edit keeps its input's
  context). 1 is as close as the codec allows, 0 no closer than the input, below 0 further
  away than the input. Above 1 is possible: the reference itself scores above 1.

- ``ref_codec_gain`` = (d(codec(input), codec(ref)) − d(edit, codec(ref))) / d(codec(input),
  codec(ref)): the same question asked inside the codec's space, where every output of the
  backbone lives. The target is codec(ref), the closest the backbone can come to the
  reference, and the start is codec(input), what the backbone makes of the input when it
  changes nothing; ``ref_codec_logmel_l1`` is d(edit, codec(ref)). 1 is codec(ref) itself, 0
  no closer than the codec's copy of the input. Where the codec loses more than the edit
  changes (the codec's own loss, d(codec(ref), ref), as large as d(input, ref)), ``ref_gain``
  is undefined or swamped by that loss; ``ref_codec_gain`` is still defined, because codec(input)
  and codec(ref) differ by what the edit must change.

``ref_gain`` is NaN (undefined) when the denominator, the clip's room, is below
``min_span_db`` (default 0.5 dB). At or below 0 the input is already as close to the reference
as the codec's own output, so the clip cannot show progress; just above 0 a small difference
between outputs becomes a large difference in gain (with 0.5 dB of room, 0.1 dB moves the gain
by 0.2). Report such clips apart: counting them as 0 or dropping them silently both mislead.
``ref_codec_gain`` is NaN by the same rule when d(codec(input), codec(ref)) is below it.
nrt's JSON writers turn NaN into null.

All of it is measured at the backbone's rate and band: every waveform is mixed to mono (the
mean over channels) and resampled to ``backbone.sample_rate`` (:mod:`nrt.audio`), so content the
backbone cannot produce counts against no output, as in ``nrt eval``'s band-limited Audio
CLAP. The input and the reference may differ in rate, channels and length; everything is
compared over their common length (the shorter of the two, at the backbone's rate): the
reference, the input, codec(ref) and each output are cut to it, and an output shorter than it
is padded with silence.

The input's distance, codec(ref) and the reference's embedding and onsets depend on the clip
only: :class:`ReferenceYardstick` computes them once and scores any number of outputs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from .audio import AudioClip, fit_length, resample, to_mono
from .backbones.base import Backbone
from .clap import WindowedClapScorer
from .edit import decode_outputs, prepare_input
from .errors import InputError
from .masks import Range
from .onsets import OnsetConfig, detect_onsets, onset_scores
from .scoring import DEFAULT_ONSET_TOLERANCE
from .spectrogram import FULL_SCALE_DB, log_mel

logger = logging.getLogger(__name__)

FLOOR_DB = -80.0  # log-mel levels below this (dB relative to a full-scale sine) count as silence
DEFAULT_MIN_SPAN_DB = 0.5  # the least room (dB) for which the gain is given; see the module notes
REFERENCE_KEYS = (
    "ref_logmel_l1",
    "ref_clap",
    "ref_onset_f1",
    "ref_onset_precision",
    "ref_onset_recall",
    "ref_gain",
    "ref_codec_logmel_l1",
    "ref_codec_gain",
    "input_ref_logmel_l1",
    "codec_ref_logmel_l1",
    "codec_input_codec_ref_logmel_l1",
)


def _log_mel(wave: np.ndarray, rate: int) -> np.ndarray:
    return log_mel(wave, rate, norm=None, floor_db=FULL_SCALE_DB + FLOOR_DB)


def _l1(mel: np.ndarray, target: np.ndarray) -> float:
    """The log-mel L1 distance in dB between two spectrograms of the same shape."""
    return float(np.abs(mel - target).mean())


def log_mel_distance(wave: np.ndarray, target: np.ndarray, rate: int) -> float:
    """d(wave, target): the yardstick's log-mel L1 distance in dB of two mono waves of one length at ``rate``."""
    return _l1(_log_mel(wave, rate), _log_mel(target, rate))


def codec_round_trip(backbone: Backbone, clip: AudioClip, mask: Sequence[Range] | None = None) -> np.ndarray:
    """``clip`` encoded and decoded by ``backbone`` as an edit is: at the clip's rate, length and channels.

    With ``mask`` (inpainting), only the masked ranges come from the codec and the rest is the
    clip itself, as an inpainting edit keeps its input's context.
    """
    prepared = prepare_input(backbone, clip)
    with torch.no_grad():
        latents = backbone.encode(prepared.wave.unsqueeze(0))
        return decode_outputs(backbone, latents, prepared, clip, mask)[0]


class ReferenceYardstick:
    """Scores outputs of one clip against its reference; what depends on the clip alone is computed once.

    ``input`` and ``reference`` are the clips as read (any rate, channels and length; see the
    module notes for how they are aligned); ``mask`` is the inpainting mask of the edit, if any.
    Without a CLAP ``scorer`` only :meth:`distances` measures.
    """

    def __init__(
        self,
        backbone: Backbone,
        scorer: WindowedClapScorer | None,
        input: AudioClip,
        reference: AudioClip,
        *,
        mask: Sequence[Range] | None = None,
        onset_tolerance: float = DEFAULT_ONSET_TOLERANCE,
        onset_config: OnsetConfig | None = None,
        min_span_db: float = DEFAULT_MIN_SPAN_DB,
    ) -> None:
        if not (math.isfinite(min_span_db) and min_span_db >= 0):
            raise InputError(f"min_span_db must be a finite number of dB >= 0, got {min_span_db!r}")
        if not onset_tolerance >= 0:
            raise InputError(f"onset_tolerance must be >= 0 s, got {onset_tolerance!r}")
        self.backbone = backbone
        self.scorer = scorer
        self.rate = backbone.sample_rate
        self.onset_tolerance = onset_tolerance
        self.onset_config = onset_config or OnsetConfig()
        self.min_span_db = min_span_db

        # 1. The reference and the input as the backbone hears them, over their common length.
        reference_wave = self._mono(reference.samples, reference.sample_rate)
        input_wave = self._mono(input.samples, input.sample_rate)
        self.num_samples = min(len(reference_wave), len(input_wave))
        if self.num_samples == 0:
            raise InputError("the input and the reference must both hold samples")
        if len(reference_wave) != len(input_wave):
            logger.info(
                "reference (%.3f s) and input (%.3f s) differ in length; comparing the first %.3f s",
                reference.duration,
                input.duration,
                self.num_samples / self.rate,
            )
        self.reference_wave = reference_wave[: self.num_samples]
        self._reference_mel = _log_mel(self.reference_wave, self.rate)

        # 2. The codec's bound: the reference as closely as the backbone can give it back.
        self.codec_reference = codec_round_trip(backbone, reference, mask)
        self.input_distance = self._distance(self._fit(input_wave))
        self._codec_reference_mel = _log_mel(
            self._fit(self._mono(self.codec_reference, reference.sample_rate)), self.rate
        )
        self.codec_distance = _l1(self._codec_reference_mel, self._reference_mel)
        logger.debug("d(input, ref) = %.3f dB, d(codec(ref), ref) = %.3f dB", self.input_distance, self.codec_distance)

        # 3. The same inside the codec's space: codec(input) as the start, codec(ref) as the target.
        codec_input = self._fit(self._mono(codec_round_trip(backbone, input, mask), input.sample_rate))
        self.codec_input_distance = _l1(_log_mel(codec_input, self.rate), self._codec_reference_mel)

        # 4. What CLAP and the onset detector make of the reference.
        self._e_ref = None if scorer is None else scorer.embed_audio([self.reference_wave], self.rate)
        self._ref_onsets = detect_onsets(self.reference_wave, self.rate, self.onset_config)

    @property
    def span(self) -> float:
        """d(input, ref) − d(codec(ref), ref) in dB: the room an edit has; the gain's denominator."""
        return self.input_distance - self.codec_distance

    def gain(self, distance: float) -> float:
        """The reference gain of an output at ``distance`` dB from the reference; NaN when undefined."""
        if self.span < self.min_span_db:
            return math.nan
        return (self.input_distance - distance) / self.span

    def codec_gain(self, codec_distance: float) -> float:
        """The gain inside the codec's space of an output ``codec_distance`` dB from codec(ref); NaN when undefined."""
        if self.codec_input_distance < self.min_span_db:
            return math.nan
        return (self.codec_input_distance - codec_distance) / self.codec_input_distance

    def distances(self, outputs: Sequence[np.ndarray], rate: int) -> list[dict[str, float]]:
        """The log-mel distances and gains of each output alone (no CLAP, no onsets)."""
        return self._distances(self._waves(outputs, rate))

    def _distances(self, waves: list[np.ndarray]) -> list[dict[str, float]]:
        rows = []
        for wave in waves:
            mel = _log_mel(wave, self.rate)
            distance, codec_distance = _l1(mel, self._reference_mel), _l1(mel, self._codec_reference_mel)
            rows.append(
                {
                    "ref_logmel_l1": distance,
                    "ref_gain": self.gain(distance),
                    "ref_codec_logmel_l1": codec_distance,
                    "ref_codec_gain": self.codec_gain(codec_distance),
                }
            )
        return rows

    def _waves(self, outputs: Sequence[np.ndarray], rate: int) -> list[np.ndarray]:
        if isinstance(outputs, np.ndarray):
            raise InputError("outputs must be a list of waveforms")
        if not (isinstance(rate, (int, np.integer)) and rate > 0):
            raise InputError(f"the outputs' sample rate must be a positive integer (Hz), got {rate!r}")
        return [self._fit(self._mono(output, rate)) for output in outputs]

    def score(self, outputs: Sequence[np.ndarray], rate: int) -> list[dict[str, float]]:
        """One dict of :data:`REFERENCE_KEYS` per output (``[frames]`` or ``[frames, channels]`` at ``rate``)."""
        waves = self._waves(outputs, rate)
        if not waves:
            return []
        if self.scorer is None or self._e_ref is None:
            raise InputError("this yardstick has no CLAP scorer; distances() measures without one")
        embeddings = torch.nn.functional.normalize(self.scorer.embed_audio(waves, self.rate).double(), dim=-1)
        reference = torch.nn.functional.normalize(self._e_ref.double().reshape(1, -1), dim=-1)
        cosines = (embeddings @ reference.T)[:, 0].numpy()
        rows = []
        for wave, cosine, distances in zip(waves, cosines, self._distances(waves), strict=True):
            onsets = onset_scores(
                self._ref_onsets, detect_onsets(wave, self.rate, self.onset_config), self.onset_tolerance
            )
            rows.append(
                {
                    "ref_logmel_l1": distances["ref_logmel_l1"],
                    "ref_clap": float(cosine),
                    "ref_onset_f1": onsets.f1,
                    "ref_onset_precision": onsets.precision,
                    "ref_onset_recall": onsets.recall,
                    "ref_gain": distances["ref_gain"],
                    "ref_codec_logmel_l1": distances["ref_codec_logmel_l1"],
                    "ref_codec_gain": distances["ref_codec_gain"],
                    "input_ref_logmel_l1": self.input_distance,
                    "codec_ref_logmel_l1": self.codec_distance,
                    "codec_input_codec_ref_logmel_l1": self.codec_input_distance,
                }
            )
        return rows

    def _mono(self, samples: np.ndarray, rate: int) -> np.ndarray:
        wave = np.asarray(samples)
        if wave.ndim not in (1, 2) or wave.shape[0] == 0:
            raise InputError(f"a waveform must be a non-empty [frames] or [frames, channels] array, got {wave.shape}")
        if not np.isfinite(wave).all():
            raise InputError("a waveform holds NaN or infinite samples")
        return resample(to_mono(wave), rate, self.rate)

    def _fit(self, wave: np.ndarray) -> np.ndarray:
        return fit_length(wave, self.num_samples)

    def _distance(self, wave: np.ndarray) -> float:
        return _l1(_log_mel(wave, self.rate), self._reference_mel)


__all__ = [
    "DEFAULT_MIN_SPAN_DB",
    "FLOOR_DB",
    "REFERENCE_KEYS",
    "ReferenceYardstick",
    "codec_round_trip",
]
