"""AudioLDM 2 (cvssp/audioldm2, cvssp/audioldm2-large, cvssp/audioldm2-music) from the diffusers layout.

A snapshot holds ``unet/`` (``AudioLDM2UNet2DConditionModel``), ``vae/``, ``vocoder/``
(``SpeechT5HifiGan``), ``text_encoder/`` (a whole ``ClapModel``), ``text_encoder_2/``
(FLAN-T5's encoder), ``projection_model/`` (``AudioLDM2ProjectionModel``), ``language_model/``
(GPT-2), ``tokenizer/`` (RoBERTa), ``tokenizer_2/`` (T5) and ``scheduler/``; its
``feature_extractor/`` only serves the pipeline's CLAP ranking of several outputs and is not
read. The waveform path (16 kHz, 64-bin log-mel, KL-VAE, HiFi-GAN) is AudioLDM's, shared
through :class:`~nrt.backbones.latent.MelLatentBackbone` and :mod:`nrt.backbones.audioldm`.

How text reaches the UNet, as diffusers' ``AudioLDM2Pipeline.encode_prompt`` builds it: the
unit CLAP text vector and the T5 hidden states are projected to GPT-2's width, each framed by
learned start and end tokens, and concatenated; GPT-2 continues that sequence by
``max_new_tokens`` (8) hidden states. The UNet cross-attends to those 8 states
(``encoder_hidden_states``, 768 wide) in some attention layers and to the T5 states
(``encoder_hidden_states_1``, with their mask) in others. In nrt's :class:`Condition` the GPT-2
sequence is ``embeds`` (no mask) and the T5 sequence ``embeds_1`` with ``mask_1``.

The method on AudioLDM 2: step 1 optimises both sequences as the UNet receives them (GPT-2
and the text encoders are not run during the fit), and step 3 interpolates both. Guidance's
null condition is the empty prompt through the same path, its T5 part padded to the prompt's
length as the pipeline pads its negative prompt.

The language model is loaded as ``GPT2LMHeadModel`` (its head is tied to the input embedding,
so a snapshot's ``GPT2Model`` weights load whole): in transformers 5 a plain ``GPT2Model`` has
no generation methods, which the pipeline calls (diffusers issue 12630). nrt generates the 8
states with its own loop over GPT-2's body and needs no generation internals; the pipeline
built from the same modules gives the same sequences (``tests/test_audioldm2.py``).

The UNet is diffusers' ``AudioLDM2UNet2DConditionModel`` with diffusers' peft methods mixed in
(``add_adapter``, ``unload_lora``: the class lacks them), so LoRA fits work as on the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
from transformers import ClapModel, GPT2LMHeadModel, PreTrainedTokenizerBase, T5EncoderModel

from ..errors import ModelNotFoundError
from ..hub import read_json
from .audioldm import identify, load_tokenizer, load_waveform_parts, open_model_dir, tokenize
from .base import Condition, place
from .latent import MelLatentBackbone

logger = logging.getLogger(__name__)

PIPELINE = "AudioLDM2Pipeline"
SUBFOLDERS = (
    "unet",
    "vae",
    "vocoder",
    "text_encoder",
    "text_encoder_2",
    "projection_model",
    "language_model",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
)
GENERATED_TOKENS = 8  # AudioLDM 2's sequence_gen_length, where the language model's config names none


class AudioLDM2UNet(AudioLDM2UNet2DConditionModel, PeftAdapterMixin):
    """diffusers' AudioLDM 2 UNet with the adapter methods its ``UNet2DConditionModel`` has."""


