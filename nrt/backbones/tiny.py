"""The tiny model: TANGO's architecture at toy size with seeded random weights.

It is written to disk in TANGO's own layout and loaded back through the TANGO loader, so
that tests and the no-download default run the real loading code. Its edits are noise:
it exercises code paths, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, SpeechT5HifiGan, T5Config, T5EncoderModel

from ..hub import ensure_cached
from . import convert
from .tango import sd21_scheduler, write_tango

FORMAT = 1  # bump when the files written here change

STFT_CONFIG = {
    "filter_length": 1024,
    "hop_length": 160,
    "win_length": 1024,
    "n_mel_channels": 64,
    "sampling_rate": 16000,
    "mel_fmin": 0,
    "mel_fmax": 8000,
}

VOCODER_CONFIG = {
    "resblock": "1",
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 7],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_mels": 64,
    "sampling_rate": 16000,
}

VAE_CONFIG = {
    "image_key": "fbank",
    "subband": 1,
    "embed_dim": 8,
    "time_shuffle": 1,
    "ddconfig": {
        "double_z": True,
        "z_channels": 8,
        "resolution": 256,
        "downsample_time": False,
        "in_channels": 1,
        "out_ch": 1,
        "ch": 32,
        "ch_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
    "scale_factor": 1.0,
    "vocoder": VOCODER_CONFIG,
}

TEXT_DIM = 32

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": [2, 2, 4, 4],
    "block_out_channels": [32, 32, 64, 64],
    "center_input_sample": False,
    "cross_attention_dim": TEXT_DIM,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "sample_size": [32, 2],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
    "upcast_attention": True,
}

# words for the word-level tokenizer: enough to tokenise the paper's prompts and the examples
VOCAB = [
    "a",
    "an",
    "the",
    "and",
    "or",
    "of",
    "in",
    "on",
    "with",
    "while",
    "then",
    "after",
    "before",
    "followed",
    "by",
    "during",
    "from",
    "to",
    "at",
    "as",
    "is",
    "are",
    "being",
    "its",
    "it",
    "this",
    "that",
    "sound",
    "sounds",
    "audio",
    "recording",
    "background",
    "foreground",
    "loud",
    "loudly",
    "quiet",
    "softly",
    "distant",
    "close",
    "several",
    "many",
    "one",
    "two",
    "three",
    "repeatedly",
    "some",
    "part",
    "middle",
    "beginning",
    "end",
    "dog",
    "dogs",
    "barking",
    "bark",
    "barks",
    "cat",
    "meowing",
    "bird",
    "birds",
    "chirping",
    "singing",
    "chirp",
    "duck",
    "ducks",
    "quacking",
    "engine",
    "revving",
    "car",
    "horn",
    "honks",
    "honking",
    "siren",
    "sirens",
    "wailing",
    "gunshot",
    "gunshots",
    "shooting",
    "machine",
    "gun",
    "bell",
    "bells",
    "church",
    "ringing",
    "rings",
    "baby",
    "crying",
    "cries",
    "child",
    "children",
    "laughing",
    "laughter",
    "people",
    "group",
    "man",
    "woman",
    "speaking",
    "speech",
    "talking",
    "giving",
    "voice",
    "crowd",
    "cheering",
    "applause",
    "music",
    "musical",
    "instrument",
    "piano",
    "guitar",
    "drum",
    "drums",
    "hi-hat",
    "beat",
    "rain",
    "raining",
    "falling",
    "wind",
    "blowing",
    "microphone",
    "water",
    "flowing",
    "splashing",
    "toilet",
    "flushing",
    "typing",
    "keyboard",
    "rapid",
    "knocking",
    "knock",
    "knocks",
    "door",
    "footsteps",
    "walking",
    "running",
    "clock",
    "ticking",
    "phone",
    "ringtone",
    "beep",
    "beeps",
    "beeping",
    "tone",
    "hum",
    "humming",
    "buzz",
    "noise",
    "burst",
    "click",
    "clicks",
    "whistle",
    "whistling",
    "thunder",
    "storm",
    "fire",
    "crackling",
    "train",
    "passing",
    "vehicle",
    "motorboat",
    "boat",
    "speeding",
    "spark",
    "sparks",
    "start",
    "attempt",
    "animal",
    "whimpering",
    "horse",
    "hooves",
    "clip-clop",
    "africa",
    "african",
    "rustling",
    "heavy",
    "breathing",
    "sudden",
    "high",
    "low",
    "pitch",
    "pitched",
    "short",
    "long",
    "fast",
    "slow",
]


def word_tokenizer(words: Iterable[str] = VOCAB) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with T5's special tokens (pad 0, end of sequence 1, unknown 2)."""
    special = ["<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(special + sorted(set(words) - set(special)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    # T5 appends an end-of-sequence token to every prompt
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=128
    )


