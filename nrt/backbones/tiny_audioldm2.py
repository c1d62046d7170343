"""The tiny AudioLDM 2: its architecture at toy size with seeded random weights.

Written to disk in the diffusers layout of ``cvssp/audioldm2`` (every component, the
tokenizers built here) and loaded back through :func:`~nrt.backbones.audioldm2.load_audioldm2`,
so that tests run the real loading code. The language model is saved as a ``GPT2Model``, as
the published snapshots hold it. Its edits are noise: it exercises code paths, nothing more.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import diffusers
import torch
from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    GPT2Config,
    GPT2Model,
    T5EncoderModel,
    T5Tokenizer,
)

from ..hub import ensure_cached
from .audioldm import tiny_clap_text_config, tiny_roberta_tokenizer, write_tiny_waveform_parts
from .audioldm2 import GENERATED_TOKENS, PIPELINE
from .tiny import TEXT_DIM, VOCAB, tiny_t5_config

FORMAT = 1  # bump when the files written here change
CLAP_DIM = 16  # CLAP's projection (512 in AudioLDM 2)
LM_DIM = 24  # GPT-2's width (768); unlike T5's (32, as the tiny TANGO's) so a crossed wire shows
T5_MAX_TOKENS = 128  # what AudioLDM 2 sets on FLAN-T5's tokenizer

# cvssp/audioldm2 unet/config.json with narrower blocks, attention at the two coarsest levels only
# (the real one attends at three of four), each attention block with a self-attention layer
# (None), one on GPT-2's sequence and one on T5's
TINY_UNET = {
    "sample_size": 32,
    "in_channels": 8,
    "out_channels": 8,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 32, 64, 64],
    "cross_attention_dim": [[None, LM_DIM, TEXT_DIM]] * 4,
    "layers_per_block": 1,
    "attention_head_dim": 4,
}
# a HTSAT audio tower at toy size: AudioLDM 2's text_encoder is a whole ClapModel
TINY_CLAP_AUDIO = {
    "spec_size": 64,
    "window_size": 4,
    "num_mel_bins": 64,
    "intermediate_size": 37,
    "depths": [2, 2],
    "num_attention_heads": [2, 2],
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "patch_size": 2,
    "patch_stride": 2,
    "patch_embed_input_channels": 4,
    "patch_embeds_hidden_size": 16,
}


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A Unigram tokenizer over the tiny models' words, with T5's special tokens (pad 0, end 1, unknown 2)."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    words = [(f"▁{w}", -1.0) for w in sorted(set(VOCAB))]
    # single characters, so that an unknown word is spelled out rather than lost
    chars = [(c, -5.0) for c in string.ascii_lowercase + string.digits + "-.,"]
    return T5Tokenizer(vocab=specials + words + chars, extra_ids=0, model_max_length=T5_MAX_TOKENS)


def write_tiny_audioldm2(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny AudioLDM 2 with random weights to ``directory`` in the diffusers layout."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # 1. CLAP (text and audio towers) and FLAN-T5's encoder, with tokenizers built here
    tokenizer = tiny_roberta_tokenizer(seed)
    clap_config = ClapConfig(
        text_config=tiny_clap_text_config(len(tokenizer), CLAP_DIM).to_dict(),
        audio_config=ClapAudioConfig(projection_dim=CLAP_DIM, **TINY_CLAP_AUDIO).to_dict(),
        projection_dim=CLAP_DIM,
    )
    ClapModel(clap_config).save_pretrained(directory / "text_encoder")
    tokenizer.save_pretrained(directory / "tokenizer")
    ClapFeatureExtractor().save_pretrained(directory / "feature_extractor")
    tokenizer_2 = tiny_t5_tokenizer()
    T5EncoderModel(tiny_t5_config(len(tokenizer_2))).save_pretrained(directory / "text_encoder_2")
    tokenizer_2.save_pretrained(directory / "tokenizer_2")

    # 2. The projection into GPT-2's width, and GPT-2 (saved as the published GPT2Model)
    projection = AudioLDM2ProjectionModel(
        text_encoder_dim=CLAP_DIM, text_encoder_1_dim=TEXT_DIM, langauge_model_dim=LM_DIM
    )
    for token in (projection.sos_embed, projection.eos_embed, projection.sos_embed_1, projection.eos_embed_1):
        torch.nn.init.normal_(token)  # learned in the real model; ones here would make the four alike
    projection.save_pretrained(directory / "projection_model")
    lm_config = GPT2Config(
        n_embd=LM_DIM, n_head=2, n_layer=2, vocab_size=64, n_positions=256, bos_token_id=0, eos_token_id=0
    )
    language_model = GPT2Model(lm_config)
    language_model.config.max_new_tokens = GENERATED_TOKENS
    language_model.save_pretrained(directory / "language_model")

    # 3. UNet, and the waveform parts with the scheduler (AudioLDM's, as AudioLDM 2's)
    unet = AudioLDM2UNet2DConditionModel(**TINY_UNET)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.02)  # diffusers zero-initialises it: constant losses
    unet.save_pretrained(directory / "unet")
    write_tiny_waveform_parts(directory)

    # 4. The pipeline index, as cvssp/audioldm2's
    index = {
        "_class_name": PIPELINE,
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "ClapFeatureExtractor"],
        "language_model": ["transformers", "GPT2Model"],
        "projection_model": ["audioldm2", "AudioLDM2ProjectionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "ClapModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "RobertaTokenizerFast"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "unet": ["audioldm2", "AudioLDM2UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "vocoder": ["transformers", "SpeechT5HifiGan"],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2))
    return directory


def ensure_tiny_audioldm2(root: Path | None = None) -> Path:
    """The tiny AudioLDM 2's directory in the cache, written on first use."""
    return ensure_cached(f"tiny-audioldm2-v{FORMAT}", write_tiny_audioldm2, "model_index.json", root)