class AudioLDM2Backbone(MelLatentBackbone):
    """GPT-2's generated sequence and the T5 sequence enter the UNet through cross-attention."""

    def __init__(
        self,
        *,
        text_encoder: ClapModel,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder_2: T5EncoderModel,
        tokenizer_2: PreTrainedTokenizerBase,
        projection_model: AudioLDM2ProjectionModel,
        language_model: GPT2LMHeadModel,
        **parts: Any,
    ) -> None:
        super().__init__(**parts)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2.eval().requires_grad_(False)
        self.tokenizer_2 = tokenizer_2
        self.projection_model = projection_model.eval().requires_grad_(False)
        self.language_model = language_model.eval().requires_grad_(False)
        max_new_tokens = getattr(language_model.config, "max_new_tokens", None)
        self.generated_tokens = int(max_new_tokens or GENERATED_TOKENS)
        self._null_cache: dict[int, Condition] = {}

    # -- text ----------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> Condition:
        """GPT-2's sequence ``[B, 8, 768]`` and the T5 sequence ``[B, L, 1024]`` (padded to the longest prompt)."""
        return self._encode(prompts, padding=True)

    def null_condition(self, like: Condition) -> Condition:
        if like.embeds_1 is None:
            raise ValueError("an AudioLDM 2 condition has a T5 sequence (embeds_1); this one has none")
        length = like.embeds_1.shape[1]
        if length not in self._null_cache:
            self._null_cache[length] = self._encode([""], padding="max_length", t5_length=length)
        return self._null_cache[length].to(like.embeds.device, like.embeds.dtype).repeat(like.batch_size)

    @torch.no_grad()
    def _encode(self, prompts: Sequence[str], padding: str | bool, t5_length: int | None = None) -> Condition:
        # 1. CLAP: one unit vector per prompt, a sequence of one that is always attended to
        clap = tokenize(self.tokenizer, prompts, "max_length")
        device = self.text_encoder.device
        features = self.text_encoder.get_text_features(
            input_ids=clap["input_ids"].to(device), attention_mask=clap["attention_mask"].to(device)
        )
        clap_states = getattr(features, "pooler_output", features)[:, None, :]  # an output object in transformers 5
        clap_mask = torch.ones(clap_states.shape[:2], dtype=torch.long, device=device)

        # 2. T5: the hidden states and their token mask
        t5 = tokenize(self.tokenizer_2, prompts, padding, max_length=t5_length)
        t5_mask = t5["attention_mask"].to(device)
        t5_states = self.text_encoder_2(input_ids=t5["input_ids"].to(device), attention_mask=t5_mask)[0]

        # 3. Both projected to GPT-2's width and framed, then continued by GPT-2
        projected = self.projection_model(
            hidden_states=clap_states, hidden_states_1=t5_states, attention_mask=clap_mask, attention_mask_1=t5_mask
        )
        generated = generate_states(
            self.language_model, projected.hidden_states, projected.attention_mask, self.generated_tokens
        )
        return Condition(
            generated.to(self.device, self.dtype),
            None,
            t5_states.to(self.device, self.dtype),
            t5_mask.to(self.device) == 1,
        )

    # -- denoiser ------------------------------------------------------------------------
    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Condition,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        if condition.embeds_1 is None:
            raise ValueError("AudioLDM 2's UNet needs the T5 sequence (embeds_1); this condition has none")
        unet = unet or self.unet
        return unet(
            latents,
            timesteps,
            encoder_hidden_states=condition.embeds,
            encoder_hidden_states_1=condition.embeds_1,
            encoder_attention_mask_1=condition.mask_1,
        ).sample

    # -- placement -----------------------------------------------------------------------
    def _frozen_modules(self) -> list[torch.nn.Module]:
        return [
            self.vae,
            self.vocoder,
            self.text_encoder,
            self.text_encoder_2,
            self.projection_model,
            self.language_model,
        ]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AudioLDM2Backbone:
        super().to(device, dtype)
        for module in (self.text_encoder, self.text_encoder_2, self.projection_model, self.language_model):
            place(module, device, dtype)
        self._null_cache.clear()
        return self


