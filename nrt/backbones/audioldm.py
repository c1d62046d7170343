"""AudioLDM (cvssp/audioldm-s-full-v2, cvssp/audioldm-m-full, ...) from the diffusers layout.

A snapshot holds ``unet/``, ``vae/``, ``text_encoder/`` (``ClapTextModelWithProjection``),
``tokenizer/`` (RoBERTa), ``vocoder/`` (``SpeechT5HifiGan``) and ``scheduler/``. diffusers
deprecated ``AudioLDMPipeline``, so the components are loaded one by one. The waveform path
(16 kHz, 64-bin log-mel, KL-VAE, HiFi-GAN) is TANGO's, shared through
:class:`~nrt.backbones.latent.MelLatentBackbone`.

Text enters the UNet through its class embedding, not cross-attention: the CLAP text
vector ``[B, 512]`` is L2-normalised and projected onto the timestep embedding
(``class_embed_type="simple_projection"``, concatenated), with ``encoder_hidden_states=None``.

Normalisation, a decision: :meth:`AudioLDMBackbone.denoise` L2-normalises (in float32) whatever
embedding it is given, so the UNet only ever sees unit vectors, as in training. Step 1
therefore optimises a direction: the length of ``e_opt`` is free and has no effect. Step 3's
``e(η) = η·e_tgt + (1-η)·e_opt`` is interpolated as given and re-normalised implicitly when
it reaches the UNet, so η moves along the chord between the two directions. ``encode_text``
returns unit vectors too, exactly what the AudioLDM pipeline hands its UNet, so a bundle's
``e_tgt`` can be given to that pipeline as ``prompt_embeds`` unchanged.

A snapshot carries no front-end config. nrt uses AudioLDM's STFT (n_fft 1024, hop 160,
win 1024, 0-8 kHz) with the rate and mel count of the vocoder's config (16 kHz, 64 mels for
AudioLDM-s/m); a ``stft_config.json`` in TANGO's keys at the top of the model directory
overrides them.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import diffusers
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BatchEncoding,
    ClapTextConfig,
    ClapTextModelWithProjection,
    PreTrainedTokenizerBase,
    RobertaTokenizerFast,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

from ..errors import ModelNotFoundError
from ..hub import ensure_cached, fingerprint, read_json, resolve_model_dir
from .base import BackboneInfo, Condition, place
from .latent import MelLatentBackbone
from .mel import MelFrontEnd, StftConfig
from .tango import MIN_VOCAB

logger = logging.getLogger(__name__)

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "vocoder", "scheduler")
STFT_FILE = "stft_config.json"
# AudioLDM's STFT (audioldm.utils.default_audioldm_config, "preprocessing"); the rate and the
# number of mels come from the vocoder's config
AUDIOLDM_STFT = {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "mel_fmin": 0, "mel_fmax": 8000}


class AudioLDMBackbone(MelLatentBackbone):
    """A CLAP text vector enters the UNet through its class embedding; no token mask."""

    def __init__(
        self, *, text_encoder: ClapTextModelWithProjection, tokenizer: PreTrainedTokenizerBase, **parts: Any
    ) -> None:
        super().__init__(**parts)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._null: Condition | None = None

    def encode_text(self, prompts: Sequence[str]) -> Condition:
        """Unit CLAP text vectors ``[B, D]``, tokenised as AudioLDM's pipeline does (padded to the maximum)."""
        batch = tokenize(self.tokenizer, prompts, "max_length")
        device = self.text_encoder.device
        with torch.no_grad():
            embeds = self.text_encoder(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).text_embeds
        unit = F.normalize(embeds.float(), dim=-1)
        return Condition(unit.to(self.device, self.dtype), None)

    def null_condition(self, like: Condition) -> Condition:
        if self._null is None:
            self._null = self.encode_text([""])
        return self._null.to(like.embeds.device, like.embeds.dtype).repeat(like.batch_size)

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Condition,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        unet = unet or self.unet
        # AudioLDM was trained on unit CLAP vectors: any e (e_opt, e(η)) counts by its direction
        class_labels = F.normalize(condition.embeds.float(), dim=-1).to(latents.dtype)
        return unet(latents, timesteps, encoder_hidden_states=None, class_labels=class_labels).sample

    def _frozen_modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.vocoder, self.text_encoder]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AudioLDMBackbone:
        super().to(device, dtype)
        place(self.text_encoder, device, dtype)
        self._null = None
        return self


