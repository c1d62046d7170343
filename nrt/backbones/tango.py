"""TANGO (declare-lab/tango, tango2, tango-full-ft-audiocaps, ...) from its own hub layout.

A snapshot holds ``main_config.json``, ``vae_config.json``, ``stft_config.json`` and
``pytorch_model_{main,vae,stft}.bin``. ``main`` holds ``unet.*`` and ``text_encoder.*`` (a
FLAN-T5 encoder); ``vae`` holds the original AudioLDM VAE with the HiFi-GAN under
``vocoder.*``. ``main_config.json`` names the UNet config by a path inside TANGO's code
repository and the scheduler by another hub repository; nrt carries both as data.

Optional fields nrt reads beyond TANGO's own (used by models written by nrt, ignored by
TANGO): ``main_config.json`` may name a UNet config file inside the model directory
(``unet_model_config_path``), carry a ``scheduler_config`` dict, and name the text encoder
by a directory relative to the model; ``vae_config.json`` may carry a ``vocoder`` dict of
HiFi-GAN hyperparameters (the default is TANGO's 16 kHz, 64-mel HiFi-GAN). nrt-mini's files
use two more (see :mod:`nrt.backbones.patch`): ``vae_config.json`` with ``"kind": "patch"``
(standardised log-mel folded into patches; the standardisation is the VAE file's weights)
and a vocoder ``{"kind": "griffin-lim"}`` (no weights).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5Config, T5EncoderModel

from ..errors import ModelNotFoundError
from ..hub import fingerprint, read_json, resolve_model_dir
from . import convert
from .base import BackboneInfo, Condition, place
from .latent import MelLatentBackbone
from .mel import MelFrontEnd, StftConfig, tacotron_stft_buffers
from .patch import GRIFFIN_LIM_KIND, PATCH_KIND, GriffinLimVocoder, PatchAutoencoder

logger = logging.getLogger(__name__)

TANGO_FILES = (
    "main_config.json",
    "vae_config.json",
    "stft_config.json",
    "pytorch_model_main.bin",
    "pytorch_model_vae.bin",
)
# what main_config.json names, mapped to the configs nrt carries
KNOWN_UNET_CONFIGS = {"diffusion_model_config.json": "tango-unet-config.json"}
KNOWN_SCHEDULERS = {"stabilityai/stable-diffusion-2-1": "sd21-scheduler.json"}
TEXT_ENCODER_FILES = ("config.json", "tokenizer*", "spiece.model", "special_tokens_map.json")
MIN_VOCAB = 32  # an offline stub tokenizer has a handful of tokens
TEXT_CACHE_SIZE = 64  # prompts whose encoder states are kept (a sweep asks for the same few)


class TangoBackbone(MelLatentBackbone):
    """FLAN-T5 hidden states enter the UNet through cross-attention, with a token mask."""

    def __init__(self, *, text_encoder: T5EncoderModel, tokenizer: PreTrainedTokenizerBase, **parts: Any) -> None:
        super().__init__(**parts)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._null_cache: dict[int, Condition] = {}
        self._text_cache: dict[tuple[str, ...], Condition] = {}

    def _tokens_to_condition(self, batch: dict) -> Condition:
        device = self.text_encoder.device
        with torch.no_grad():
            hidden = self.text_encoder(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).last_hidden_state
        mask = batch["attention_mask"].to(self.device) == 1
        return Condition(hidden.to(self.device, self.dtype), mask)

    def encode_text(self, prompts: Sequence[str]) -> Condition:
        key = tuple(prompts)
        if key not in self._text_cache:
            if len(self._text_cache) >= TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[key] = self._encode_text(key)
        return self._text_cache[key].to(self.device, self.dtype)

    def _encode_text(self, prompts: Sequence[str]) -> Condition:
        batch = self.tokenizer(
            list(prompts),
            max_length=self.tokenizer.model_max_length,
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        return self._tokens_to_condition(batch)

    def null_condition(self, like: Condition) -> Condition:
        length = like.embeds.shape[1]
        if length not in self._null_cache:
            batch = self.tokenizer([""], max_length=length, padding="max_length", truncation=True, return_tensors="pt")
            self._null_cache[length] = self._tokens_to_condition(batch)
        return self._null_cache[length].to(like.embeds.device, like.embeds.dtype).repeat(like.batch_size)

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Condition,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        unet = unet or self.unet
        return unet(
            latents,
            timesteps,
            encoder_hidden_states=condition.embeds,
            encoder_attention_mask=condition.mask,
        ).sample

    def _frozen_modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.vocoder, self.text_encoder]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TangoBackbone:
        super().to(device, dtype)
        place(self.text_encoder, device, dtype)
        self._null_cache.clear()
        self._text_cache.clear()
        return self


def _data_json(name: str) -> dict:
    return json.loads(resources.files("nrt.backbones.data").joinpath(name).read_text())


def _unet_config(directory: Path, main_config: dict) -> dict:
    named = main_config.get("unet_model_config_path")
    if named and (directory / named).is_file():
        return read_json(directory / named)
    if named and Path(named).name in KNOWN_UNET_CONFIGS:
        return _data_json(KNOWN_UNET_CONFIGS[Path(named).name])
    raise ModelNotFoundError(
        f"unknown UNet config {named!r} in {directory / 'main_config.json'}: nrt knows "
        f"{sorted(KNOWN_UNET_CONFIGS)}; put the config file in the model directory under that path"
    )


def _scheduler_config(main_config: dict) -> dict:
    if "scheduler_config" in main_config:
        return dict(main_config["scheduler_config"])
    name = main_config.get("scheduler_name")
    if name in KNOWN_SCHEDULERS:
        return _data_json(KNOWN_SCHEDULERS[name])
    raise ModelNotFoundError(
        f"unknown scheduler {name!r}: nrt knows {sorted(KNOWN_SCHEDULERS)}, or give a "
        "'scheduler_config' dict in main_config.json"
    )


def _text_encoder_dir(directory: Path, main_config: dict) -> Path:
    name = main_config.get("text_encoder_name")
    if not name:
        raise ModelNotFoundError(f"{directory / 'main_config.json'} names no text_encoder_name")
    local = directory / name
    if local.is_dir():
        return local
    path, _ = resolve_model_dir(name, allow_patterns=list(TEXT_ENCODER_FILES))
    return path


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A hub checkpoint's tensors: safetensors, or a ``.bin`` through ``weights_only`` loading."""
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing: is {path.parent} a complete model directory?")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def split_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def build_unet(config: dict, state_dict: dict[str, torch.Tensor]) -> UNet2DConditionModel:
    unet = UNet2DConditionModel.from_config(config)
    _load_strict(unet, state_dict, "UNet")
    return unet


