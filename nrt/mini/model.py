"""nrt-mini's text-to-audio model: TANGO's layout at a size a CPU can fit and sample.

- Front end: 16 kHz, 32 Slaney mels over 0-8 kHz, 1024-point STFT, hop 320 (50 frames/s).
- Latent: the standardised log-mel folded 4x4 into 16 channels (:class:`PatchAutoencoder`),
  so a 2.56 s clip is a 16 x 32 x 8 latent and a 5 s clip 16 x 64 x 8.
- UNet: diffusers' ``UNet2DConditionModel``, TANGO's block types at three levels
  (64/128/192 channels), self- and cross-attention at the two finer levels; 8.8 M parameters.
- Text: a two-layer T5 encoder of width 128 over a word-level vocabulary (the scene captions'
  words and the tiny model's), trained jointly with the UNet.
- Scheduler: Stable Diffusion 2.1's, as TANGO's; v-prediction.
- Vocoder: Griffin-Lim (:class:`GriffinLimVocoder`), no weights.

The trained weights ship inside the package (``nrt/mini/weights/t2a``) and load through
:func:`nrt.backbones.tango.load_tango` like any TANGO checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from ..backbones.patch import GRIFFIN_LIM_KIND, PATCH_KIND, PatchAutoencoder
from ..backbones.tango import sd21_scheduler, write_tango
from ..backbones.tiny import VOCAB, word_tokenizer
from ..errors import ModelNotFoundError
from .scenes import caption_vocabulary

FORMAT = 1
WEIGHTS = Path(__file__).parent / "weights"
T2A_DIR = WEIGHTS / "t2a"
CLAP_DIR = WEIGHTS / "clap"

STFT_CONFIG = {
    "filter_length": 1024,
    "hop_length": 320,
    "win_length": 1024,
    "n_mel_channels": 32,
    "sampling_rate": 16000,
    "mel_fmin": 0,
    "mel_fmax": 8000,
}
PATCH = 4
VAE_CONFIG = {
    "kind": PATCH_KIND,
    "n_mels": STFT_CONFIG["n_mel_channels"],
    "patch": PATCH,
    "scaling_factor": 1.0,
    "vocoder": {"kind": GRIFFIN_LIM_KIND, "n_iter": 32, "momentum": 0.99, "nnls_iter": 20},
}
TEXT_DIM = 128
UNET_CONFIG = {
    "sample_size": [32, 8],
    "in_channels": PATCH * PATCH,
    "out_channels": PATCH * PATCH,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 128, 192],
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_DIM,
    "attention_head_dim": [4, 8, 8],
    "norm_num_groups": 32,
    "use_linear_projection": True,
}
PREDICTION_TYPE = "v_prediction"


def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer([*caption_vocabulary(), *VOCAB])


def text_encoder_config(vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=32,
        d_ff=256,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
    )


class TextToAudio(torch.nn.Module):
    """The trainable parts, text encoder and UNet, as one module (one optimiser, one EMA)."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: T5EncoderModel) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    @classmethod
    def create(cls, vocab_size: int, seed: int = 0) -> TextToAudio:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(UNet2DConditionModel(**UNET_CONFIG), T5EncoderModel(text_encoder_config(vocab_size)))

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.unet(
            noisy, timesteps, encoder_hidden_states=hidden, encoder_attention_mask=attention_mask.bool()
        ).sample


def write_model(
    directory: str | Path,
    model: TextToAudio,
    codec: PatchAutoencoder,
    tok: PreTrainedTokenizerFast,
    extra: dict | None = None,
) -> Path:
    """Write a trained (or untrained) model in TANGO's layout, UNet and text encoder in float16."""
    return write_tango(
        Path(directory),
        unet=model.unet,
        text_encoder=model.text_encoder,
        tokenizer=tok,
        vae_state={k: v.float().cpu() for k, v in codec.state_dict().items()},
        vae_config=VAE_CONFIG,
        stft_config=STFT_CONFIG,
        scheduler_config=sd21_scheduler(PREDICTION_TYPE),
        extra={"nrt_mini_format": FORMAT, **(extra or {})},
        dtype=torch.float16,
        stft_bases=False,
    )


def mini_dir() -> Path:
    """The shipped model's directory; a clear error where a source checkout lacks the weights."""
    if not (T2A_DIR / "main_config.json").exists():
        raise ModelNotFoundError(
            f"nrt-mini's weights are missing from {T2A_DIR}; reinstall nrt, or train them with "
            "`python -m nrt.mini.train_t2a` (see nrt/mini/MODEL_CARD.md)"
        )
    return T2A_DIR
