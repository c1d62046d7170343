"""nrt-mini's own CLAP: a small ClapModel trained contrastively on generated sound scenes.

The model is a transformers ``ClapModel`` in the hub layout, so :class:`nrt.clap.ClapScorer`
loads and scores with it like any LAION checkpoint. It is sized for the scenes, not for real
audio: 16 kHz (nothing above 8 kHz exists in a scene), 64 mels, a 3 s window (a 2.56 s scene
is tiled once and zero-padded to it, LAION's ``repeatpad``), an HTSAT of three small stages,
a three-layer RoBERTa of width 128 and 128-d embeddings; about 1.2 M parameters, stored as
float16 (2.7 MB).

Frames. HTSAT folds a [time, mel] spectrogram into a square image of ``spec_size`` pixels
with ``spec_size // num_mel_bins`` rows of time; it refuses more than
``spec_size * (spec_size // num_mel_bins)`` frames and bicubically stretches fewer. With
``spec_size=128`` and 64 mels that is exactly 256 frames, and a hop of 188 samples gives
``1 + 48000 // 188 = 256`` frames for a 3 s window, so nothing is stretched.

Training (:func:`train_clap`) renders a bank of train scenes once, with their mels computed
in the rendering processes (:func:`featurizer`), then runs the symmetric InfoNCE loss of CLAP
through :func:`nrt.mini.training.train`, and writes the EMA weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..clap import TEXT_MAX_TOKENS, bpe_tokenizer
from ..files import replace_dir
from ..hub import ensure_dir
from .training import TrainConfig, train

if TYPE_CHECKING:
    from transformers import ClapFeatureExtractor, ClapModel, PreTrainedTokenizerBase

    from ..clap import WindowedClapScorer
    from .bank import SceneBank
    from .scenes import Scene

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # the scenes' rate (nrt.mini.scenes.SAMPLE_RATE)
WINDOW_SECONDS = 3
HOP = 188  # 1 + 48000 // 188 = 256 frames = spec_size * (spec_size // mels): no stretching
FFT = 512
MELS = 64
SPEC_SIZE = 128
VOCAB_SIZE = 1024
MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale), which otherwise can run away
CONTENT_WEIGHT = 1.0  # weight of the audio-audio content term of clap_loss against InfoNCE
# Rough statistics of the extractor's dB mels of scenes; training tracks the real ones.
MEL_MEAN_DB, MEL_STD_DB = -58.0, 37.0
MARKER = "config.json"
RUN_DIR = Path("runs/clap")
OUT_DIR = Path(__file__).parent / "weights" / "clap"


# Building the model


def clap_config(vocab_size: int):
    """The ``ClapConfig`` of nrt-mini's CLAP (see the module docstring)."""
    from transformers import ClapConfig

    return ClapConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=TEXT_MAX_TOKENS + 3,  # RoBERTa offsets positions by pad + 1
            # Every batch brings fresh caption wordings, so dropout has nothing to regularise; it
            # only slows the early steps, where the pooled <s> token learns to attend.
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        audio_config=dict(
            num_mel_bins=MELS,
            spec_size=SPEC_SIZE,
            patch_size=4,
            patch_stride=(4, 4),
            window_size=8,  # 32x32 patches, then 16x16, then 8x8
            depths=[2, 2, 3],
            num_attention_heads=[2, 4, 8],
            patch_embeds_hidden_size=24,
            hidden_size=96,  # 24 * 2 ** (stages - 1)
            enable_fusion=False,
        ),
        projection_dim=128,
    )


def feature_extractor() -> ClapFeatureExtractor:
    """The 16 kHz, 64-mel, 3 s extractor (256 frames per window)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=MELS,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP,
        max_length_s=WINDOW_SECONDS,
        fft_window_size=FFT,
        frequency_min=0,
        frequency_max=SAMPLE_RATE // 2,
        truncation="rand_trunc",
        padding="repeatpad",
    )


def tokenizer() -> PreTrainedTokenizerBase:
    """A RoBERTa BPE trained on the scenes' captions, every caption word included."""
    from .scenes import caption_corpus, caption_vocabulary

    words = caption_vocabulary()
    # Words mid-caption carry the byte-level space; listing both forms keeps each whole.
    corpus = list(caption_corpus()) + [" ".join(words), "\n".join(words)]
    return bpe_tokenizer(corpus, VOCAB_SIZE, TEXT_MAX_TOKENS)