def tokenize(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], padding: str | bool, max_length: int | None = None
) -> BatchEncoding:
    """Prompts to token ids as the AudioLDM pipelines do, warning about any prompt cut short.

    ``padding`` is ``"max_length"`` (to ``max_length``, by default the tokenizer's own) or ``True``
    (to the longest prompt); prompts are truncated to the tokenizer's maximum.
    """
    limit = tokenizer.model_max_length
    batch = tokenizer(
        list(prompts), padding=padding, max_length=max_length or limit, truncation=True, return_tensors="pt"
    )
    cut = [p for p, ids in zip(prompts, tokenizer(list(prompts))["input_ids"]) if len(ids) > limit]
    if cut:
        logger.warning("prompts truncated to the %d tokens of %s: %s", limit, type(tokenizer).__name__, cut)
    return batch


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A tokenizer from its directory, refused when it is an offline stub of a handful of tokens."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if len(tokenizer) < MIN_VOCAB:
        raise ModelNotFoundError(f"the tokenizer in {path} has only {len(tokenizer)} tokens: the files are incomplete")
    return tokenizer


def load_waveform_parts(directory: Path) -> tuple[AutoencoderKL, SpeechT5HifiGan, MelFrontEnd]:
    """The VAE and vocoder of a diffusers-layout model (float32), and the mel front end they expect."""
    vae = AutoencoderKL.from_pretrained(directory, subfolder="vae", torch_dtype=torch.float32)
    vocoder = SpeechT5HifiGan.from_pretrained(directory / "vocoder", dtype=torch.float32)
    return vae, vocoder, MelFrontEnd(front_end(directory, vocoder, vae))


def front_end(directory: Path, vocoder: SpeechT5HifiGan, vae: AutoencoderKL) -> StftConfig:
    """AudioLDM's STFT at the vocoder's rate and mel count, checked against the vocoder and VAE."""
    voc = vocoder.config
    values = {**AUDIOLDM_STFT, "sampling_rate": voc.sampling_rate, "n_mel_channels": voc.model_in_dim}
    if (directory / STFT_FILE).exists():
        values.update(read_json(directory / STFT_FILE))
    stft = StftConfig.from_dict(values)
    hop = math.prod(voc.upsample_rates)
    if (stft.sampling_rate, stft.n_mel_channels, stft.hop_length) != (voc.sampling_rate, voc.model_in_dim, hop):
        raise ModelNotFoundError(
            f"the front end ({stft.sampling_rate} Hz, {stft.n_mel_channels} mels, hop {stft.hop_length}) does not "
            f"match the vocoder in {directory / 'vocoder'} ({voc.sampling_rate} Hz, {voc.model_in_dim} mels, "
            f"upsampling {hop})"
        )
    vae_down = 2 ** (len(vae.config.block_out_channels) - 1)
    if stft.n_mel_channels % vae_down:
        raise ModelNotFoundError(f"{stft.n_mel_channels} mel bins do not divide by the VAE's downsampling ({vae_down})")
    return stft


def open_model_dir(
    name_or_path: str | Path, subfolders: Sequence[str], revision: str | None, what: str
) -> tuple[Path, str | None]:
    """A diffusers-layout model's directory (local, or a hub snapshot of ``subfolders`` only), checked complete."""
    directory, snapshot = resolve_model_dir(
        name_or_path, allow_patterns=["model_index.json", STFT_FILE, *(f"{s}/*" for s in subfolders)], revision=revision
    )
    missing = [s for s in subfolders if not (directory / s).is_dir()]
    if missing:
        raise ModelNotFoundError(
            f"{directory} is not an {what} model directory (diffusers layout): missing "
            + ", ".join(f"{s}/" for s in missing)
        )
    return directory, snapshot


