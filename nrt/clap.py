"""CLAP scores of an edit: the paper's Eq. 3 (Text CLAP) and Eq. 4 (Audio CLAP).

    Text CLAP  = cos(clap_a(edit), clap_t(prompt))
    Audio CLAP = cos(clap_a(edit), clap_a(reference))      sum = Text CLAP + Audio CLAP

The paper's CLAP [12] is Microsoft's: :mod:`nrt.msclap` reads its weights (``msclap-2023``, the
scorer comparable with the paper's Table 1). This module scores with LAION CLAP, whose numbers are
not comparable with that table.

Default model: ``laion/clap-htsat-unfused`` (:data:`DEFAULT_MODEL`), the unfused HTSAT-tiny
LAION CLAP of the LAION-Audio-630K release. It has the architecture of laion-clap's 630k
checkpoints, the CLAP that text-to-audio papers commonly report, so nrt's numbers sit closest
to theirs; it is unfused, so no input could take the feature-fusion path (random crops in both
the original code and transformers); and HTSAT-tiny is the smaller of LAION's two audio
encoders, cheap to hold beside a backbone in every sweep worker.
``laion/larger_clap_general`` (HTSAT-base, more training data including music and speech) is
the stronger general-audio model: pass it by name where retrieval quality matters more than
comparability. ``"tiny"`` (:data:`TINY_MODEL`) is a random, tiny model built locally
(:func:`build_tiny_clap`) for tests and offline smoke runs; its scores mean nothing.
``"mini"`` (:data:`MINI_MODEL`) is nrt-mini's CLAP, trained by nrt on its generated scenes and
shipped in the package: the default scorer of the default backbone, meaningful only for the
sounds and words of those scenes.

Determinism. transformers' ``ClapFeatureExtractor`` crops a clip longer than its window
(10 s for LAION) at a random place drawn from the global numpy generator (``rand_trunc``), and
fusion models stack random crops (``fusion``), also marking a random clip of the batch as
"longer". nrt never lets the extractor see a clip longer than its window:

- a clip no longer than the window goes to the extractor whole, which fills it to the window
  with LAION's ``repeatpad`` (the clip tiled a whole number of times, then zeros);
- a longer clip of ``n`` samples is cut into ``k = ceil(n / w)`` windows of exactly ``w``
  samples, their starts spread evenly from ``0`` to ``n - w`` (rounded to samples), so the
  windows cover every sample and overlap only as much as ``k`` whole windows must;
- each window is embedded (the model's embedding is L2-normalised), the window embeddings are
  averaged with equal weight and the mean is L2-normalised again. Normalised before averaging,
  so each stretch of the clip counts the same whatever the norm the model gives it;
- ``is_longer`` is False for every window, and the global numpy generator is restored after
  each call of the extractor, so scoring neither depends on nor disturbs it.

A clip no longer than the window thus gets exactly the model's own embedding.

Band limit. ``band_limit_rate`` (for example 16000, TANGO's rate) passes every waveform, the
reference and the edits alike, through that sample rate before CLAP sees it, so Audio CLAP
compares the edit with the input as the backbone can represent it (at most 8 kHz for 16 kHz)
and a backbone that cannot produce high frequencies is not penalised for that twice. Off by
default; evaluation turns it on with the backbone's rate and says so next to its numbers.

Inputs are numpy waveforms at any rate: 2-D arrays are mixed down to mono (the shorter axis is
taken as channels), and everything is resampled explicitly with soxr to the extractor's rate
(48 kHz for LAION).
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch

from nrt.defaults import DEFAULT_CLAP
from nrt.errors import InputError, ModelNotFoundError, NrtError
from nrt.hub import cache_dir, ensure_cached

if TYPE_CHECKING:
    from transformers import ClapFeatureExtractor, ClapModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL = DEFAULT_CLAP
TINY_MODEL = "tiny"
MINI_MODEL = "mini"  # nrt-mini's own CLAP, shipped in the package (nrt/mini/MODEL_CARD.md)
TINY_VERSION = 1
TEXT_MAX_TOKENS = 77  # LAION CLAP's own text length (its tokenizer files say 512)
MIN_TOKENIZER_SIZE = 100
# Buffers a model rebuilds from its config, which a checkpoint may omit without harm.
_REBUILT_BUFFERS = ("position_ids", "token_type_ids", "relative_position_index", "num_batches_tracked")


# Scores


@dataclass(frozen=True)
class ClapScores:
    """The CLAP scores of one edit."""

    text: float
    audio: float

    @property
    def sum(self) -> float:
        return self.text + self.audio


@dataclass(frozen=True)
class ClapScoreBatch:
    """The CLAP scores of several edits against one reference and one prompt, in input order."""

    text: np.ndarray
    audio: np.ndarray

    @property
    def sum(self) -> np.ndarray:
        return self.text + self.audio

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, i: int) -> ClapScores:
        return ClapScores(float(self.text[i]), float(self.audio[i]))

    def __iter__(self) -> Iterator[ClapScores]:
        return (self[i] for i in range(len(self)))


def cosine_scores(edits: torch.Tensor, reference: torch.Tensor, prompt: torch.Tensor) -> ClapScoreBatch:
    """Eq. 3 and 4 from embeddings: ``edits`` [N, D], ``reference`` and ``prompt`` [D] or [1, D].

    For callers that keep the reference and prompt embeddings across many calls.
    """
    edits = torch.nn.functional.normalize(edits.detach().double().cpu(), dim=-1)
    reference = torch.nn.functional.normalize(reference.detach().double().cpu().reshape(1, -1), dim=-1)
    prompt = torch.nn.functional.normalize(prompt.detach().double().cpu().reshape(1, -1), dim=-1)
    return ClapScoreBatch(text=(edits @ prompt.T)[:, 0].numpy(), audio=(edits @ reference.T)[:, 0].numpy())


# Waveforms


def window_starts(n_samples: int, window: int) -> list[int]:
    """Starts of the fewest windows of ``window`` samples that cover ``n_samples``, evenly spread."""
    if n_samples <= window:
        return [0]
    k = math.ceil(n_samples / window)
    return [int(s) for s in np.round(np.linspace(0, n_samples - window, k))]


def _mono(wave: np.ndarray, what: str) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim == 2:
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    if wave.ndim != 1:
        raise InputError(f"{what} must be a 1-D or 2-D waveform, got shape {wave.shape}")
    if wave.size == 0:
        raise InputError(f"{what} is empty")
    wave = wave.astype(np.float32, copy=False)
    if not np.isfinite(wave).all():
        raise InputError(f"{what} holds NaN or infinite samples")
    return wave


def _check_rate(rate: int, what: str) -> int:
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(f"{what} must be a positive integer (Hz), got {rate!r}")
    return int(rate)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    return soxr.resample(wave, rate, target).astype(np.float32, copy=False)


@contextlib.contextmanager
def _numpy_rng_kept() -> Iterator[None]:
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


# Scorers


class WindowedClapScorer(abc.ABC):
    """What every CLAP backend shares: input checks, resampling, windows, batching, Eq. 3 and 4.

    A backend provides ``sample_rate``, ``window_samples`` and the two embedding calls on
    ready windows and prompts; both return L2-normalised float32 rows on the CPU.
    """

    sample_rate: int
    window_samples: int

    def __init__(self, batch_size: int = 8, band_limit_rate: int | None = None) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        if band_limit_rate is not None:
            _check_rate(band_limit_rate, "band_limit_rate")
        self.batch_size = batch_size
        self.band_limit_rate = band_limit_rate

    @abc.abstractmethod
    def _embed_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        """Embeddings [N, D] of windows at ``sample_rate``, none longer than ``window_samples``."""

    @abc.abstractmethod
    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings [N, D] of prompts."""

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    def prepare(self, wave: np.ndarray, sample_rate: int, what: str = "waveform") -> np.ndarray:
        """A waveform as CLAP sees it: mono, band-limited if asked, at ``sample_rate``."""
        wave = _mono(wave, what)
        rate = _check_rate(sample_rate, f"sample rate of {what}")
        if self.band_limit_rate is not None and rate > self.band_limit_rate:
            wave, rate = _resample(wave, rate, self.band_limit_rate), self.band_limit_rate
        return _resample(wave, rate, self.sample_rate)

    def embed_audio(self, waves: Sequence[np.ndarray], sample_rate: int) -> torch.Tensor:
        """L2-normalised audio embeddings [N, D], one per waveform (the window scheme above)."""
        if isinstance(waves, np.ndarray) or len(waves) == 0:
            raise InputError("expected a non-empty list of waveforms")
        windows: list[np.ndarray] = []
        owners: list[int] = []
        for i, wave in enumerate(waves):
            wave = self.prepare(wave, sample_rate, f"waveform {i}")
            for start in window_starts(len(wave), self.window_samples):
                windows.append(wave[start : start + self.window_samples])
                owners.append(i)
        logger.debug("embedding %d waveforms as %d windows", len(waves), len(windows))
        rows = torch.cat(
            [self._embed_windows(windows[b : b + self.batch_size]) for b in range(0, len(windows), self.batch_size)]
        )
        index = torch.tensor(owners)
        summed = torch.zeros(len(waves), rows.shape[1], dtype=rows.dtype).index_add_(0, index, rows)
        return torch.nn.functional.normalize(summed, dim=-1)

    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, D]."""
        if isinstance(prompts, str) or len(prompts) == 0:
            raise InputError("embed_text takes a non-empty list of prompts")
        prompts = [str(p) for p in prompts]
        return torch.cat(
            [self._embed_prompts(prompts[b : b + self.batch_size]) for b in range(0, len(prompts), self.batch_size)]
        )

    def score(
        self,
        edits: Sequence[np.ndarray],
        edit_rate: int,
        reference: np.ndarray,
        reference_rate: int,
        prompt: str,
    ) -> ClapScoreBatch:
        """Text and Audio CLAP of each edit; the reference and the prompt are embedded once."""
        if isinstance(edits, np.ndarray):
            raise InputError("edits must be a list of waveforms; use score_one for a single edit")
        e_ref = self.embed_audio([reference], reference_rate)
        e_prompt = self.embed_text([prompt])
        return cosine_scores(self.embed_audio(edits, edit_rate), e_ref, e_prompt)

    def score_one(
        self, edit: np.ndarray, edit_rate: int, reference: np.ndarray, reference_rate: int, prompt: str
    ) -> ClapScores:
        """:meth:`score` for a single edit."""
        return self.score([edit], edit_rate, reference, reference_rate, prompt)[0]


class ClapScorer(WindowedClapScorer):
    """LAION CLAP through transformers' ``ClapModel`` (hub layout, or the built-in ``"tiny"``)."""

    def __init__(
        self,
        model: ClapModel,
        feature_extractor: ClapFeatureExtractor,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 8,
        band_limit_rate: int | None = None,
    ) -> None:
        super().__init__(batch_size, band_limit_rate)
        _check_tokenizer(tokenizer, model.config.text_config.vocab_size)
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.window_samples = int(feature_extractor.nb_max_samples)
        # Fusion models take four stacked mels, unfused ones one; the mel filters differ too.
        self.truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"
        positions = model.config.text_config.max_position_embeddings - 2  # RoBERTa offsets by pad + 1
        self.text_max_tokens = min(TEXT_MAX_TOKENS, tokenizer.model_max_length, positions)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        batch_size: int = 8,
        band_limit_rate: int | None = None,
    ) -> ClapScorer:
        """Load a ``ClapModel`` checkpoint: a hub id, a local directory, or ``"tiny"``.

        Raises :class:`~nrt.errors.ModelNotFoundError` at once, in one line, for a name that is
        neither on disk nor reachable.
        """
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        dtype = _torch_dtype(dtype)
        path = resolve_model(name_or_path)
        logger.info("loading CLAP from %s (%s, %s)", path, device, dtype)
        try:
            model, info = ClapModel.from_pretrained(path, dtype=dtype, output_loading_info=True)
            feature_extractor = ClapFeatureExtractor.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as err:  # a file missing from an incomplete download or copy
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelNotFoundError(
                f"the CLAP checkpoint in {path} is incomplete ({reason}); fetch or copy it again"
            ) from None
        missing = [k for k in info.get("missing_keys", []) if not k.endswith(_REBUILT_BUFFERS)]
        if missing:
            raise NrtError(
                f"CLAP checkpoint {path} lacks {len(missing)} weights (first: {missing[0]}); is it a ClapModel?"
            )
        return cls(model.to(device), feature_extractor, tokenizer, batch_size, band_limit_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def features(self, windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The model inputs of windows no longer than ``window_samples``; nothing random happens."""
        with _numpy_rng_kept():
            inputs = self.feature_extractor(
                windows,
                sampling_rate=self.sample_rate,
                truncation=self.truncation,
                padding="repeatpad",
                return_tensors="pt",
            )
        return {
            "input_features": inputs["input_features"].to(self.device, self.model.dtype),
            "is_longer": torch.zeros(len(windows), 1, dtype=torch.bool, device=self.device),
        }

    def _embed_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model.get_audio_features(**self.features(windows))
        return torch.nn.functional.normalize(out.pooler_output.float().cpu(), dim=-1)

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.text_max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        return torch.nn.functional.normalize(out.pooler_output.float().cpu(), dim=-1)


# Finding a model


def _torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise InputError(f"dtype must be one of float32, float16, bfloat16, got {dtype!r}")
    return value


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    size = len(tokenizer)
    if size < max(MIN_TOKENIZER_SIZE, vocab_size // 2) or size > vocab_size:
        raise NrtError(
            f"the CLAP tokenizer has {size} tokens but the text model {vocab_size}: an incomplete "
            "download or an offline stub; fetch the checkpoint's tokenizer files again"
        )


def _not_found(name: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"CLAP model {name!r} {why}; on a machine with access run `huggingface-cli download {name} "
        "--local-dir DIR`, copy DIR here and pass it as the model"
    )


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The local directory of a CLAP checkpoint: built (``"tiny"``), on disk, cached or downloaded."""
    name = str(name_or_path)
    if name == TINY_MODEL:
        return _tiny_in_cache()
    if name == MINI_MODEL:
        from nrt.mini.model import CLAP_DIR

        if not (CLAP_DIR / "config.json").is_file():
            raise _not_found(name, f"is missing from {CLAP_DIR}; reinstall nrt")
        return CLAP_DIR
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _not_found(name, "is a directory without config.json")
        return path
    looks_local = path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1
    if looks_local:
        raise _not_found(name, "is not a directory here")

    import huggingface_hub
    from huggingface_hub import constants

    try:
        return Path(huggingface_hub.snapshot_download(name, local_files_only=True))
    except Exception:
        pass
    if constants.is_offline_mode():
        raise _not_found(name, "is not a local directory nor in the hub cache, and the hub is off (HF_HUB_OFFLINE)")
    try:
        info = huggingface_hub.HfApi().model_info(name, timeout=10)
        files = [s.rfilename for s in info.siblings or []]
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
        return Path(huggingface_hub.snapshot_download(name, allow_patterns=["*.json", "*.txt", weights]))
    except Exception as err:
        raise _not_found(name, f"is not a local directory and the hub did not give it ({type(err).__name__})") from None


def _tiny_in_cache() -> Path:
    return ensure_cached(f"clap-tiny-v{TINY_VERSION}", build_tiny_clap, "config.json")


# The tiny model

_SOURCES = [
    "dog",
    "cat",
    "bird",
    "birds",
    "crow",
    "owl",
    "rooster",
    "cow",
    "horse",
    "sheep",
    "goat",
    "pig",
    "frog",
    "cricket",
    "insects",
    "bee",
    "fly",
    "man",
    "woman",
    "child",
    "baby",
    "people",
    "crowd",
    "audience",
    "choir",
    "singer",
    "speaker",
    "engine",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "airplane",
    "helicopter",
    "boat",
    "siren",
    "horn",
    "alarm",
    "bell",
    "clock",
    "phone",
    "door",
    "window",
    "drawer",
    "footsteps",
    "keyboard",
    "typewriter",
    "printer",
    "drill",
    "saw",
    "hammer",
    "vacuum",
    "blender",
    "microwave",
    "kettle",
    "faucet",
    "water",
    "rain",
    "thunder",
    "wind",
    "waves",
    "stream",
    "river",
    "fire",
    "fireworks",
    "gunshot",
    "explosion",
    "piano",
    "guitar",
    "violin",
    "drum",
    "drums",
    "trumpet",
    "flute",
    "saxophone",
    "organ",
    "harp",
    "whistle",
    "applause",
    "laughter",
]
_ACTIONS = [
    "barks",
    "meows",
    "chirps",
    "sings",
    "caws",
    "hoots",
    "crows",
    "moos",
    "neighs",
    "bleats",
    "croaks",
    "buzzes",
    "talks",
    "speaks",
    "shouts",
    "whispers",
    "laughs",
    "cries",
    "coughs",
    "sneezes",
    "claps",
    "walks",
    "runs",
    "idles",
    "revs",
    "accelerates",
    "passes",
    "honks",
    "rings",
    "ticks",
    "beeps",
    "slams",
    "creaks",
    "opens",
    "closes",
    "types",
    "drills",
    "hammers",
    "hums",
    "whirs",
    "boils",
    "drips",
    "pours",
    "falls",
    "blows",
    "crashes",
    "crackles",
    "splashes",
    "flows",
    "plays",
    "echoes",
    "fades",
    "rumbles",
    "roars",
]
_PLACES = [
    "in a park",
    "on a street",
    "in the distance",
    "in a small room",
    "in a large hall",
    "near a highway",
    "in a forest",
    "at the beach",
    "in a kitchen",
    "in an office",
    "at a train station",
    "in a church",
    "underwater",
    "in a cave",
    "on a farm",
    "in a stadium",
    "outdoors",
    "indoors",
    "at night",
    "in the rain",
]
_QUALITIES = [
    "loud",
    "quiet",
    "soft",
    "distant",
    "nearby",
    "muffled",
    "echoing",
    "sharp",
    "harsh",
    "gentle",
    "steady",
    "repeated",
    "brief",
    "long",
    "continuous",
    "intermittent",
    "rhythmic",
    "slow",
    "fast",
    "low",
    "high",
    "bright",
    "dark",
    "noisy",
    "clean",
]


def tiny_corpus() -> list[str]:
    """A few hundred captions in the style of AudioCaps, to train the tiny model's tokenizer."""
    captions = []
    for i, source in enumerate(_SOURCES):
        for j in range(4):
            action = _ACTIONS[(i * 7 + j * 3) % len(_ACTIONS)]
            place = _PLACES[(i + j * 5) % len(_PLACES)]
            quality = _QUALITIES[(i * 3 + j) % len(_QUALITIES)]
            captions.append(f"a {quality} {source} {action} {place}")
            captions.append(f"The {source} {action} while {_SOURCES[(i + j + 1) % len(_SOURCES)]}s are heard.")
    return captions


def bpe_tokenizer(corpus: Sequence[str], vocab_size: int, max_length: int):
    """A byte-level RoBERTa BPE tokenizer of at most ``vocab_size`` tokens, trained on ``corpus``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0-4, as ClapTextConfig expects
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    return RobertaTokenizer(vocab=trained["vocab"], merges=merges, model_max_length=max_length)


def build_tiny_clap(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random ``ClapModel`` with its tokenizer and feature extractor to ``directory``.

    The hub layout, loadable with :meth:`ClapScorer.from_pretrained` offline: HTSAT with two
    one-block stages on a 128x128 image of 64 mels, a two-layer RoBERTa of width 32, 16-d
    embeddings, and a 48 kHz extractor with a 2 s window (so long-clip windowing is exercised
    on short clips). About 60 k parameters; built in well under a second.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = bpe_tokenizer(tiny_corpus(), 1024, TEXT_MAX_TOKENS)
    config = ClapConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=TEXT_MAX_TOKENS + 3,
        ),
        audio_config=dict(
            num_mel_bins=64,
            spec_size=128,  # time is folded onto 128 // 64 = 2 rows: at most 256 mel frames
            window_size=8,
            depths=[1, 1],
            num_attention_heads=[2, 4],
            patch_embeds_hidden_size=16,
            hidden_size=32,
            enable_fusion=False,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config).eval()
    # Rough statistics of the extractor's dB mels; with the default (0, 1) every input of the
    # random model lands on nearly the same embedding, and the tests could not tell clips apart.
    batch_norm = model.audio_model.audio_encoder.batch_norm
    batch_norm.running_mean.fill_(-60.0)
    batch_norm.running_var.fill_(40.0**2)
    feature_extractor = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48_000,
        hop_length=480,
        max_length_s=2,  # 201 mel frames
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14_000,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    feature_extractor.save_pretrained(directory)
    return directory


__all__ = [
    "DEFAULT_MODEL",
    "MINI_MODEL",
    "TINY_MODEL",
    "ClapScorer",
    "ClapScoreBatch",
    "ClapScores",
    "WindowedClapScorer",
    "bpe_tokenizer",
    "build_tiny_clap",
    "cache_dir",
    "cosine_scores",
    "resolve_model",
    "tiny_corpus",
    "window_starts",
]
