"""Microsoft CLAP (``msclap``, the paper's reference [12]) as a CLAP scorer, without the msclap package.

msclap 1.3.4 pins ``numpy<2``, ``transformers<5`` and imports torchaudio, so it cannot be
installed beside nrt. nrt reads its published checkpoints into modules of its own:

- ``msclap-2023``: ``CLAP_weights_2023.pth`` on the hub repo ``microsoft/msclap``. HTSAT-tiny
  audio tower (width 96, stages 2-2-6-2, heads 4-8-16-32, windows of 8, a 256x256 image), GPT-2
  text tower pooled at the last token, 77 tokens; msclap's default release.
- ``msclap-2022``: ``CLAP_weights_2022.pth``. CNN14 audio tower (2048-d), BERT-base-uncased text
  tower pooled at ``[CLS]``, 100 tokens.
- a local ``.pth`` in the same format (``{"model": state_dict}``): the release is told by the
  audio tower's keys, and a JSON file beside it with the same stem (``x.pth`` → ``x.json``) may
  give another architecture or tokenizer (:meth:`MsClapConfig.from_dict`; the tests use it for
  tiny models).

Both project into 1024 dimensions through msclap's projection (linear, GELU, linear, residual,
LayerNorm). The contrastive temperature and the AudioSet heads (HTSAT's ``tscam_conv`` and
``head``, CNN14's ``fc_audioset``) are not needed for embeddings and are dropped by name.

What msclap does, and nrt with it:

- audio is resampled to 44.1 kHz (``sampling_rate`` of msclap's configs), mono;
- the log-mel front end lives inside the audio tower: a centred, reflect-padded STFT of 1024
  points with a periodic Hann window, hop 320, the power spectrum, 64 mel bands from 50 Hz to
  14 kHz, ``10 log10(max(x, 1e-10))``, then a batch norm over the bands. For 2023 the mel filters
  are built for 32 kHz although the audio is at 44.1 kHz: HTSAT ignores the rates in
  ``config_2023.yml`` and builds its front end from HTSAT's own static config. The filter bank
  is a weight of the file (``logmel_extractor.melW``) and nrt uses the file's; the STFT kernels
  of the file are compared with the Hann-windowed DFT that ``torch.stft`` computes;
- HTSAT stretches the 965 frames of a 7-s window to 1024 (bicubic), folds them into a 256x256
  image and takes the mean of its last stage's tokens as the audio embedding;
- GPT-2 text is the prompt plus ``" <|endoftext|>"``, padded to 77 tokens with ``"!"`` (msclap
  makes ``"!"``, id 0, the pad token), and the embedding is the hidden state at position
  ``count(ids != pad) - 1``: the end-of-text token, or earlier where the prompt itself holds
  ``"!"``; nrt keeps that, since it is what the published numbers were computed with. BERT text
  is padded to 100 tokens and takes the ``[CLS]`` state. Prompts are not truncated (msclap does
  not), up to the text tower's positions.

Determinism. msclap crops a clip longer than its window (7 s for 2023, 5 s for 2022) at a random
place (microsoft/CLAP issues 24, 37, 42). nrt uses the windows of
:class:`~nrt.clap.WindowedClapScorer`: a longer clip is cut into the fewest whole windows that
cover it, evenly spread, their L2-normalised embeddings averaged. A window shorter than the
model's is tiled to exactly its length, as msclap does (not zero-padded), so a clip no longer
than the window gets msclap's own embedding. Resampling is soxr's, msclap's torchaudio's.

Strict loading. msclap itself loads with ``strict=False``; nrt fails on any weight of the file
that has no place in its modules and on any of its weights the file lacks, naming them. Derived
tensors (the Swin attention masks and relative position indices, transformers' position and
causal-mask buffers) are compared with what nrt computes where nrt has them; the published
files also hold buffers of older transformers releases, which transformers no longer has.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .clap import WindowedClapScorer, _check_tokenizer
from .clap_notes import MSCLAP_NAMES as NAMES
from .clap_notes import MSCLAP_WEIGHT_FILES as WEIGHT_FILES
from .clap_notes import describe_msclap, is_msclap
from .errors import InputError, ModelNotFoundError, NrtError, listed
from .hub import resolve_model_dir
from .spectrogram import mel_filters

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

HUB_REPO = "microsoft/msclap"
TOKENIZER_FILES = ["*.json", "*.txt"]  # vocab, merges and configs: no weights
# The names msclap asks the hub for, under which a machine that ran msclap has them cached.
LEGACY_TOKENIZER_IDS = {"openai-community/gpt2": "gpt2", "google-bert/bert-base-uncased": "bert-base-uncased"}
GPT_END = " <|endoftext|>"  # msclap appends it to every GPT-2 prompt
GPT_PAD = "!"  # msclap's pad token for GPT-2 (id 0 in GPT-2's vocabulary)
POWER_FLOOR = 1e-10  # torchlibrosa's ``amin``

# Weights of the file that no embedding uses, dropped by name: the temperature, the AudioSet
# classifiers and BERT's pooler (msclap takes the [CLS] state, not the pooler's output).
UNUSED_PREFIXES = (
    "logit_scale",
    "audio_encoder.base.htsat.tscam_conv.",
    "audio_encoder.base.htsat.head.",
    "audio_encoder.base.fc_audioset.",
    "caption_encoder.base.pooler.",
)
# Swin tensors derived from the geometry: nrt computes them, and they must agree with the file's.
CHECKED_BUFFERS = (".relative_position_index", ".attn_mask")
# transformers buffers that some releases saved and others do not have: compared where nrt's
# text tower has them, otherwise dropped.
TRANSFORMERS_BUFFERS = (".attn.bias", ".attn.masked_bias", ".position_ids", ".token_type_ids")


# Configuration


@dataclass(frozen=True)
class MelConfig:
    """The in-model log-mel front end: STFT, mel filters, dB."""

    sample_rate: int = field(default=32_000, metadata={"help": "the rate the mel filters are built for"})
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14_000.0

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_fft, self.hop_length, self.n_mels) <= 0:
            raise InputError(f"mel settings must be positive, got {self}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise InputError(f"mel band {self.fmin}-{self.fmax} Hz must lie within 0-{self.sample_rate / 2} Hz")


@dataclass(frozen=True)
class HtsatConfig:
    """HTSAT (a Swin transformer on the folded log-mel image); defaults are HTSAT-tiny's."""

    spec_size: int = 256
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise InputError(f"HTSAT needs one head count per stage, got depths {self.depths}, heads {self.num_heads}")
        grid = self.spec_size // self.patch_size
        if self.spec_size % self.patch_size or grid % 2 ** (len(self.depths) - 1):
            raise InputError(
                f"HTSAT spec_size {self.spec_size} must split into patches of {self.patch_size} that halve "
                f"{len(self.depths) - 1} times"
            )
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise InputError(f"HTSAT stage {i}: width {self.embed_dim * 2**i} is not divisible by {heads} heads")

    @property
    def width(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


@dataclass(frozen=True)
class Cnn14Config:
    """CNN14 (PANNs): six double-convolution blocks; defaults are the published widths."""

    channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embed_dim: int = 2048

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) != 6 or min(self.channels) <= 0 or self.embed_dim <= 0:
            raise InputError(f"CNN14 has six positive block widths and a positive embedding, got {self}")

    @property
    def width(self) -> int:
        return self.embed_dim