def identify(
    directory: Path, snapshot: str | None, name_or_path: str | Path, kind: str, subfolders: Sequence[str]
) -> tuple[BackboneInfo, dict[str, Any]]:
    """The loaded model's identity (hub commit, or a fingerprint of the local files) and its scheduler config."""
    scheduler_config = read_json(directory / "scheduler" / "scheduler_config.json")
    revision = snapshot or fingerprint(directory, revision_files(directory, subfolders))
    logger.info("loaded %s model %s (%s)", kind, name_or_path, revision)
    return BackboneInfo(kind=kind, model_id=str(name_or_path), revision=revision), scheduler_config


def revision_files(directory: Path, subfolders: Sequence[str] = SUBFOLDERS) -> list[str]:
    """The files a local model's fingerprint covers: the index, the front end, every subfolder's files."""
    names = ["model_index.json", STFT_FILE]
    for sub in subfolders:
        if (directory / sub).is_dir():
            names += sorted(str(p.relative_to(directory)) for p in (directory / sub).iterdir() if p.is_file())
    return names


def load_audioldm(name_or_path: str | Path, revision: str | None = None) -> AudioLDMBackbone:
    """Load an AudioLDM model in the diffusers layout from a directory or a hub id."""
    directory, snapshot = open_model_dir(name_or_path, SUBFOLDERS, revision, "AudioLDM")

    # 1. UNet, VAE and vocoder, in float32 whatever the files hold; to() casts the UNet
    unet = UNet2DConditionModel.from_pretrained(directory, subfolder="unet", torch_dtype=torch.float32)
    if unet.config.class_embed_type != "simple_projection":
        raise ModelNotFoundError(
            f"{directory / 'unet'} takes no CLAP class embedding (class_embed_type "
            f"{unet.config.class_embed_type!r}); this loader takes AudioLDM (1) models such as cvssp/audioldm-s-full-v2"
        )
    vae, vocoder, mel = load_waveform_parts(directory)

    # 2. CLAP's text branch and its RoBERTa tokenizer
    tokenizer = load_tokenizer(directory / "tokenizer")
    text_encoder = ClapTextModelWithProjection.from_pretrained(directory / "text_encoder", dtype=torch.float32)
    if text_encoder.config.projection_dim != unet.config.projection_class_embeddings_input_dim:
        raise ModelNotFoundError(
            f"the text encoder projects to {text_encoder.config.projection_dim} dimensions but the UNet takes "
            f"{unet.config.projection_class_embeddings_input_dim}"
        )

    # 3. The scheduler as published
    info, scheduler_config = identify(directory, snapshot, name_or_path, "audioldm", SUBFOLDERS)
    return AudioLDMBackbone(
        info=info,
        mel=mel,
        vae=vae,
        vocoder=vocoder,
        unet=unet,
        scheduler_config=scheduler_config,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


# -- the tiny AudioLDM: AudioLDM's architecture at toy size, random weights -----------------

TINY_FORMAT = 1  # bump when the files written here change
TINY_TEXT_DIM = 32  # CLAP's projection (512 in AudioLDM)
TINY_MAX_TOKENS = 32  # RoBERTa's 512 in AudioLDM; every prompt is padded to it

# cvssp/audioldm-s-full-v2 unet/config.json with fewer, narrower blocks: the same block types,
# class embedding and per-block cross_attention_dim (the "cross" attention attends to the
# latent itself, as encoder_hidden_states is None)
TINY_UNET = {
    "sample_size": 32,
    "in_channels": 8,
    "out_channels": 8,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 32, 64, 64],
    "cross_attention_dim": [32, 32, 64, 64],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "class_embed_type": "simple_projection",
    "projection_class_embeddings_input_dim": TINY_TEXT_DIM,
    "class_embeddings_concat": True,
}
# AudioLDM's VAE (4x down in time and frequency, 8 latent channels) at toy width
TINY_VAE = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 32, 64],
    "layers_per_block": 1,
    "latent_channels": 8,
    "sample_size": 256,
    "scaling_factor": 1.0,
}
# AudioLDM's 16 kHz, 64-mel HiFi-GAN (upsampling 5·4·2·2·2 = 160) at toy width
TINY_VOCODER = {
    "model_in_dim": 64,
    "sampling_rate": 16000,
    "upsample_initial_channel": 32,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "normalize_before": False,
}
# cvssp/audioldm-s-full-v2 scheduler/scheduler_config.json: AudioLDM's linear_start/linear_end
# and 1000 timesteps as diffusers' scaled_linear betas, epsilon prediction, no clipping
AUDIOLDM_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0015,
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-4, as in RoBERTa