def generate_states(
    language_model: GPT2LMHeadModel, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int
) -> torch.Tensor:
    """Continue ``inputs_embeds`` by ``new_tokens`` of GPT-2's last hidden states, as AudioLDM 2 does.

    Each new state is GPT-2's output at the last position, appended to the input and attended
    to from then on. The whole sequence is run again at every step (no key/value cache): eight
    steps over a few dozen positions cost little, and no generation internals are relied on.
    """
    body = language_model.transformer  # the head's logits are not needed
    embeds, mask = inputs_embeds, attention_mask
    for _ in range(new_tokens):
        hidden = body(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        embeds = torch.cat([embeds, hidden[:, -1:]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return embeds[:, -new_tokens:]


def is_audioldm2_dir(path: Path) -> bool:
    """Whether ``path`` holds a diffusers model whose index names ``AudioLDM2Pipeline``."""
    index = path / "model_index.json"
    return index.is_file() and read_json(index).get("_class_name") == PIPELINE


def _load_language_model(path: Path) -> GPT2LMHeadModel:
    model, info = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if k != "lm_head.weight"]  # tied to the input embedding
    if missing:
        raise ModelNotFoundError(f"the language model in {path} lacks weights: {sorted(missing)[:5]} ({len(missing)})")
    return model


def _check_widths(
    directory: Path,
    unet: AudioLDM2UNet,
    clap: ClapModel,
    t5: T5EncoderModel,
    projection: AudioLDM2ProjectionModel,
    lm: GPT2LMHeadModel,
) -> None:
    """The projection reads CLAP's and T5's widths into GPT-2's; the UNet attends to GPT-2's and T5's."""
    reads = (projection.projection.in_features, projection.projection_1.in_features, projection.projection.out_features)
    gives = (clap.config.projection_dim, t5.config.d_model, lm.config.n_embd)
    if reads != gives:
        raise ModelNotFoundError(
            f"{directory / 'projection_model'} maps widths (CLAP, T5) {reads[:2]} to {reads[2]}, but the text "
            f"encoders give {gives[:2]} and GPT-2 takes {gives[2]}"
        )
    dims = unet.config.cross_attention_dim
    flat = {d for block in dims for d in (block if isinstance(block, (list, tuple)) else [block])} - {None}
    if not {lm.config.n_embd, t5.config.d_model} <= flat:
        raise ModelNotFoundError(
            f"{directory / 'unet'} cross-attends to widths {sorted(flat)}, but GPT-2 gives {lm.config.n_embd} "
            f"and T5 {t5.config.d_model}: is this an AudioLDM 2 text-to-audio model?"
        )


def load_audioldm2(name_or_path: str | Path, revision: str | None = None) -> AudioLDM2Backbone:
    """Load an AudioLDM 2 model in the diffusers layout from a directory or a hub id."""
    directory, snapshot = open_model_dir(name_or_path, SUBFOLDERS, revision, "AudioLDM 2")
    text_2_type = read_json(directory / "text_encoder_2" / "config.json").get("model_type")
    if text_2_type != "t5":
        raise ModelNotFoundError(
            f"{directory / 'text_encoder_2'} is a {text_2_type!r} model; nrt takes AudioLDM 2's text-to-audio "
            "models, whose second text encoder is T5 (cvssp/audioldm2, -large, -music), not its speech models"
        )

    # 1. UNet, VAE and vocoder, in float32 whatever the files hold; to() casts the UNet
    unet = AudioLDM2UNet.from_pretrained(directory, subfolder="unet", torch_dtype=torch.float32)
    vae, vocoder, mel = load_waveform_parts(directory)

    # 2. The two text encoders with their tokenizers, the projection and the language model
    tokenizer = load_tokenizer(directory / "tokenizer")
    text_encoder = ClapModel.from_pretrained(directory / "text_encoder", dtype=torch.float32)
    tokenizer_2 = load_tokenizer(directory / "tokenizer_2")
    text_encoder_2 = T5EncoderModel.from_pretrained(directory / "text_encoder_2", dtype=torch.float32)
    projection_model = AudioLDM2ProjectionModel.from_pretrained(
        directory, subfolder="projection_model", torch_dtype=torch.float32
    )
    language_model = _load_language_model(directory / "language_model")
    _check_widths(directory, unet, text_encoder, text_encoder_2, projection_model, language_model)

    # 3. The scheduler as published
    info, scheduler_config = identify(directory, snapshot, name_or_path, "audioldm2", SUBFOLDERS)
    return AudioLDM2Backbone(
        info=info,
        mel=mel,
        vae=vae,
        vocoder=vocoder,
        unet=unet,
        scheduler_config=scheduler_config,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        projection_model=projection_model,
        language_model=language_model,
    )