GPT2_BASE = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}
BERT_BASE = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


@dataclass(frozen=True)
class MsClapConfig:
    """One msclap release: the input it takes, its two towers and its tokenizer."""

    version: str
    sample_rate: int = field(metadata={"help": "the rate waveforms are resampled to"})
    window_seconds: float
    mel: MelConfig
    audio: HtsatConfig | Cnn14Config
    text: dict[str, Any] = field(metadata={"help": "GPT2Config (2023) or BertConfig (2022) keyword arguments"})
    text_len: int
    tokenizer: str = field(metadata={"help": "a hub id (from the local cache) or a directory"})
    projection_dim: int = 1024

    def __post_init__(self) -> None:
        if self.version not in WEIGHT_FILES:
            raise InputError(f"msclap version must be one of {sorted(WEIGHT_FILES)}, got {self.version!r}")
        wanted = HtsatConfig if self.version == "2023" else Cnn14Config
        if not isinstance(self.audio, wanted):
            raise InputError(f"msclap {self.version} has a {wanted.__name__[:-6]} audio tower, got {self.audio}")
        if self.sample_rate <= 0 or self.window_seconds <= 0 or self.text_len <= 0 or self.projection_dim <= 0:
            raise InputError(f"msclap sample rate, window, text length and projection must be positive: {self}")
        if isinstance(self.audio, HtsatConfig):
            frames = self.window_samples // self.mel.hop_length + 1
            ratio = self.audio.spec_size // self.mel.n_mels
            if self.audio.spec_size % self.mel.n_mels or frames > self.audio.spec_size * ratio:
                raise InputError(
                    f"HTSAT's {self.audio.spec_size}-pixel image must hold whole {self.mel.n_mels}-band rows "
                    f"and a window's {frames} frames (at most {self.audio.spec_size * ratio})"
                )

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.window_seconds)

    def to_dict(self) -> dict[str, Any]:
        """What :meth:`from_dict` reads: the JSON beside a local ``.pth``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path | None = None) -> MsClapConfig:
        """A release's published config, with what ``data`` gives in place of its fields.

        ``data["version"]`` names the release; ``mel`` and ``audio`` may give some of their fields;
        a relative ``tokenizer`` directory is taken relative to ``base``.
        """
        version = str(data.get("version", ""))
        if version not in WEIGHT_FILES:
            raise InputError(f'an msclap config needs "version" (one of {sorted(WEIGHT_FILES)}), got {version!r}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown msclap config fields {unknown}; known: {sorted(known)}")
        published = PUBLISHED[version]
        tokenizer = str(data.get("tokenizer", published.tokenizer))
        if base is not None and (base / tokenizer).is_dir():
            tokenizer = str(base / tokenizer)
        try:
            return replace(
                published,
                **{k: v for k, v in data.items() if k not in ("mel", "audio", "text", "tokenizer")},
                mel=replace(published.mel, **data.get("mel", {})),
                audio=replace(published.audio, **data.get("audio", {})),
                text={**published.text, **data.get("text", {})},
                tokenizer=tokenizer,
            )
        except TypeError as err:  # a field the section does not have, or a value of the wrong kind
            raise InputError(f"bad msclap config: {err}") from None


PUBLISHED = {
    "2023": MsClapConfig(
        version="2023",
        sample_rate=44_100,
        window_seconds=7,
        mel=MelConfig(sample_rate=32_000),  # HTSAT's static config, whatever the yaml says
        audio=HtsatConfig(),
        text=GPT2_BASE,
        text_len=77,
        tokenizer="openai-community/gpt2",
    ),
    "2022": MsClapConfig(
        version="2022",
        sample_rate=44_100,
        window_seconds=5,
        mel=MelConfig(sample_rate=44_100),
        audio=Cnn14Config(),
        text=BERT_BASE,
        text_len=100,
        tokenizer="google-bert/bert-base-uncased",
    ),
}


# The audio tower


class LogMel(nn.Module):
    """Waveforms ``[B, N]`` to dB mel power ``[B, frames, n_mels]``, frames = N // hop + 1."""

    window: torch.Tensor
    mel_filters: torch.Tensor

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        filters = mel_filters(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
        self.register_buffer("window", torch.hann_window(config.n_fft, periodic=True), persistent=False)
        self.register_buffer("mel_filters", torch.from_numpy(filters.T.copy()))  # [bins, mels]: the file's layout

    def dft_kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hann-windowed DFT as convolution kernels ``[bins, 1, n_fft]`` (real, imaginary)."""
        n = self.config.n_fft
        basis = torch.fft.rfft(torch.eye(n, dtype=torch.float64), dim=1)  # [n, bins]: exp(-2 pi i n k / N)
        kernels = (basis * self.window.double()[:, None]).T[:, None]
        return kernels.real.float().contiguous(), kernels.imag.float().contiguous()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        spec = torch.stft(
            wave.float(),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)
        return 10.0 * torch.log10((power @ self.mel_filters).clamp(min=POWER_FLOOR))


class Projection(nn.Module):
    """msclap's projection head: ``LayerNorm(h + W2 GELU(h))`` with ``h = W1 x``, no biases."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)
        return self.layer_norm(h + self.linear2(F.gelu(h)))


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, H, W, C]`` to ``[B, nW, size * size, C]``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(b, -1, size * size, c)


