"""laion-clap's original ``.pt`` checkpoints, read into transformers' ``ClapModel`` without laion-clap.

The files LAION published (https://huggingface.co/lukewys/laion_clap) are training snapshots:
a dict whose ``state_dict`` holds the weights of laion-clap's ``CLAP`` module (keys prefixed
``module.`` when it was trained under DistributedDataParallel), beside the epoch, the run's
name and the optimizer. nrt reads them with ``torch.load(weights_only=True)``; the one kind of
object besides tensors and plain values in them is a numpy float (laion-clap's cosine schedule
wrote numpy learning rates into the optimizer's state), so numpy scalars, and nothing else,
are allowed for the load (:data:`NUMPY_SCALAR_GLOBALS`).

Mapped checkpoints. The architecture is read from the weights' shapes, not from the file name:

- ``630k-best.pt``, ``630k-audioset-best.pt``: HTSAT-tiny (width 96, stages 2-2-6-2), unfused;
- ``630k-fusion-best.pt``, ``630k-audioset-fusion-best.pt``: HTSAT-tiny with feature fusion
  (``aff_2d``), detected from the fusion weights;
- ``music_audioset_epoch_15_esc_90.14.pt``, ``music_speech_epoch_15_esc_89.25.pt``,
  ``music_speech_audioset_epoch_15_esc_89.98.pt``: HTSAT-base (width 128, stages 2-2-12-2),
  unfused.

All have RoBERTa-base as the text tower (``text_branch``) and two-layer projections into a
512-d space. The mapping (:func:`clap_state_dict`) renames laion-clap's modules to
transformers' (``attn.proj`` → ``attention.output.dense``, ``norm1`` → ``layernorm_before``,
``bn0`` → ``batch_norm``, the projections' ``Sequential`` indices → ``linear1``/``linear2``,
...) and splits each fused ``qkv`` projection into ``query``, ``key`` and ``value``. It is
strict: a checkpoint weight that has no place in ``ClapModel``, or a ``ClapModel`` weight the
checkpoint lacks, is an error that names them. What is dropped is dropped by name
(:data:`UNUSED`): the contrastive loss's ``*_transform`` MLPs, HTSAT's AudioSet head, the
Swin attention masks (``ClapModel`` rebuilds them), and the STFT and mel filters of the
in-model front end, whose work ``ClapFeatureExtractor`` does; the checkpoint's own mel filter
bank is compared with the extractor's first, so a file made for another front end is refused.

The text tokenizer is RoBERTa-base's (:data:`ROBERTA_TOKENIZER`), as laion-clap uses it: from
the local Hugging Face cache, fetched (its small files only) where the hub is reachable, or a
local directory with its files.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .clap import _REBUILT_BUFFERS, ClapScorer, _torch_dtype
from .errors import ModelNotFoundError, NrtError, listed
from .hub import resolve_model_dir

if TYPE_CHECKING:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

ROBERTA_TOKENIZER = "FacebookAI/roberta-base"  # laion-clap's ``RobertaTokenizer.from_pretrained("roberta-base")``
TOKENIZER_FILES = ["*.json", "*.txt"]  # vocab.json, merges.txt, tokenizer.json, the configs: no weights
DOWNLOAD_HINT = "download it from https://huggingface.co/lukewys/laion_clap and pass the file"

# laion-clap's audio front end (its ``model_configs/HTSAT-*.json``), the same for every release:
# 48 kHz, 10 s windows, hop 480, and the square HTSAT image of 256 pixels these fill.
SAMPLE_RATE = 48_000
WINDOW_SECONDS = 10
HOP_LENGTH = 480
FREQUENCY_MIN = 50
FREQUENCY_MAX = 14_000
SPEC_SIZE = 256
ROBERTA_HEAD_WIDTH = 64  # heads are not in the weights: RoBERTa-base has 12 of width 64
ROBERTA_LAYER_NORM_EPS = 1e-5  # RoBERTa-base's, not ClapTextConfig's default of 1e-12

# A numpy float as numpy 1 (the published files) and numpy 2 pickle it: numpy's scalar
# constructor (``numpy.core.multiarray.scalar``, ``numpy._core`` since numpy 2) on a dtype and bytes.
_numpy_scalar = np.float64(0).__reduce__()[0]
NUMPY_SCALAR_GLOBALS: list[Any] = [
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
]

_AUDIO = "audio_model.audio_encoder."
_BLOCK = r"^audio_branch\.(layers\.\d+\.blocks\.\d+)\."
# laion-clap's name → ClapModel's, the first match wins.
RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), target)
    for pattern, target in [
        (r"^text_branch\.(.+)$", r"text_model.\1"),  # RoBERTa's own names on both sides
        (r"^(text|audio)_projection\.0\.(weight|bias)$", r"\1_projection.linear1.\2"),
        (r"^(text|audio)_projection\.2\.(weight|bias)$", r"\1_projection.linear2.\2"),
        (r"^(logit_scale_[at])$", r"\1"),
        (r"^audio_branch\.bn0\.(.+)$", _AUDIO + r"batch_norm.\1"),
        (_BLOCK + r"norm1\.(.+)$", _AUDIO + r"\1.layernorm_before.\2"),
        (_BLOCK + r"norm2\.(.+)$", _AUDIO + r"\1.layernorm_after.\2"),
        (_BLOCK + r"attn\.proj\.(.+)$", _AUDIO + r"\1.attention.output.dense.\2"),
        (_BLOCK + r"attn\.(relative_position_bias_table|relative_position_index)$", _AUDIO + r"\1.attention.self.\2"),
        (_BLOCK + r"mlp\.fc1\.(.+)$", _AUDIO + r"\1.intermediate.dense.\2"),
        (_BLOCK + r"mlp\.fc2\.(.+)$", _AUDIO + r"\1.output.dense.\2"),
        (r"^audio_branch\.(patch_embed|norm|layers\.\d+\.downsample)\.(.+)$", _AUDIO + r"\1.\2"),
    ]
]
QKV = re.compile(_BLOCK + r"attn\.qkv\.(weight|bias)$")
UNUSED = re.compile(
    r"^(?:(?:audio|text)_transform\."  # the MLPs of laion-clap's training loss
    r"|audio_branch\.(?:head|tscam_conv)\."  # HTSAT's AudioSet classifier
    r"|audio_branch\.(?:spectrogram_extractor|logmel_extractor)\."  # the STFT and mel: ClapFeatureExtractor's work
    r"|audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$)"  # rebuilt from the geometry
)
_MEL_FILTERS = "audio_branch.logmel_extractor.melW"


# Reading


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a laion-clap ``.pt`` file, without a ``module.`` prefix; nothing else is kept."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"laion-clap checkpoint {str(path)!r} not found; {DOWNLOAD_HINT}")
    try:
        with torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # not a zip of tensors, or a global other than numpy scalars
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NrtError(f"{path} cannot be read as a laion-clap checkpoint ({reason})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NrtError(f"{path} holds no state dict of tensors (a laion-clap checkpoint has one under 'state_dict')")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _tensor(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise NrtError(f"not a laion-clap HTSAT + RoBERTa checkpoint: it has no {key!r}")
    return state[key]


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    if found != set(range(len(found))):
        raise NrtError(f"the checkpoint's {pattern!r} are not numbered 0 to n-1: {sorted(found)}")
    return len(found)


def clap_config(state: dict[str, torch.Tensor]) -> ClapConfig:
    """The ``ClapConfig`` of laion-clap weights, read from their names and shapes."""
    from transformers import ClapConfig

    patch = _tensor(state, "audio_branch.patch_embed.proj.weight")  # [width, 1, patch, patch]
    width, patch_size = patch.shape[0], patch.shape[-1]
    stages = _count(state, r"^audio_branch\.layers\.(\d+)\.")
    depths = [_count(state, rf"^audio_branch\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
    table = "audio_branch.layers.{}.blocks.0.attn.relative_position_bias_table"  # [(2w - 1)^2, heads]
    tables = [_tensor(state, table.format(i)) for i in range(stages)]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2
    fc1 = _tensor(state, "audio_branch.layers.0.blocks.0.mlp.fc1.weight")
    fusion = "audio_branch.patch_embed.mel_conv2d.weight" in state
    audio = dict(
        num_mel_bins=_tensor(state, "audio_branch.bn0.weight").shape[0],
        spec_size=SPEC_SIZE,
        window_size=window,
        patch_size=patch_size,
        patch_stride=[patch_size, patch_size],  # HTSAT's patches do not overlap
        patch_embeds_hidden_size=width,
        depths=depths,
        num_attention_heads=[t.shape[1] for t in tables],
        hidden_size=width * 2 ** (stages - 1),
        mlp_ratio=fc1.shape[0] / width,
        enable_fusion=fusion,
    )
    if fusion:
        inner = _tensor(state, "audio_branch.patch_embed.fusion_model.local_att.0.weight").shape[0]
        audio["aff_block_r"] = width // inner
    _check_windows(state, audio)

    words = _tensor(state, "text_branch.embeddings.word_embeddings.weight")  # [vocab, hidden]
    types = _tensor(state, "text_branch.embeddings.token_type_embeddings.weight").shape[0]
    if types != 1:
        raise NrtError(f"the text tower has {types} token types, as BERT has; only RoBERTa text towers are mapped")
    hidden = words.shape[1]
    text = dict(
        vocab_size=words.shape[0],
        hidden_size=hidden,
        num_hidden_layers=_count(state, r"^text_branch\.encoder\.layer\.(\d+)\."),
        num_attention_heads=max(1, hidden // ROBERTA_HEAD_WIDTH),
        intermediate_size=_tensor(state, "text_branch.encoder.layer.0.intermediate.dense.weight").shape[0],
        max_position_embeddings=_tensor(state, "text_branch.embeddings.position_embeddings.weight").shape[0],
        type_vocab_size=types,
        layer_norm_eps=ROBERTA_LAYER_NORM_EPS,
    )
    projection_dim = _tensor(state, "audio_projection.0.weight").shape[0]
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)


def _check_windows(state: dict[str, torch.Tensor], audio: dict[str, Any]) -> None:
    """Each stored Swin mask has as many windows as a 256-pixel image gives: the geometry is LAION's."""
    grid = SPEC_SIZE // audio["patch_size"]
    for key, mask in state.items():
        if m := re.match(r"^audio_branch\.layers\.(\d+)\.blocks\.\d+\.attn_mask$", key):
            side = grid // 2 ** int(m.group(1)) // audio["window_size"]
            if mask.shape[0] != side * side:
                raise NrtError(
                    f"{key} has {mask.shape[0]} windows where a {SPEC_SIZE}-pixel HTSAT has {side * side}: "
                    "not laion-clap's audio geometry"
                )


