"""Every number an edit gets, against one input and one prompt: CLAP text, audio, sum, onset F1.

``nrt score`` scores one edit with it; ``nrt eval`` scores every output of a clip with the
input's and the prompt's embeddings and onsets computed once. For inpainting it also gives the
Text CLAP of the filled region alone (``text_filled``): the context is kept exactly, which
inflates Audio CLAP and dilutes Text CLAP, so the region is scored on its own as well.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from . import laion_pt
from .clap import DEFAULT_MODEL, ClapScorer, WindowedClapScorer, cosine_scores, resolve_model
from .clap_notes import describe_clap
from .masks import Range, ranges_to_sample_mask
from .onsets import OnsetConfig, detect_onsets, onset_scores

logger = logging.getLogger(__name__)

DEFAULT_ONSET_TOLERANCE = 0.05
SCORE_KEYS = ("text", "audio", "sum", "onset_f1", "onset_precision", "onset_recall")


def load_scorer(
    name: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    band_limit_rate: int | None = None,
    progress: bool = True,
) -> WindowedClapScorer:
    """A CLAP scorer: a laion-clap ``.pt`` checkpoint, else a ``ClapModel`` (hub id, directory, ``"tiny"``)."""
    if str(name).endswith(".pt"):
        return laion_pt.load_scorer(name, device=device, band_limit_rate=band_limit_rate)
    from . import msclap

    if msclap.is_msclap(name):  # msclap-2023, msclap-2022 or a .pth
        return msclap.MsClapScorer.from_pretrained(name, device=device, band_limit_rate=band_limit_rate)
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    if not progress:  # transformers draws its loading bars whatever the log level
        hf_logging.disable_progress_bar()
    try:
        return ClapScorer.from_pretrained(name, device=device, band_limit_rate=band_limit_rate)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def check_scorer(name: str | os.PathLike) -> None:
    """Fail now, in one line, if the CLAP model cannot be had; nothing is loaded."""
    if str(name).endswith(".pt"):
        laion_pt.check_checkpoint(name)
        return
    from .msclap import check_msclap, is_msclap

    if is_msclap(name):
        check_msclap(name)
        return
    resolve_model(name)


class ReferenceScorer:
    """Scores edits of one input for one prompt; what depends only on those two is computed once."""

    def __init__(
        self,
        scorer: WindowedClapScorer,
        reference: np.ndarray,
        rate: int,
        prompt: str,
        mask: Sequence[Range] | None = None,
        onset_tolerance: float = DEFAULT_ONSET_TOLERANCE,
        onset_config: OnsetConfig | None = None,
    ) -> None:
        self.scorer = scorer
        self.reference = np.asarray(reference)
        self.rate = rate
        self.prompt = prompt
        self.mask = list(mask) if mask else None
        self.onset_tolerance = onset_tolerance
        self.onset_config = onset_config or OnsetConfig()
        self._e_ref: torch.Tensor | None = None
        self._e_prompt: torch.Tensor | None = None
        self._ref_onsets: np.ndarray | None = None

    def _embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._e_ref is None or self._e_prompt is None:
            self._e_ref = self.scorer.embed_audio([self.reference], self.rate)
            self._e_prompt = self.scorer.embed_text([self.prompt])
        return self._e_ref, self._e_prompt

    def _onsets(self) -> np.ndarray:
        if self._ref_onsets is None:
            self._ref_onsets = detect_onsets(self.reference, self.rate, self.onset_config)
        return self._ref_onsets

    def filled_region(self, wave: np.ndarray, rate: int) -> np.ndarray:
        """The samples of ``wave`` inside the mask, the ranges joined end to end."""
        wave = np.asarray(wave)
        keep = ranges_to_sample_mask(self.mask or [], wave.shape[0], rate)
        return wave[keep]

    def score(self, waves: Sequence[np.ndarray], rate: int) -> list[dict[str, float]]:
        """One dict per edit: ``text``, ``audio``, ``sum``, ``onset_*`` and, with a mask, ``text_filled``."""
        if not len(waves):
            return []
        e_ref, e_prompt = self._embeddings()
        clap = cosine_scores(self.scorer.embed_audio(list(waves), rate), e_ref, e_prompt)
        filled = None
        if self.mask:
            regions = [self.filled_region(w, rate) for w in waves]
            filled = cosine_scores(self.scorer.embed_audio(regions, rate), e_ref, e_prompt).text
        rows = []
        for i, wave in enumerate(waves):
            onsets = onset_scores(self._onsets(), detect_onsets(wave, rate, self.onset_config), self.onset_tolerance)
            row = {
                "text": float(clap.text[i]),
                "audio": float(clap.audio[i]),
                "sum": float(clap.sum[i]),
                "onset_f1": onsets.f1,
                "onset_precision": onsets.precision,
                "onset_recall": onsets.recall,
                "onset_n_input": onsets.n_ref,
                "onset_n_edit": onsets.n_edit,
                "onset_n_matched": onsets.n_matched,
            }
            if filled is not None:
                row["text_filled"] = float(filled[i])
            rows.append(row)
        return rows


__all__ = ["DEFAULT_ONSET_TOLERANCE", "ReferenceScorer", "check_scorer", "describe_clap", "load_scorer"]