def tiny_roberta_tokenizer(seed: int = 0, max_tokens: int = TINY_MAX_TOKENS) -> RobertaTokenizerFast:
    """A byte-level BPE with RoBERTa's special tokens, trained on the tiny models' word list."""
    from .tiny import VOCAB

    rng = random.Random(seed)
    words = sorted(set(VOCAB))
    # sentences, so that merges learn the space-prefixed word forms RoBERTa uses mid-prompt
    corpus = [" ".join(rng.sample(words, 8)) for _ in range(400)] + words
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=ROBERTA_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(tokenizer_object=tok, model_max_length=max_tokens)


def tiny_clap_text_config(vocab_size: int, projection_dim: int) -> ClapTextConfig:
    """CLAP's RoBERTa text branch at toy size, for the tiny RoBERTa tokenizer's ids."""
    return ClapTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=TINY_MAX_TOKENS + 2,
        projection_dim=projection_dim,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def write_tiny_audioldm(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny AudioLDM with random weights to ``directory`` in the diffusers layout."""
    return write_random_audioldm(directory, seed=seed)


def write_random_audioldm(
    directory: str | Path,
    *,
    seed: int = 0,
    unet_config: dict[str, Any] = TINY_UNET,
    text_config: Callable[[int], ClapTextConfig] = partial(tiny_clap_text_config, projection_dim=TINY_TEXT_DIM),
    vae_config: dict[str, Any] = TINY_VAE,
    vocoder_config: dict[str, Any] = TINY_VOCODER,
    max_tokens: int = TINY_MAX_TOKENS,
) -> Path:
    """An AudioLDM in the diffusers layout with seeded random weights, at the sizes given (the tiny
    one by default; AudioLDM's own make a stand-in for timing a real checkpoint, ``benchmarks/gpu_edit.py``).

    ``text_config`` gives CLAP's text branch's config for the locally built tokenizer's
    vocabulary size; ``max_tokens`` is the length every prompt is padded to.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # 1. CLAP's text branch, with a tokenizer built here
    tokenizer = tiny_roberta_tokenizer(seed, max_tokens)
    ClapTextModelWithProjection(text_config(len(tokenizer))).save_pretrained(directory / "text_encoder")
    tokenizer.save_pretrained(directory / "tokenizer")

    # 2. UNet, and the waveform parts with the scheduler
    unet = UNet2DConditionModel(**unet_config)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.02)  # diffusers zero-initialises it: constant losses
    unet.save_pretrained(directory / "unet")
    write_tiny_waveform_parts(directory, vae_config, vocoder_config)

    # 3. The pipeline index
    index = {
        "_class_name": "AudioLDMPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "ClapTextModelWithProjection"],
        "tokenizer": ["transformers", "RobertaTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "vocoder": ["transformers", "SpeechT5HifiGan"],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2))
    return directory


def write_tiny_waveform_parts(
    directory: Path, vae_config: dict[str, Any] = TINY_VAE, vocoder_config: dict[str, Any] = TINY_VOCODER
) -> None:
    """The tiny VAE, vocoder and scheduler into ``vae/``, ``vocoder/`` and ``scheduler/`` (AudioLDM 1 and 2);
    other sizes through ``vae_config`` and ``vocoder_config``."""
    AutoencoderKL(**vae_config).save_pretrained(directory / "vae")
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**vocoder_config))
    for p in vocoder.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vocoder.save_pretrained(directory / "vocoder")
    DDIMScheduler(**AUDIOLDM_SCHEDULER).save_pretrained(directory / "scheduler")


def ensure_tiny_audioldm(root: Path | None = None) -> Path:
    """The tiny AudioLDM's directory in the cache, written on first use."""
    return ensure_cached(f"tiny-audioldm-v{TINY_FORMAT}", write_tiny_audioldm, "model_index.json", root)