# Mapping


def clap_state_dict(state: dict[str, torch.Tensor], model_keys: Collection[str]) -> dict[str, torch.Tensor]:
    """laion-clap weights under ``ClapModel``'s names (``model_keys``).

    A weight that no rule maps, or that maps to a name ``ClapModel`` does not have, is an error
    that names it as the checkpoint does.
    """
    mapped: dict[str, torch.Tensor] = {}
    unplaced = []
    for key, value in state.items():
        if UNUSED.match(key):
            continue
        if m := QKV.match(key):
            block, kind = m.groups()
            names = [f"{_AUDIO}{block}.attention.self.{part}.{kind}" for part in ("query", "key", "value")]
            parts = value.chunk(3, dim=0)
        else:
            target = next((pattern.sub(to, key) for pattern, to in RENAMES if pattern.match(key)), None)
            names, parts = ([target], (value,)) if target is not None else ([], ())
        if not names or any(name not in model_keys for name in names):
            unplaced.append(key)
            continue
        mapped.update(zip(names, parts))
    if unplaced:
        raise NrtError(f"{len(unplaced)} checkpoint weights have no place in ClapModel: {listed(unplaced)}")
    return mapped


def load_strict(model: ClapModel, mapped: dict[str, torch.Tensor]) -> None:
    """Load mapped weights; a missing or misshapen weight is an error that names it.

    Buffers ``ClapModel`` rebuilds from its config (position ids, relative position indices,
    batch counters) may be absent.
    """
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in mapped and not k.endswith(_REBUILT_BUFFERS))
    misshapen = sorted(
        f"{k} {tuple(v.shape)} (ClapModel: {tuple(expected[k].shape)})"
        for k, v in mapped.items()
        if k in expected and v.shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} ClapModel weights missing from the checkpoint: {listed(missing)}")
    if misshapen:
        problems.append(f"{len(misshapen)} weights of the wrong shape: {listed(misshapen)}")
    if problems:
        raise NrtError("the laion-clap checkpoint does not map onto ClapModel: " + "; ".join(problems))
    model.load_state_dict(mapped, strict=False)