def tiny_t5_config(vocab_size: int) -> T5Config:
    """A two-layer FLAN-T5-style encoder (gated GELU) with T5's special ids (pad 0, end of sequence 1)."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
    )


def write_tiny(directory: str | Path, seed: int = 0, prediction_type: str = "v_prediction") -> Path:
    """Write the tiny model to ``directory`` in TANGO's layout and return the directory."""
    return write_random_tango(
        directory,
        unet_config=UNET_CONFIG,
        text_config=tiny_t5_config,
        vae_config=VAE_CONFIG,
        seed=seed,
        prediction_type=prediction_type,
        extra={"nrt_tiny_format": FORMAT},
    )


def write_random_tango(
    directory: str | Path,
    *,
    unet_config: dict[str, Any],
    text_config: Callable[[int], T5Config],
    vae_config: dict[str, Any],
    seed: int = 0,
    prediction_type: str = "v_prediction",
    extra: dict[str, Any] | None = None,
) -> Path:
    """A model in TANGO's layout with seeded random weights, at the sizes the configs give.

    The tiny model is one; TANGO's own sizes make a stand-in for timing a real checkpoint
    (``benchmarks/gpu_edit.py``). ``text_config`` gives the T5 encoder's config for the
    word-level tokenizer's vocabulary size; ``vae_config`` is ``vae_config.json`` as written,
    whose optional ``vocoder`` entry sizes the HiFi-GAN (TANGO's own when absent, as the loader reads it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # 1. Text encoder: a T5 encoder and a word-level tokenizer, saved beside the model
    tokenizer = word_tokenizer()
    text_encoder = T5EncoderModel(text_config(len(tokenizer)))

    # 2. UNet with TANGO's block layout
    unet = UNet2DConditionModel.from_config(unet_config)
    _randomize_output(unet)

    # 3. VAE and vocoder, saved in the original AudioLDM layout that TANGO's files use
    vae_only = {k: v for k, v in vae_config.items() if k != "vocoder"}
    vae = AutoencoderKL(**convert.vae_config_to_diffusers(vae_only))
    vocoder = SpeechT5HifiGan(convert.hifigan_config_to_speecht5(vae_config.get("vocoder", convert.HIFIGAN_16K_64)))
    for p in vocoder.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vae_state = convert.vae_state_dict_from_diffusers(vae.state_dict())
    vae_state.update(
        {f"vocoder.{k}": v for k, v in convert.hifigan_state_dict_from_speecht5(vocoder.state_dict()).items()}
    )
    return write_tango(
        directory,
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        vae_state=vae_state,
        vae_config=vae_config,
        stft_config=STFT_CONFIG,
        scheduler_config=sd21_scheduler(prediction_type),
        extra=extra,
    )


def _randomize_output(unet: UNet2DConditionModel) -> None:
    # diffusers zero-initialises conv_out; a zero UNet would make every loss constant
    torch.nn.init.normal_(unet.conv_out.weight, std=0.02)


def ensure_tiny(root: Path | None = None) -> Path:
    """The tiny model's directory in the cache, written once (atomically) on first use."""
    return ensure_cached(f"tiny-v{FORMAT}", write_tiny, "main_config.json", root)