def _unwindow(x: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    b, c = x.shape[0], x.shape[-1]
    x = x.view(b, h // size, w // size, size, size, c).transpose(2, 3)
    return x.reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with Swin's learned relative position bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + window - 1
        dx = xs[:, None] - xs[None, :] + window - 1
        self.register_buffer("relative_position_index", dy * (2 * window - 1) + dx, persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, nW, N, C]; ``mask`` [nW, N, N] of 0 and -100 for shifted windows."""
        b, nw, n, c = x.shape
        q, k, v = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # [heads, N, N]
        bias = bias if mask is None else bias + mask[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """A pre-norm transformer block on windows, shifted by half a window in every other block."""

    attn_mask: torch.Tensor | None

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shifted: bool, mlp_ratio: float) -> None:
        super().__init__()
        if resolution <= window:  # one window covers the map: nothing to shift
            window, shifted = resolution, False
        self.resolution, self.window = resolution, window
        self.shift = window // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", self._shift_mask() if self.shift else None, persistent=False)

    def _shift_mask(self) -> torch.Tensor:
        """-100 between tokens that the cyclic shift brought together from different regions."""
        region = torch.zeros(1, self.resolution, self.resolution, 1)
        bounds = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        for i, rows in enumerate(bounds):
            for j, cols in enumerate(bounds):
                region[:, rows, cols] = 3 * i + j
        labels = _windows(region, self.window)[0, :, :, 0]  # [nW, N]
        return (labels[:, None, :] != labels[:, :, None]).float() * -100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        r = self.resolution
        h = self.norm1(x).view(b, r, r, c)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        h = _unwindow(self.attn(_windows(h, self.window), self.attn_mask), self.window, r, r)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), dims=(1, 2))
        x = x + h.reshape(b, r * r, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Each 2x2 group of tokens into one of twice the width."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, heads: int, config: HtsatConfig, last: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, config.window_size, i % 2 == 1, config.mlp_ratio) for i in range(depth)
        )
        self.downsample = None if last else PatchMerging(dim, resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(image).flatten(2).transpose(1, 2))


class Htsat(nn.Module):
    """Log-mel ``[B, frames, n_mels]`` to the mean of the last stage's tokens ``[B, width]``."""

    def __init__(self, config: HtsatConfig, n_mels: int) -> None:
        super().__init__()
        self.config = config
        self.n_mels = n_mels
        self.bn0 = nn.BatchNorm1d(n_mels)
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        grid = config.spec_size // config.patch_size
        last = len(config.depths) - 1
        self.layers = nn.ModuleList(
            SwinStage(config.embed_dim * 2**i, grid // 2**i, depth, heads, config, i == last)
            for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads))
        )
        self.norm = nn.LayerNorm(config.width)

    def image(self, mel: torch.Tensor) -> torch.Tensor:
        """The square image HTSAT sees: time stretched to ``spec_size * r`` frames, then cut into
        ``r = spec_size / n_mels`` consecutive stretches stacked along frequency."""
        size, bands = self.config.spec_size, self.n_mels
        ratio = size // bands
        x = self.bn0(mel.transpose(1, 2)).transpose(1, 2).unsqueeze(1)  # [B, 1, frames, mels]
        if x.shape[2] < size * ratio:
            x = F.interpolate(x, (size * ratio, bands), mode="bicubic", align_corners=True)
        b = x.shape[0]
        x = x.transpose(2, 3).reshape(b, 1, bands, ratio, size)
        return x.transpose(2, 3).reshape(b, 1, ratio * bands, size)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.image(mel))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """Log-mel ``[B, frames, n_mels]`` to CNN14's embedding ``[B, embed_dim]`` (max + mean over time)."""

    def __init__(self, config: Cnn14Config, n_mels: int) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm1d(n_mels)
        widths = (1, *config.channels)
        for i in range(6):  # the file's names: conv_block1 ... conv_block6
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(config.channels[-1], config.embed_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.bn0(mel.transpose(1, 2)).transpose(1, 2).unsqueeze(1)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, 2 if i < 5 else 1)
        x = x.mean(dim=3)
        return F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))