def build_clap(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write an untrained nrt-mini CLAP (model, tokenizer, extractor) to ``directory``; returns it."""
    from transformers import ClapModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(clap_config(len(tok))).eval()
    batch_norm = model.audio_model.audio_encoder.batch_norm
    # With the default (0, 1) the dB mels saturate the first layers until training moves them.
    batch_norm.running_mean.fill_(MEL_MEAN_DB)
    batch_norm.running_var.fill_(MEL_STD_DB**2)
    _save(model, tok, feature_extractor(), directory)
    return directory


def _save(model: ClapModel, tok: PreTrainedTokenizerBase, extractor: ClapFeatureExtractor, directory: Path) -> None:
    # float16 halves the file; the scorer loads it back as float32 (dtype None).
    model.to(torch.float16).save_pretrained(directory)
    tok.save_pretrained(directory)
    extractor.save_pretrained(directory)


def load_parts(directory: str | os.PathLike) -> tuple[ClapModel, PreTrainedTokenizerBase, ClapFeatureExtractor]:
    """Model (float32), tokenizer and extractor of a directory written by :func:`build_clap`."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(directory, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(directory), ClapFeatureExtractor.from_pretrained(directory)


# Features


def featurize(extractor: ClapFeatureExtractor, waves: np.ndarray) -> np.ndarray:
    """``input_features`` [B, 1, frames, mels] of waves [B, T], float16, as :meth:`ClapScorer.features` gives them."""
    waves = np.asarray(waves, dtype=np.float32)
    if waves.ndim != 2 or waves.shape[1] == 0:
        raise ValueError(f"featurize takes waves [batch, samples], got shape {waves.shape}")
    if waves.shape[1] > extractor.nb_max_samples:
        # The extractor would crop longer clips at a random place; the scorer windows them instead.
        raise ValueError(f"waves of {waves.shape[1]} samples exceed the {extractor.nb_max_samples}-sample window")
    state = np.random.get_state()  # nothing random happens on this path, but keep the global generator anyway
    try:
        inputs = extractor(
            list(waves),
            sampling_rate=extractor.sampling_rate,
            truncation="rand_trunc",
            padding="repeatpad",
            return_tensors="np",
        )
    finally:
        np.random.set_state(state)
    return np.asarray(inputs["input_features"], dtype=np.float32).astype(np.float16)


def featurizer(extractor: ClapFeatureExtractor) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`featurize` bound to ``extractor``; picklable, for :class:`SceneBank` workers."""
    return functools.partial(featurize, extractor)


# Batches and the loss


@dataclass
class ClapBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    input_features: torch.Tensor  # [B, 1, frames, mels]
    positives: torch.Tensor  # [B, B] bool: caption i describes clip j (the diagonal, and same-content scenes)
    overlap: torch.Tensor | None = None  # [B, B] float: the content clips i and j share (content_overlap)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ClapBatch:
        """The batch with ``fn`` applied to every tensor it holds."""
        return ClapBatch(
            fn(self.input_ids),
            fn(self.attention_mask),
            fn(self.input_features),
            fn(self.positives),
            None if self.overlap is None else fn(self.overlap),
        )

    def to(self, device: torch.device | str) -> ClapBatch:
        return self.map(lambda t: t.to(device, non_blocking=True))


def tokenize(tok: PreTrainedTokenizerBase, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of captions, cut as the scorer cuts them."""
    tokens = tok(list(captions), padding=True, truncation=True, max_length=TEXT_MAX_TOKENS, return_tensors="pt")
    return tokens["input_ids"], tokens["attention_mask"]


def content_keys(scenes: Sequence[Scene]) -> np.ndarray:
    """An integer per scene, equal for scenes no caption can tell apart (their canonical wording)."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(s.caption(0), len(ids)) for s in scenes], dtype=np.int64)


def overlap_matrix(scenes: Sequence[Scene]) -> torch.Tensor:
    """[N, N] :func:`nrt.mini.scenes.content_overlap` of every pair of ``scenes`` (1 on the diagonal)."""
    from .scenes import content_overlap

    n = len(scenes)
    overlap = torch.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            overlap[i, j] = overlap[j, i] = content_overlap(scenes[i], scenes[j])
    return overlap


def make_batch(
    tok: PreTrainedTokenizerBase,
    captions: Sequence[str],
    features: torch.Tensor,
    keys: np.ndarray,
    overlap: torch.Tensor | None = None,
) -> ClapBatch:
    """A :class:`ClapBatch` on the CPU; ``keys`` mark which clips share content (:func:`content_keys`)."""
    input_ids, attention_mask = tokenize(tok, captions)
    same = torch.from_numpy(np.asarray(keys))
    return ClapBatch(input_ids, attention_mask, features.float(), same[:, None] == same[None, :], overlap)


def clap_loss(model: ClapModel, batch: ClapBatch, content_weight: float = CONTENT_WEIGHT) -> torch.Tensor:
    """CLAP's symmetric InfoNCE: text->audio and audio->text cross-entropy, averaged.

    transformers' ``return_loss`` averages text->audio with itself (it transposes
    ``logits_per_audio`` back), so both directions are computed here. A clip whose content
    another caption of the batch also describes counts as a positive for it, sharing the
    target mass, rather than as a negative it must push away.

    With ``batch.overlap`` (batches of :class:`BankBatches` with hard negatives) the audio
    embeddings also learn to share content: ``content_weight`` times the squared difference
    between cos(audio i, audio j) and the content the two clips share, averaged over the
    pairs that share some and, apart, over those that share none, so that the few scenes
    and their one-event variants weigh as much as the many unrelated pairs.
    """
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        input_features=batch.input_features,
        is_longer=torch.zeros(len(batch.input_ids), 1, dtype=torch.bool, device=batch.input_ids.device),
    )
    text, audio = out.text_embeds.float(), out.audio_embeds.float()
    scale_t = model.logit_scale_t.float().exp().clamp(max=MAX_LOGIT_SCALE)
    scale_a = model.logit_scale_a.float().exp().clamp(max=MAX_LOGIT_SCALE)
    targets = batch.positives.float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    text_to_audio = torch.nn.functional.cross_entropy(scale_t * text @ audio.T, targets)
    audio_to_text = torch.nn.functional.cross_entropy(scale_a * audio @ text.T, targets.T)
    loss = (text_to_audio + audio_to_text) / 2
    if batch.overlap is not None and content_weight > 0:
        n = len(audio)
        pairs = ~torch.eye(n, dtype=torch.bool, device=audio.device)
        error = (audio @ audio.T - batch.overlap) ** 2
        related = pairs & (batch.overlap > 0)
        unrelated = pairs & (batch.overlap <= 0)
        terms = [error[mask].mean() for mask in (related, unrelated) if mask.any()]
        loss = loss + content_weight * sum(terms) / len(terms)
    return loss


def heldout_batch(extractor: ClapFeatureExtractor, tok: PreTrainedTokenizerBase, n: int, variant: int = 1) -> ClapBatch:
    """The first ``n`` held-out scenes with wording ``variant``, as a CPU batch."""
    from .scenes import scene_for

    scenes = [scene_for("heldout", i) for i in range(n)]
    waves = np.stack([s.render(SAMPLE_RATE) for s in scenes])
    features = torch.from_numpy(featurize(extractor, waves))
    return make_batch(tok, [s.caption(variant) for s in scenes], features, content_keys(scenes))


@torch.no_grad()
def evaluate_loss(model: ClapModel, batch: ClapBatch) -> float:
    """:func:`clap_loss` of ``batch`` in eval mode (running batch-norm statistics)."""
    was_training = model.training
    model.eval()
    try:
        return float(clap_loss(model, batch.to(next(model.parameters()).device)))
    finally:
        model.train(was_training)


class BankBatches:
    """Batch ``step`` of a :class:`SceneBank` as a device :class:`ClapBatch`, the next one prepared meanwhile.

    The bank's batches are a function of the step, so preparing step + 1 in a thread while the
    device runs step changes nothing but the wait.

    With ``extractor`` (hard negatives), half the batch comes from the bank and the other half
    are the same scenes with one event changed (:func:`nrt.mini.scenes.vary_scene`: added,
    removed, moved or swapped for another kind), rendered and featurized on the fly, with
    their own captions; the batch carries the content overlap of every pair.
    """

    def __init__(
        self,
        bank: SceneBank,
        tok: PreTrainedTokenizerBase,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        extractor: ClapFeatureExtractor | None = None,
    ) -> None:
        if bank.features is None:
            raise ValueError("the scene bank has no features; build it with featurize=featurizer(extractor)")
        if extractor is not None and batch_size % 2:
            raise ValueError(
                f"a batch with hard negatives holds scene/variant pairs: use an even size, got {batch_size}"
            )
        self.bank, self.tok, self.batch_size, self.device, self.seed = bank, tok, batch_size, device, seed
        self.extractor = extractor
        self.keys = content_keys(bank.scenes)  # once, so a step does no per-scene work for them
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clap-batches")
        self._pending: tuple[int, Future] | None = None

    def _prepare(self, step: int) -> ClapBatch:
        size = self.batch_size if self.extractor is None else self.batch_size // 2
        drawn = self.bank.batch(step, size, seed=self.seed)
        if drawn.features is None:
            raise ValueError("CLAP training needs a scene bank rendered with its features (featurize)")
        if self.extractor is None:
            batch = make_batch(self.tok, drawn.captions, drawn.features, self.keys[drawn.indices])
        else:
            batch = self._with_variants(step, drawn)
        if self.device.type == "cuda":
            batch = batch.map(torch.Tensor.pin_memory)
        return batch

    def _with_variants(self, step: int, drawn) -> ClapBatch:
        from .bank import CAPTION_VARIANTS
        from .scenes import CHANGES, vary_scene

        rng = np.random.default_rng([self.seed, step, 0xC1A9])
        scenes = [self.bank.scenes[int(i)] for i in drawn.indices]
        variants = []
        for scene in scenes:
            first = int(rng.integers(len(CHANGES)))
            order = CHANGES[first:] + CHANGES[:first]  # the drawn change, else the next that applies
            variants.append(next(v for v in (vary_scene(scene, rng, c) for c in order) if v is not None))
        waves = np.stack([v.render(SAMPLE_RATE) for v in variants])
        features = torch.cat([drawn.features, torch.from_numpy(featurize(self.extractor, waves))])
        captions = [*drawn.captions, *(v.caption(int(rng.integers(CAPTION_VARIANTS))) for v in variants)]
        both = [*scenes, *variants]
        return make_batch(self.tok, captions, features, content_keys(both), overlap_matrix(both))

    def __call__(self, step: int) -> ClapBatch:
        if self._pending is not None and self._pending[0] == step:
            batch = self._pending[1].result()
        else:
            batch = self._prepare(step)
        self._pending = (step + 1, self._pool.submit(self._prepare, step + 1))
        return batch.to(self.device)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# Training


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


def train_clap(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    bank_size: int,
    config: TrainConfig,
    batch_size: int,
    device: str | torch.device = "auto",
    workers: int | None = None,
    progress: bool = True,
    init: str | os.PathLike | None = None,
    hard_negatives: bool = True,
    content_weight: float = CONTENT_WEIGHT,
) -> Path:
    """Train (or continue training) nrt-mini's CLAP in ``run_dir``; write its EMA weights to ``out_dir``.

    The starting model is written once into ``run_dir/base``: an untrained one, or a copy of
    the trained CLAP in ``init`` (its tokenizer and extractor included), so a continued run
    keeps its tokenizer. With ``hard_negatives`` half of every batch are one-event variants of
    the other half and the loss has its content term (:class:`BankBatches`, :func:`clap_loss`).
    ``out_dir`` gets the hub layout and a ``training.json`` summary, and is replaced whole: a
    reader sees the old model or the new one.
    """
    from .bank import SceneBank

    if batch_size < 2:
        raise ValueError(f"contrastive training needs a batch of at least 2, got {batch_size}")
    if not (math.isfinite(content_weight) and content_weight >= 0):
        raise ValueError(f"content_weight must be a finite number >= 0, got {content_weight!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if init is not None and not (Path(init) / MARKER).is_file():
        raise ValueError(f"--init {init} holds no trained CLAP ({MARKER} is missing)")

    def start(directory: Path) -> None:
        if init is None:
            build_clap(directory, seed=config.seed)
        else:
            model, tok, extractor = load_parts(init)
            _save(model, tok, extractor, directory)

    base = ensure_dir(run_dir / "base", start, MARKER)
    model, tok, extractor = load_parts(base)

    began = time.monotonic()
    bank = SceneBank(bank_size, workers=workers, featurize=featurizer(extractor), progress=progress)
    rendered = time.monotonic() - began
    batches = BankBatches(
        bank, tok, batch_size, device, seed=config.seed, extractor=extractor if hard_negatives else None
    )
    autocast = torch.bfloat16 if device.type == "cuda" else None
    loss = functools.partial(clap_loss, content_weight=content_weight)
    try:
        result = train(
            model.to(device), loss, batches, config, run_dir, desc="clap", progress=progress, autocast=autocast
        )
    finally:
        batches.close()
    trained = time.monotonic() - began - rendered
    summary = {
        "step": result.step,
        "steps": config.steps,
        "finished": result.finished,
        "loss": float(np.mean(result.losses[-100:])) if result.losses else None,
        "bank": bank_size,
        "batch_size": batch_size,
        "init": None if init is None else str(init),
        "hard_negatives": hard_negatives,
        "content_weight": content_weight,
        "device": str(device),
        "render_seconds": round(rendered, 1),
        "train_seconds": round(trained, 1),
    }
    logger.info("clap: step %d, loss %s; writing %s", result.step, summary["loss"], out_dir)

    def write(directory: Path) -> None:
        from transformers import AutoTokenizer

        # the tokenizer as it was written, not as batching left it (with padding and truncation set)
        _save(result.ema.to("cpu"), AutoTokenizer.from_pretrained(base), extractor, directory)
        (directory / "training.json").write_text(json.dumps(summary, indent=2) + "\n")

    replace_dir(out_dir, write)
    return out_dir


# Evaluation


def embedding_retrieval(text: torch.Tensor, audio: torch.Tensor, keys: torch.Tensor | None = None) -> dict[str, float]:
    """Top-1 retrieval between N caption embeddings and N clip embeddings, row i with row i.

    ``text_to_audio``: how often a caption's most similar clip is its own; ``audio_to_text``
    the reverse; ``chance`` = 1 / N. With ``keys`` (one content key per row) the
    ``*_content`` rates also count a hit on another row with the same key.
    ``matched_cosine`` is the mean cosine of a clip and its own caption, ``mismatched_cosine``
    that of a clip and another's caption (the mean over all such pairs, which is what randomly
    shuffled pairs give on average).
    """
    n = len(text)
    if n < 2 or len(audio) != n:
        raise ValueError(f"retrieval needs as many clips as captions, at least 2; got {n} and {len(audio)}")
    similarity = text.double() @ audio.double().T  # [caption, clip]
    truth = torch.arange(n)
    best_clip, best_caption = similarity.argmax(dim=1), similarity.argmax(dim=0)
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    result = {
        "n": n,
        "text_to_audio": float((best_clip == truth).double().mean()),
        "audio_to_text": float((best_caption == truth).double().mean()),
    }
    if keys is not None:
        result["text_to_audio_content"] = float((keys[best_clip] == keys).double().mean())
        result["audio_to_text_content"] = float((keys[best_caption] == keys).double().mean())
    return {
        **result,
        "chance": 1 / n,
        "matched_cosine": float(similarity.diagonal().mean()),
        "mismatched_cosine": float(similarity[off_diagonal].mean()),
    }


def retrieval_accuracy(scorer: WindowedClapScorer, scenes: Sequence[Scene], variant: int = 1) -> dict[str, float]:
    """``embedding_retrieval`` among ``scenes`` (held-out ones, say), captions in wording ``variant``.

    Scenes that differ only in what no caption says (timing, pitch within a word) share their
    canonical caption: that is the content key of the ``*_content`` rates.
    """
    from .scenes import SAMPLE_RATE as rate

    if len(scenes) < 2:
        raise ValueError(f"retrieval needs at least 2 scenes, got {len(scenes)}")
    audio = scorer.embed_audio([s.render(rate) for s in scenes], rate)
    text = scorer.embed_text([s.caption(variant) for s in scenes])
    return embedding_retrieval(text, audio, keys=torch.from_numpy(content_keys(scenes)))


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a positive outscores a negative (ties count half); None without both."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def kind_prompts(scorer: WindowedClapScorer) -> torch.Tensor:
    """[kinds, dim]: per event kind, the normalised mean text embedding of its solo scenes' captions."""
    from .scenes import KINDS, Event, Scene

    rows = []
    for kind, spec in KINDS.items():
        captions = sorted(
            {
                Scene((Event(kind, 0.5, 1.0, 0.8, v),), background=None, seed=1).caption(0)
                for v in range(spec.n_variants)
            }
        )
        rows.append(torch.nn.functional.normalize(scorer.embed_text(captions).mean(dim=0), dim=0))
    return torch.stack(rows)