def feature_extractor(config: ClapConfig) -> ClapFeatureExtractor:
    """laion-clap's front end as a ``ClapFeatureExtractor`` (the one of ``laion/clap-htsat-*``)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=config.audio_config.num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        max_length_s=WINDOW_SECONDS,
        fft_window_size=1024,
        frequency_min=FREQUENCY_MIN,
        frequency_max=FREQUENCY_MAX,
        truncation="fusion" if config.audio_config.enable_fusion else "rand_trunc",
        padding="repeatpad",
    )


def _check_front_end(state: dict[str, torch.Tensor], extractor: ClapFeatureExtractor) -> None:
    """The checkpoint's mel filters are the extractor's: same rate, FFT size, mel count and band."""
    filters = state.get(_MEL_FILTERS)
    if filters is None:
        return  # nothing to compare with; the HTSAT geometry was checked already
    expected = torch.from_numpy(np.asarray(extractor.mel_filters_slaney, dtype=np.float32))
    if filters.shape != expected.shape or not torch.allclose(filters.float(), expected, rtol=1e-3, atol=1e-6):
        raise NrtError(
            f"the checkpoint's mel filters {tuple(filters.shape)} are not laion-clap's ({SAMPLE_RATE} Hz, "
            f"FFT {extractor.fft_window_size}, {extractor.feature_size} mels, {FREQUENCY_MIN}-{FREQUENCY_MAX} Hz)"
        )


def load_model(path: str | os.PathLike) -> tuple[ClapModel, ClapFeatureExtractor]:
    """A laion-clap ``.pt`` file as a ``ClapModel`` in eval mode, with the feature extractor it expects."""
    from transformers import ClapModel

    state = read_checkpoint(path)
    config = clap_config(state)
    extractor = feature_extractor(config)
    _check_front_end(state, extractor)
    model = ClapModel(config)
    load_strict(model, clap_state_dict(state, model.state_dict().keys()))
    audio = config.audio_config
    logger.info(
        "read %s: HTSAT width %d, stages %s, %s; RoBERTa of %d layers",
        Path(path).name,
        audio.patch_embeds_hidden_size,
        audio.depths,
        "fused" if audio.enable_fusion else "unfused",
        config.text_config.num_hidden_layers,
    )
    return model.eval(), extractor


# The tokenizer and the scorer


def tokenizer_dir(tokenizer: str | os.PathLike | None = None) -> Path:
    """The directory of the RoBERTa tokenizer: ``tokenizer`` (a directory or hub id), else RoBERTa-base's."""
    name = str(tokenizer) if tokenizer is not None else ROBERTA_TOKENIZER
    try:
        directory, _ = resolve_model_dir(name, allow_patterns=TOKENIZER_FILES)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(
            f"the text tokenizer of laion-clap checkpoints ({name}) cannot be had ({err}); on a machine with "
            f"access run `huggingface-cli download {ROBERTA_TOKENIZER} vocab.json merges.txt tokenizer.json "
            "tokenizer_config.json config.json`, then copy the hub cache here"
        ) from None
    return directory


def check_checkpoint(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> None:
    """Fail now, in one line, if the file or its tokenizer is missing; the weights are not read."""
    if not Path(path).expanduser().is_file():
        raise ModelNotFoundError(f"laion-clap checkpoint {str(path)!r} not found; {DOWNLOAD_HINT}")
    tokenizer_dir(tokenizer)


def load_scorer(
    path: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    batch_size: int = 8,
    band_limit_rate: int | None = None,
) -> ClapScorer:
    """A :class:`~nrt.clap.ClapScorer` on a laion-clap ``.pt`` checkpoint."""
    from transformers import AutoTokenizer

    text_tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(tokenizer_dir(tokenizer))
    model, extractor = load_model(path)
    model = model.to(device=device, dtype=_torch_dtype(dtype))
    return ClapScorer(model, extractor, text_tokenizer, batch_size, band_limit_rate)


__all__ = [
    "ROBERTA_TOKENIZER",
    "check_checkpoint",
    "clap_config",
    "clap_state_dict",
    "feature_extractor",
    "load_model",
    "load_scorer",
    "load_strict",
    "read_checkpoint",
    "tokenizer_dir",
]