class AudioTower(nn.Module):
    def __init__(self, config: MsClapConfig) -> None:
        super().__init__()
        self.front_end = LogMel(config.mel)
        audio = config.audio
        self.encoder = (
            Htsat(audio, config.mel.n_mels) if isinstance(audio, HtsatConfig) else Cnn14(audio, config.mel.n_mels)
        )
        self.projection = Projection(audio.width, config.projection_dim)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(self.front_end(wave)))


# The text tower


class TextTower(nn.Module):
    """GPT-2 pooled at the last counted token (2023), or BERT at ``[CLS]`` (2022), then projected."""

    def __init__(self, config: MsClapConfig) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

        self.causal = config.version == "2023"
        if self.causal:
            text_config = GPT2Config(**config.text)
            self.encoder = GPT2Model(text_config)
            width, self.max_positions = text_config.n_embd, text_config.n_positions
        else:
            bert_config = BertConfig(**config.text)
            self.encoder = BertModel(bert_config, add_pooling_layer=False)
            width, self.max_positions = bert_config.hidden_size, bert_config.max_position_embeddings
        self.projection = Projection(width, config.projection_dim)

    def forward(self, tokens: dict[str, torch.Tensor], pad_id: int) -> torch.Tensor:
        hidden = self.encoder(**tokens).last_hidden_state
        if self.causal:
            ids = tokens["input_ids"]
            last = (ids != pad_id).sum(dim=-1) - 1
            pooled = hidden[torch.arange(len(ids), device=hidden.device), last]
        else:
            pooled = hidden[:, 0]
        return self.projection(pooled)