def kind_aucs(prompts: torch.Tensor, audio: torch.Tensor, scenes: Sequence[Scene]) -> dict[str, float | None]:
    """Per kind, the :func:`auc` of "the clip holds this kind" scored by its cosine with the kind's prompt."""
    from .scenes import KINDS

    cosines = (audio @ prompts.T).double().numpy()
    return {kind: auc(cosines[:, j], np.array([kind in s.kinds for s in scenes])) for j, kind in enumerate(KINDS)}


# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nrt.mini.clap", description="Train nrt-mini's CLAP on generated sound scenes."
    )
    p.add_argument(
        "--run-dir", type=Path, help=f"run folder: checkpoint and base model; run again to continue (default {RUN_DIR})"
    )
    p.add_argument("--out", type=Path, help=f"where the trained model goes, hub layout (default {OUT_DIR})")
    p.add_argument("--steps", type=int, default=20_000, help="total optimiser steps of the run (default 20000)")
    p.add_argument("--minutes", type=float, default=None, help="stop (and checkpoint) after this many minutes")
    p.add_argument("--bank", type=int, default=50_000, help="train scenes rendered once and drawn from")
    p.add_argument("--batch-size", type=int, default=256, help="scene/caption pairs per step")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and the batches")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=None, help="processes rendering the bank (default: CPU count)")
    p.add_argument("--init", type=Path, help="start from this trained CLAP (hub layout) instead of an untrained one")
    p.add_argument(
        "--hard-negatives",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="half of each batch one-event variants of the other half, with the content term (default on)",
    )
    p.add_argument(
        "--content-weight", type=float, default=CONTENT_WEIGHT, help="weight of the audio-audio content term"
    )
    p.add_argument("--eval-scenes", type=int, default=200, help="held-out scenes for the final retrieval test")
    p.add_argument("--smoke", action="store_true", help="CI-sized run: 64 scenes, 20 steps, batch 8, temporary dirs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="nrt-mini-clap-") as scratch:
        if args.smoke:
            args.bank, args.steps, args.batch_size, args.warmup = 64, 20, 8, 5
            args.eval_scenes = min(args.eval_scenes, 16)
            args.run_dir = args.run_dir or Path(scratch) / "run"
            args.out = args.out or Path(scratch) / "clap"
        config = TrainConfig(
            steps=args.steps, lr=args.lr, warmup=min(args.warmup, args.steps), max_minutes=args.minutes, seed=args.seed
        )
        began = time.monotonic()
        out = train_clap(
            args.run_dir or RUN_DIR,
            args.out or OUT_DIR,
            bank_size=args.bank,
            config=config,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            init=args.init,
            hard_negatives=args.hard_negatives,
            content_weight=args.content_weight,
        )
        summary = json.loads((out / "training.json").read_text())
        print(
            f"trained to step {summary['step']}/{summary['steps']} in {summary['train_seconds'] / 60:.1f} min, "
            f"after {summary['render_seconds']:.0f} s rendering the bank ({(time.monotonic() - began) / 60:.1f} min "
            f"in all); loss of the last steps {summary['loss']:.3f}; model in {out}"
        )
        print(_retrieval_report(out, args.device, args.eval_scenes))
    return 0


def _retrieval_report(model_dir: Path, device: str, n: int) -> str:
    from ..clap import ClapScorer
    from .scenes import scene_for

    scorer = ClapScorer.from_pretrained(model_dir, device=resolve_device(device), batch_size=64)
    r = retrieval_accuracy(scorer, [scene_for("heldout", i) for i in range(n)])
    return (
        f"retrieval on {r['n']} held-out scenes: text->audio {r['text_to_audio']:.1%}, "
        f"audio->text {r['audio_to_text']:.1%} (chance {r['chance']:.1%}; counting same-content scenes "
        f"{r['text_to_audio_content']:.1%} and {r['audio_to_text_content']:.1%}); mean cosine of matched "
        f"pairs {r['matched_cosine']:.3f}, of mismatched pairs {r['mismatched_cosine']:.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