def _load_strict(module: torch.nn.Module, state_dict: dict, what: str, allow_missing: Sequence[str] = ()) -> None:
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if k not in allow_missing]
    if missing or result.unexpected_keys:
        raise ModelNotFoundError(
            f"{what} weights do not match its config: missing {missing[:5]} "
            f"({len(missing)}), unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})"
        )


def _build_vae(config: dict, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    if config.get("kind") == PATCH_KIND:
        vae = PatchAutoencoder.from_config(config)
        _load_strict(vae, state_dict, "patch autoencoder")
        return vae.eval()
    return convert.build_vae(config, state_dict)


def _build_vocoder(config: dict, state_dict: dict[str, torch.Tensor], stft: StftConfig) -> torch.nn.Module:
    if config.get("kind") == GRIFFIN_LIM_KIND:
        return GriffinLimVocoder.from_config(stft, config).eval()
    return convert.build_vocoder(config, state_dict)


def _check_front_end(path: Path, stft: StftConfig) -> None:
    """Warn when the checkpoint's stored mel filters differ from the ones nrt computes."""
    if not path.exists():
        return
    stored = load_weights(path).get("mel_basis")
    ours = MelFrontEnd(stft).mel_basis
    if stored is None or stored.shape != ours.shape or not torch.allclose(stored.float(), ours, atol=1e-5):
        logger.warning("%s: the stored mel filters differ from stft_config.json's; edits may be off", path)


def write_tango(
    directory: Path,
    *,
    unet: UNet2DConditionModel,
    text_encoder: T5EncoderModel,
    tokenizer: PreTrainedTokenizerBase,
    vae_state: dict[str, torch.Tensor],
    vae_config: dict,
    stft_config: dict,
    scheduler_config: dict,
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
    stft_bases: bool = True,
) -> Path:
    """Write a model that :func:`load_tango` reads, in TANGO's layout with nrt's optional fields.

    ``vae_state`` holds the VAE's (and any vocoder's, under ``vocoder.``) tensors in the
    original AudioLDM layout; ``dtype`` (e.g. float16) shrinks the UNet and text encoder on disk.
    ``stft_bases=False`` keeps only the mel filters in ``pytorch_model_stft.bin`` (nrt computes
    the STFT itself; the bases are 8 MB at 1024 points).
    """
    directory.mkdir(parents=True, exist_ok=True)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    text_dir = directory / "text_encoder"
    tokenizer.save_pretrained(text_dir)
    text_encoder.config.save_pretrained(text_dir)
    main = {f"unet.{k}": cast(v) for k, v in unet.state_dict().items()}
    main.update({f"text_encoder.{k}": cast(v) for k, v in text_encoder.state_dict().items()})
    torch.save(main, directory / "pytorch_model_main.bin")
    torch.save(vae_state, directory / "pytorch_model_vae.bin")
    buffers = tacotron_stft_buffers(StftConfig.from_dict(stft_config))
    if not stft_bases:
        buffers = {"mel_basis": buffers["mel_basis"]}
    torch.save(buffers, directory / "pytorch_model_stft.bin")
    main_config = {
        "text_encoder_name": "text_encoder",
        "scheduler_name": "stabilityai/stable-diffusion-2-1",
        "scheduler_config": scheduler_config,
        "unet_model_name": None,
        "unet_model_config_path": "unet_config.json",
        "snr_gamma": 5.0,
        **(extra or {}),
    }
    (directory / "unet_config.json").write_text(json.dumps(dict(unet.config), indent=2))
    (directory / "vae_config.json").write_text(json.dumps(vae_config, indent=2))
    (directory / "stft_config.json").write_text(json.dumps(stft_config, indent=2))
    (directory / "main_config.json").write_text(json.dumps(main_config, indent=2))
    return directory


def sd21_scheduler(prediction_type: str = "v_prediction") -> dict:
    """The scheduler config TANGO names (Stable Diffusion 2.1's), with a chosen prediction type."""
    return {**_data_json(KNOWN_SCHEDULERS["stabilityai/stable-diffusion-2-1"]), "prediction_type": prediction_type}


def load_tango(name_or_path: str | Path, revision: str | None = None) -> TangoBackbone:
    """Load a TANGO-layout model from a directory or a hub id onto diffusers/transformers modules."""
    directory, snapshot = resolve_model_dir(
        name_or_path, allow_patterns=[*TANGO_FILES, "*.json", "text_encoder/*"], revision=revision
    )
    missing = [f for f in TANGO_FILES if not (directory / f).exists()]
    if missing:
        raise ModelNotFoundError(f"{directory} is not a TANGO model directory: missing {', '.join(missing)}")
    main_config = read_json(directory / "main_config.json")
    vae_config = read_json(directory / "vae_config.json")
    stft = StftConfig.from_dict(read_json(directory / "stft_config.json"))

    # 1. The UNet and text encoder share pytorch_model_main.bin
    main = load_weights(directory / "pytorch_model_main.bin")
    unet = build_unet(_unet_config(directory, main_config), split_prefix(main, "unet."))

    text_dir = _text_encoder_dir(directory, main_config)
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    if len(tokenizer) < MIN_VOCAB:
        raise ModelNotFoundError(
            f"the tokenizer in {text_dir} has only {len(tokenizer)} tokens: the files are incomplete"
        )
    text_encoder = T5EncoderModel(T5Config.from_pretrained(text_dir))
    text_state = split_prefix(main, "text_encoder.")
    _load_strict(text_encoder, text_state, "text encoder", allow_missing=["encoder.embed_tokens.weight"])
    text_encoder.tie_weights()
    del main

    # 2. The VAE carries the vocoder under vocoder.*
    vae_state, vocoder_state = convert.split_vocoder(load_weights(directory / "pytorch_model_vae.bin"))
    vocoder_config = vae_config.pop("vocoder", convert.HIFIGAN_16K_64)
    vae = _build_vae(vae_config, vae_state)
    vocoder = _build_vocoder(vocoder_config, vocoder_state, stft)

    _check_front_end(directory / "pytorch_model_stft.bin", stft)
    revision = snapshot or fingerprint(directory, [*TANGO_FILES, "pytorch_model_stft.bin"])
    info = BackboneInfo(kind="tango", model_id=str(name_or_path), revision=revision)
    logger.info("loaded TANGO model %s (%s)", name_or_path, revision)
    return TangoBackbone(
        info=info,
        mel=MelFrontEnd(stft),
        vae=vae,
        vocoder=vocoder,
        unet=unet,
        scheduler_config=_scheduler_config(main_config),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