class MsClap(nn.Module):
    """Both towers of one msclap release; ``audio`` takes waveforms at ``config.sample_rate``."""

    def __init__(self, config: MsClapConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = AudioTower(config)
        self.text = TextTower(config)


# Reading a checkpoint


def _renames(version: str) -> list[tuple[str, str]]:
    """(file prefix, nrt prefix), the more specific first; a whole key counts as a prefix."""
    base = "audio_encoder.base.htsat." if version == "2023" else "audio_encoder.base."
    return [
        (base + "logmel_extractor.melW", "audio.front_end.mel_filters"),
        (base, "audio.encoder."),
        ("audio_encoder.projection.", "audio.projection."),
        ("caption_encoder.base.", "text.encoder."),
        ("caption_encoder.projection.", "text.projection."),
    ]


def _rename(key: str, renames: list[tuple[str, str]], backwards: bool = False) -> str | None:
    for file_prefix, nrt_prefix in renames:
        old, new = (nrt_prefix, file_prefix) if backwards else (file_prefix, nrt_prefix)
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an msclap ``.pth``, read with ``weights_only=True``."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that needs more than tensors, a truncated file, ...
        raise NrtError(f"cannot read msclap checkpoint {str(path)!r} ({type(err).__name__}: {err})") from None
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NrtError(f"{str(path)!r} is not an msclap checkpoint: expected {{'model': state_dict}} of tensors")
    return state


def version_of(state: dict[str, torch.Tensor]) -> str:
    """The release a state dict belongs to, told by its audio tower."""
    if any(k.startswith("audio_encoder.base.htsat.") for k in state):
        return "2023"
    if any(k.startswith("audio_encoder.base.conv_block1.") for k in state):
        return "2022"
    raise NrtError("not a Microsoft CLAP checkpoint: neither HTSAT nor CNN14 weights under audio_encoder.base")


def _check_front_end(state: dict[str, torch.Tensor], model: MsClap, version: str) -> list[str]:
    """Compare the file's STFT kernels with nrt's; return the keys they had."""
    prefix = _renames(version)[1][0] + "spectrogram_extractor.stft."
    kernels = dict(zip(("conv_real.weight", "conv_imag.weight"), model.audio.front_end.dft_kernels()))
    seen = []
    for name, ours in kernels.items():
        key = prefix + name
        if key not in state:
            continue
        seen.append(key)
        theirs = state[key].float()
        if theirs.shape != ours.shape or float((theirs - ours).abs().max()) > 1e-4:
            raise NrtError(
                f"the checkpoint's STFT ({key}, {tuple(theirs.shape)}) is not the {model.config.mel.n_fft}-point "
                "Hann-windowed DFT nrt computes: a front end nrt does not implement"
            )
    return seen


def load_state(model: MsClap, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load msclap's state dict into ``model`` strictly; the errors name the file's keys."""
    version = model.config.version
    renames = _renames(version)
    ours = model.state_dict()
    buffers = dict(model.named_buffers())
    handled = set(_check_front_end(state, model, version))
    mapped: dict[str, torch.Tensor] = {}
    unexpected, unused, mismatched = [], [], []
    for key, tensor in state.items():
        if key in handled:
            continue
        if key.startswith(UNUSED_PREFIXES):
            unused.append(key)
            continue
        name = _rename(key, renames)
        if name is not None and name in ours:
            if tensor.shape != ours[name].shape:
                mismatched.append(f"{key} {tuple(tensor.shape)} (nrt: {tuple(ours[name].shape)})")
            mapped[name] = tensor
        elif name is not None and key.endswith(CHECKED_BUFFERS + TRANSFORMERS_BUFFERS) and name in buffers:
            if not _same(tensor, buffers[name]):
                raise NrtError(f"{source}: {key} differs from what nrt derives from the config; another architecture?")
        elif name is not None and key.endswith(TRANSFORMERS_BUFFERS):
            unused.append(key)
        else:
            unexpected.append(key)
    missing = [_rename(k, renames, backwards=True) or k for k in ours if k not in mapped]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} weights: {listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {listed(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shapes differ: {listed(mismatched)}")
    if problems:
        raise NrtError(f"{source} does not fit msclap {version}: " + "; ".join(problems))
    if unused:
        logger.debug("msclap %s: not used for embeddings: %s", version, listed(unused, 20))
    model.load_state_dict(mapped, strict=True)


def _same(theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    if theirs.shape != ours.shape:
        return theirs.numel() == ours.numel() and torch.equal(theirs.reshape(ours.shape).to(ours.dtype), ours)
    return torch.allclose(theirs.to(ours.dtype).float(), ours.float())


def config_for(path: Path, state: dict[str, torch.Tensor] | None = None) -> MsClapConfig:
    """The config of a local ``.pth``: the JSON beside it, else the published one of its release."""
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read the msclap config {str(sidecar)!r}: {err}") from None
        if not isinstance(data, dict):
            raise InputError(f"the msclap config {str(sidecar)!r} must be a JSON object")
        return MsClapConfig.from_dict(data, base=sidecar.parent)
    if path.name in WEIGHT_FILES.values():
        return PUBLISHED[next(v for v, f in WEIGHT_FILES.items() if f == path.name)]
    return PUBLISHED[version_of(read_state(path) if state is None else state)]


def load_model(path: str | os.PathLike, config: MsClapConfig | None = None) -> MsClap:
    """An :class:`MsClap` in eval mode from an msclap ``.pth`` (strictly, see the module's notes)."""
    path = Path(path)
    state = read_state(path)
    config = config or config_for(path, state)
    found = version_of(state)
    if found != config.version:
        raise NrtError(f"{str(path)!r} holds msclap {found} weights, but its config says {config.version}")
    model = MsClap(config)
    load_state(model, state, source=str(path))
    return model.eval()


# Finding the files


def resolve_weights(name: str | os.PathLike) -> Path:
    """The ``.pth`` of a release name (hub cache, or the hub where reachable) or a local path."""
    if str(name) not in NAMES:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"msclap checkpoint {str(name)!r} not found")
        return path
    filename = WEIGHT_FILES[NAMES[str(name)]]
    from huggingface_hub import constants, hf_hub_download

    try:
        return Path(hf_hub_download(HUB_REPO, filename))  # the cache alone under HF_HUB_OFFLINE
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        if constants.is_offline_mode():
            reason = "HF_HUB_OFFLINE is set"
        raise ModelNotFoundError(
            f"{name}: {filename} is not in the hub cache and could not be fetched ({reason}); on a machine "
            f"with access run `huggingface-cli download {HUB_REPO} {filename}` (or get "
            f"https://huggingface.co/{HUB_REPO}/resolve/main/{filename}) and pass the file's path"
        ) from None


def tokenizer_dir(tokenizer: str | os.PathLike) -> Path:
    """A tokenizer's local directory: as given, or a hub id from the cache (fetched where reachable)."""
    path = Path(tokenizer).expanduser()
    if path.is_dir():
        return path
    legacy = LEGACY_TOKENIZER_IDS.get(str(tokenizer))
    if legacy is not None:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(legacy, allow_patterns=TOKENIZER_FILES, local_files_only=True))
        except Exception:
            pass  # not cached under msclap's name: the canonical one below
    try:
        return resolve_model_dir(str(tokenizer), allow_patterns=TOKENIZER_FILES)[0]
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"msclap's text tokenizer {str(tokenizer)!r} is neither a directory nor in the hub cache, and could not "
            f"be fetched; where the hub is reachable run `huggingface-cli download {tokenizer} --include '*.json' "
            "'*.txt'` (into the cache), or give a directory with its files as \"tokenizer\" in the JSON beside the .pth"
        ) from None


def load_tokenizer(tokenizer: str | os.PathLike, config: MsClapConfig) -> PreTrainedTokenizerBase:
    """The text tokenizer as msclap sets it up: GPT-2's padded with ``"!"``."""
    from transformers import AutoTokenizer

    directory = tokenizer_dir(tokenizer)
    try:
        loaded = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"cannot load msclap's text tokenizer from {directory} ({err})") from None
    if config.version == "2023":
        loaded.add_special_tokens({"pad_token": GPT_PAD})
    return loaded


def check_msclap(name: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> None:
    """Fail now, in one line, if the weights or the tokenizer cannot be had; no model is built."""
    path = resolve_weights(name)
    config = PUBLISHED[NAMES[str(name)]] if str(name) in NAMES else config_for(path)
    tokenizer_dir(tokenizer or config.tokenizer)


# The scorer


class MsClapScorer(WindowedClapScorer):
    """Microsoft CLAP behind nrt's scorer interface (the window scheme of :mod:`nrt.clap`)."""

    def __init__(
        self,
        model: MsClap,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 8,
        band_limit_rate: int | None = None,
    ) -> None:
        super().__init__(batch_size, band_limit_rate)
        config = model.config
        _check_tokenizer(tokenizer, int(config.text["vocab_size"]))
        if tokenizer.pad_token_id is None:
            raise NrtError("msclap's tokenizer has no pad token; load it with load_tokenizer")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.sample_rate = config.sample_rate
        self.window_samples = config.window_samples

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "msclap-2023",
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        band_limit_rate: int | None = None,
        tokenizer: str | os.PathLike | None = None,
    ) -> MsClapScorer:
        """Load ``msclap-2023``, ``msclap-2022`` or a local ``.pth``; ``tokenizer`` overrides the config's."""
        path = resolve_weights(name_or_path)
        config = PUBLISHED[NAMES[str(name_or_path)]] if str(name_or_path) in NAMES else None
        logger.info("loading Microsoft CLAP from %s (%s)", path, device)
        model = load_model(path, config)
        text_tokenizer = load_tokenizer(tokenizer or model.config.tokenizer, model.config)
        return cls(model.to(device), text_tokenizer, batch_size, band_limit_rate)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _embed_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        n = self.window_samples
        tiled = np.stack([np.tile(w, math.ceil(n / len(w)))[:n] for w in windows])  # msclap's repeat-to-fill
        with torch.inference_mode():
            out = self.model.audio(torch.from_numpy(tiled).to(self.device))
        return F.normalize(out.float().cpu(), dim=-1)

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        if self.model.text.causal:
            prompts = [p + GPT_END for p in prompts]
        longest = max(len(ids) for ids in self.tokenizer(prompts)["input_ids"])
        if longest > self.model.text.max_positions:
            raise InputError(
                f"a prompt is {longest} tokens long; msclap's text tower takes at most {self.model.text.max_positions}"
            )
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=max(self.config.text_len, longest),
            truncation=False,
            return_tensors="pt",
        )
        keys = (
            ("input_ids", "attention_mask")
            if self.model.text.causal
            else ("input_ids", "token_type_ids", "attention_mask")
        )
        with torch.inference_mode():
            out = self.model.text({k: tokens[k].to(self.device) for k in keys}, self.tokenizer.pad_token_id)
        return F.normalize(out.float().cpu(), dim=-1)


__all__ = [
    "HUB_REPO",
    "NAMES",
    "PUBLISHED",
    "Cnn14Config",
    "HtsatConfig",
    "MelConfig",
    "MsClap",
    "MsClapConfig",
    "MsClapScorer",
    "check_msclap",
    "describe_msclap",
    "is_msclap",
    "load_model",
    "load_state",
    "load_tokenizer",
    "read_state",
    "resolve_weights",
    "version_of",
]
