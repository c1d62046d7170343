"""Where TANGO's original AudioLDM VAE and HiFi-GAN weights become diffusers/transformers modules.

TANGO stores ``pytorch_model_vae.bin``: the state dict of the original AudioLDM
``AutoencoderKL`` (``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``)
with its HiFi-GAN vocoder inside (``vocoder.*``), and ``vae_config.json`` with the
original constructor arguments. nrt runs them as diffusers' ``AutoencoderKL`` and
transformers' ``SpeechT5HifiGan``: same arithmetic, other parameter names.

Every mapping here is a bijection on the keys it accepts. A key it does not know, or a
tensor of the wrong shape, raises (KeyError / ValueError naming the first few) instead of
being dropped, so a checkpoint never loads partially.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from diffusers import AutoencoderKL
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

logger = logging.getLogger(__name__)

# The 16 kHz, 64-mel HiFi-GAN of AudioLDM and TANGO (audioldm.hifigan.utilities); the
# training-only fields are kept so that the dict reads as the original.
HIFIGAN_16K_64: dict[str, Any] = {
    "resblock": "1",
    "num_gpus": 6,
    "batch_size": 16,
    "learning_rate": 0.0002,
    "adam_b1": 0.8,
    "adam_b2": 0.99,
    "lr_decay": 0.999,
    "seed": 1234,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "upsample_initial_channel": 1024,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "segment_size": 8192,
    "num_mels": 64,
    "num_freq": 1025,
    "n_fft": 1024,
    "hop_size": 160,
    "win_size": 1024,
    "sampling_rate": 16000,
    "fmin": 0,
    "fmax": 8000,
    "fmax_for_loss": None,
    "num_workers": 4,
    "dist_config": {
        "dist_backend": "nccl",
        "dist_url": "tcp://localhost:54321",
        "world_size": 1,
    },
}

# The original Encoder/Decoder hard-code GroupNorm(32 groups, eps 1e-6) and a leaky ReLU
# slope of 0.1 in HiFi-GAN; diffusers and transformers take them as settings.
_NORM_GROUPS = 32
_LRELU_SLOPE = 0.1

_VAE_TOP_KEYS = {"ddconfig", "embed_dim", "scale_factor", "image_key", "subband", "time_shuffle"}
# Training-only arguments of the original AutoencoderKL: they do not change the network.
_VAE_TRAINING_KEYS = {
    "lossconfig",
    "ckpt_path",
    "reload_from_ckpt",
    "ignore_keys",
    "colorize_nlabels",
    "monitor",
    "base_learning_rate",
}
_DDCONFIG_KEYS = {
    "double_z",
    "z_channels",
    "resolution",
    "in_channels",
    "out_ch",
    "ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
    "resamp_with_conv",
    "use_linear_attn",
    "attn_type",
    "downsample_time_stride4_levels",
    "give_pre_end",
    "tanh_out",
    # Present in TANGO's config; the original Encoder and Decoder swallow it unused.
    "downsample_time",
}


def _first(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


# -- VAE config ----------------------------------------------------------------------------


def vae_config_to_diffusers(vae_config: Mapping[str, Any]) -> dict[str, Any]:
    """TANGO's ``vae_config.json`` to keyword arguments of ``diffusers.AutoencoderKL``.

    ``scaling_factor`` is the config's ``scale_factor`` (1.0, the original default, when
    absent). ``image_key`` and ``time_shuffle`` do not change the network when ``subband``
    is 1. Raises ValueError for anything diffusers' AutoencoderKL cannot express.
    """
    unknown = set(vae_config) - _VAE_TOP_KEYS - _VAE_TRAINING_KEYS
    if unknown:
        raise ValueError(f"vae_config has keys nrt cannot map: {_first(unknown)}")
    if "ddconfig" not in vae_config or "embed_dim" not in vae_config:
        raise ValueError("vae_config needs 'ddconfig' and 'embed_dim'")
    if int(vae_config.get("subband", 1)) != 1:
        raise ValueError(f"subband decomposition is not supported: subband={vae_config['subband']}, expected 1")

    dd = dict(vae_config["ddconfig"])
    unknown = set(dd) - _DDCONFIG_KEYS
    if unknown:
        raise ValueError(f"ddconfig has keys nrt cannot map: {_first(unknown)}")

    def refuse(what: str, value: Any, expected: str) -> None:
        raise ValueError(f"ddconfig {what}={value!r} has no diffusers AutoencoderKL equivalent; expected {expected}")

    if not dd.get("double_z", True):
        refuse("double_z", dd["double_z"], "true (a Gaussian posterior)")
    if not dd.get("resamp_with_conv", True):
        refuse("resamp_with_conv", dd["resamp_with_conv"], "true")
    if dd.get("use_linear_attn", False) or dd.get("attn_type", "vanilla") != "vanilla":
        refuse("attn_type", dd.get("attn_type", "linear"), "'vanilla'")
    if dd.get("downsample_time_stride4_levels"):
        refuse("downsample_time_stride4_levels", dd["downsample_time_stride4_levels"], "[]")
    for flag in ("give_pre_end", "tanh_out"):
        if dd.get(flag, False):
            refuse(flag, dd[flag], "false")

    ch, ch_mult = int(dd["ch"]), [int(m) for m in dd["ch_mult"]]
    resolution = int(dd["resolution"])
    # The original adds attention inside a level only where its resolution is listed.
    level_res = [resolution // 2**i for i in range(len(ch_mult))]
    hit = [r for r in dd.get("attn_resolutions", []) if r in level_res]
    if hit:
        refuse("attn_resolutions", dd["attn_resolutions"], "no attention outside the mid block")
    block_out = [ch * m for m in ch_mult]
    if any(c % _NORM_GROUPS for c in block_out):
        raise ValueError(f"channels {block_out} must be multiples of {_NORM_GROUPS} (the original GroupNorm)")
    z_channels, embed_dim = int(dd["z_channels"]), int(vae_config["embed_dim"])
    if z_channels != embed_dim:
        raise ValueError(f"z_channels ({z_channels}) != embed_dim ({embed_dim}): diffusers' AutoencoderKL ties the two")
    if dd.get("dropout", 0.0):
        # Dropout acts only in training, and nrt never trains the VAE.
        logger.info("ignoring VAE dropout %s (inference only)", dd["dropout"])

    n = len(ch_mult)
    return {
        "in_channels": int(dd["in_channels"]),
        "out_channels": int(dd["out_ch"]),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": block_out,
        "layers_per_block": int(dd["num_res_blocks"]),
        "act_fn": "silu",
        "latent_channels": embed_dim,
        "norm_num_groups": _NORM_GROUPS,
        "sample_size": resolution,
        "scaling_factor": float(vae_config.get("scale_factor", 1.0)),
    }


# -- VAE weights ---------------------------------------------------------------------------

_PARAM = r"(weight|bias)"
_RESNET_TO = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_RESNET_FROM = {v: k for k, v in _RESNET_TO.items()}
_ATTN_TO = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_FROM = {v: k for k, v in _ATTN_TO.items()}
_ENDS_TO = {"conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out"}
_ENDS_FROM = {v: k for k, v in _ENDS_TO.items()}
_LINEAR_ATTN = {"to_q", "to_k", "to_v", "to_out.0"}


def _alt(names: Iterable[str]) -> str:
    return "(" + "|".join(re.escape(n) for n in names) + ")"


_ORIG = [
    ("ends", re.compile(rf"^(encoder|decoder)\.{_alt(_ENDS_TO)}\.{_PARAM}$")),
    ("mid_res", re.compile(rf"^(encoder|decoder)\.mid\.block_([12])\.{_alt(_RESNET_TO)}\.{_PARAM}$")),
    ("mid_attn", re.compile(rf"^(encoder|decoder)\.mid\.attn_1\.{_alt(_ATTN_TO)}\.{_PARAM}$")),
    ("down_res", re.compile(rf"^encoder\.down\.(\d+)\.block\.(\d+)\.{_alt(_RESNET_TO)}\.{_PARAM}$")),
    ("down_conv", re.compile(rf"^encoder\.down\.(\d+)\.downsample\.conv\.{_PARAM}$")),
    ("up_res", re.compile(rf"^decoder\.up\.(\d+)\.block\.(\d+)\.{_alt(_RESNET_TO)}\.{_PARAM}$")),
    ("up_conv", re.compile(rf"^decoder\.up\.(\d+)\.upsample\.conv\.{_PARAM}$")),
    ("quant", re.compile(rf"^(quant_conv|post_quant_conv)\.{_PARAM}$")),
]
_DIFF = [
    ("ends", re.compile(rf"^(encoder|decoder)\.{_alt(_ENDS_FROM)}\.{_PARAM}$")),
    ("mid_res", re.compile(rf"^(encoder|decoder)\.mid_block\.resnets\.([01])\.{_alt(_RESNET_FROM)}\.{_PARAM}$")),
    ("mid_attn", re.compile(rf"^(encoder|decoder)\.mid_block\.attentions\.0\.{_alt(_ATTN_FROM)}\.{_PARAM}$")),
    ("down_res", re.compile(rf"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.{_alt(_RESNET_FROM)}\.{_PARAM}$")),
    ("down_conv", re.compile(rf"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.{_PARAM}$")),
    ("up_res", re.compile(rf"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.{_alt(_RESNET_FROM)}\.{_PARAM}$")),
    ("up_conv", re.compile(rf"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.{_PARAM}$")),
    ("quant", re.compile(rf"^(quant_conv|post_quant_conv)\.{_PARAM}$")),
]


def _match(key: str, table: list[tuple[str, re.Pattern]]) -> tuple[str, tuple[str, ...]] | None:
    for kind, pattern in table:
        m = pattern.match(key)
        if m:
            return kind, m.groups()
    return None


def _num_up_levels(keys: Iterable[str], pattern: str) -> int:
    """Decoder levels, counted from the state dict (the two layouts number them oppositely)."""
    levels = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(levels) + 1 if levels else 0


_Rename = Callable[[str, torch.Tensor], "tuple[str, torch.Tensor] | None"]


def _rename_all(sd: Mapping[str, torch.Tensor], rename: _Rename) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in sd.items():
        mapped = rename(key, tensor)
        if mapped is None:
            unexpected.append(key)
        else:
            out[mapped[0]] = mapped[1]
    if unexpected:
        raise KeyError(f"{len(unexpected)} keys cannot be mapped: {_first(unexpected)}")
    return out


def split_vocoder(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an original VAE state dict into (VAE keys, vocoder keys without ``vocoder.``)."""
    vae = {k: v for k, v in sd.items() if not k.startswith("vocoder.")}
    vocoder = {k[len("vocoder.") :]: v for k, v in sd.items() if k.startswith("vocoder.")}
    return vae, vocoder


def vae_state_dict_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AudioLDM ``AutoencoderKL`` keys to diffusers' ``AutoencoderKL`` keys.

    ``vocoder.*`` keys are left out (see :func:`split_vocoder`); any other key that has no
    counterpart raises KeyError.
    """
    sd, _ = split_vocoder(sd)
    n_up = _num_up_levels(sd, r"^decoder\.up\.(\d+)\.")

    def rename(key: str, t: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        hit = _match(key, _ORIG)
        if hit is None:
            return None
        kind, g = hit
        if kind == "ends":
            return f"{g[0]}.{_ENDS_TO[g[1]]}.{g[2]}", t
        if kind == "mid_res":
            return f"{g[0]}.mid_block.resnets.{int(g[1]) - 1}.{_RESNET_TO[g[2]]}.{g[3]}", t
        if kind == "mid_attn":
            name = _ATTN_TO[g[1]]
            if name in _LINEAR_ATTN and g[2] == "weight":
                if t.dim() != 4 or t.shape[2:] != (1, 1):
                    raise ValueError(f"{key}: expected a 1x1 convolution weight, got shape {tuple(t.shape)}")
                t = t.reshape(t.shape[0], t.shape[1])
            return f"{g[0]}.mid_block.attentions.0.{name}.{g[2]}", t
        if kind == "down_res":
            return f"encoder.down_blocks.{g[0]}.resnets.{g[1]}.{_RESNET_TO[g[2]]}.{g[3]}", t
        if kind == "down_conv":
            return f"encoder.down_blocks.{g[0]}.downsamplers.0.conv.{g[1]}", t
        if kind == "up_res":
            return f"decoder.up_blocks.{n_up - 1 - int(g[0])}.resnets.{g[1]}.{_RESNET_TO[g[2]]}.{g[3]}", t
        if kind == "up_conv":
            return f"decoder.up_blocks.{n_up - 1 - int(g[0])}.upsamplers.0.conv.{g[1]}", t
        return key, t  # quant_conv, post_quant_conv

    return _rename_all(sd, rename)


def vae_state_dict_from_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' ``AutoencoderKL`` keys back to the original AudioLDM layout (no vocoder).

    The exact inverse of :func:`vae_state_dict_to_diffusers`: tensors are only renamed or
    reshaped, so a round trip is bit-exact.
    """
    n_up = _num_up_levels(sd, r"^decoder\.up_blocks\.(\d+)\.")

    def rename(key: str, t: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        hit = _match(key, _DIFF)
        if hit is None:
            return None
        kind, g = hit
        if kind == "ends":
            return f"{g[0]}.{_ENDS_FROM[g[1]]}.{g[2]}", t
        if kind == "mid_res":
            return f"{g[0]}.mid.block_{int(g[1]) + 1}.{_RESNET_FROM[g[2]]}.{g[3]}", t
        if kind == "mid_attn":
            if g[1] in _LINEAR_ATTN and g[2] == "weight":
                if t.dim() != 2:
                    raise ValueError(f"{key}: expected a linear weight, got shape {tuple(t.shape)}")
                t = t.reshape(t.shape[0], t.shape[1], 1, 1)
            return f"{g[0]}.mid.attn_1.{_ATTN_FROM[g[1]]}.{g[2]}", t
        if kind == "down_res":
            return f"encoder.down.{g[0]}.block.{g[1]}.{_RESNET_FROM[g[2]]}.{g[3]}", t
        if kind == "down_conv":
            return f"encoder.down.{g[0]}.downsample.conv.{g[1]}", t
        if kind == "up_res":
            return f"decoder.up.{n_up - 1 - int(g[0])}.block.{g[1]}.{_RESNET_FROM[g[2]]}.{g[3]}", t
        if kind == "up_conv":
            return f"decoder.up.{n_up - 1 - int(g[0])}.upsample.conv.{g[1]}", t
        return key, t

    return _rename_all(sd, rename)


# -- HiFi-GAN --------------------------------------------------------------------------------


def hifigan_config_to_speecht5(cfg: Mapping[str, Any]) -> SpeechT5HifiGanConfig:
    """An original HiFi-GAN config (as :data:`HIFIGAN_16K_64`) to ``SpeechT5HifiGanConfig``.

    ``normalize_before`` is off: the original Generator takes the log-mel as it is.
    """
    if str(cfg.get("resblock", "1")) != "1":
        raise ValueError(f"HiFi-GAN resblock type {cfg['resblock']!r} is not supported; SpeechT5HifiGan has type '1'")
    rates, kernels = list(cfg["upsample_rates"]), list(cfg["upsample_kernel_sizes"])
    if len(rates) != len(kernels):
        raise ValueError(f"upsample_rates {rates} and upsample_kernel_sizes {kernels} differ in length")
    dilations = [list(d) for d in cfg["resblock_dilation_sizes"]]
    if len(dilations) != len(cfg["resblock_kernel_sizes"]) or any(len(d) != 3 for d in dilations):
        # The original ResBlock1 reads exactly three dilations per kernel size.
        raise ValueError(
            f"resblock_dilation_sizes {dilations} must hold three dilations per resblock kernel size "
            f"{list(cfg['resblock_kernel_sizes'])}"
        )
    if cfg["upsample_initial_channel"] // 2 ** len(rates) < 1:
        raise ValueError(
            f"upsample_initial_channel {cfg['upsample_initial_channel']} is too small for {len(rates)} upsamplings"
        )
    return SpeechT5HifiGanConfig(
        model_in_dim=int(cfg["num_mels"]),
        sampling_rate=int(cfg["sampling_rate"]),
        upsample_initial_channel=int(cfg["upsample_initial_channel"]),
        upsample_rates=rates,
        upsample_kernel_sizes=kernels,
        resblock_kernel_sizes=list(cfg["resblock_kernel_sizes"]),
        resblock_dilation_sizes=dilations,
        leaky_relu_slope=_LRELU_SLOPE,
        normalize_before=False,
    )


_WEIGHT_NORM = {
    ".weight_g": ("g", ".weight"),
    ".weight_v": ("v", ".weight"),
    ".parametrizations.weight.original0": ("g", ".weight"),
    ".parametrizations.weight.original1": ("v", ".weight"),
}


def _norm_dim(g: torch.Tensor, v: torch.Tensor, key: str) -> int:
    """The ``dim`` weight norm was applied with, read from the shape of its magnitude ``g``."""
    if g.dim() != v.dim():
        if g.numel() == 1:
            return -1  # dim=None: one norm over the whole tensor
        raise ValueError(f"{key}: weight-norm magnitude {tuple(g.shape)} does not fit direction {tuple(v.shape)}")
    dims = [d for d in range(v.dim()) if g.shape[d] != 1]
    if not dims:
        return 0 if v.shape[0] == 1 else -1
    if len(dims) == 1 and g.shape[dims[0]] == v.shape[dims[0]]:
        return dims[0]
    raise ValueError(f"{key}: weight-norm magnitude {tuple(g.shape)} does not fit direction {tuple(v.shape)}")


def _fold_weight_norm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs (``weight_g``/``weight_v`` or parametrizations) by ``weight``."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        for suffix, (part, new) in _WEIGHT_NORM.items():
            if key.endswith(suffix):
                pairs.setdefault(key[: -len(suffix)] + new, {})[part] = t
                break
        else:
            out[key] = t
    for key, parts in pairs.items():
        if set(parts) != {"g", "v"} or key in out:
            raise KeyError(
                f"{key}: weight norm needs exactly a magnitude (g) and a direction (v), found {sorted(parts)}"
            )
        g, v = parts["g"], parts["v"]
        # The same kernel nn.utils.weight_norm evaluates, so the folded weight is what it computed.
        out[key] = torch._weight_norm(v, g, _norm_dim(g, v, key))
    return out


_HIFIGAN_KEY = re.compile(r"^(conv_pre|conv_post|ups\.\d+|resblocks\.\d+\.convs[12]\.\d+)\.(weight|bias)$")
_SPEECHT5_KEY = re.compile(r"^(conv_pre|conv_post|upsampler\.\d+|resblocks\.\d+\.convs[12]\.\d+)\.(weight|bias)$")


def hifigan_state_dict_to_speecht5(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original HiFi-GAN ``Generator`` keys to ``SpeechT5HifiGan`` keys.

    Weight norm, if still present, is folded into plain weights; the identity ``mean``
    (zeros) and ``scale`` (ones) buffers SpeechT5HifiGan carries are added.
    """
    sd = _fold_weight_norm(sd)
    unexpected = [k for k in sd if not _HIFIGAN_KEY.match(k)]
    if unexpected:
        raise KeyError(f"{len(unexpected)} HiFi-GAN keys cannot be mapped: {_first(unexpected)}")
    if "conv_pre.weight" not in sd:
        raise KeyError("HiFi-GAN state dict has no conv_pre.weight")
    out = {re.sub(r"^ups\.", "upsampler.", k): t for k, t in sd.items()}
    pre = sd["conv_pre.weight"]
    out["mean"] = torch.zeros(pre.shape[1], dtype=pre.dtype)
    out["scale"] = torch.ones(pre.shape[1], dtype=pre.dtype)
    return out


def hifigan_state_dict_from_speecht5(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``SpeechT5HifiGan`` keys back to the original ``Generator`` layout (no weight norm).

    Raises ValueError if ``mean``/``scale`` are not the identity, which the original
    Generator cannot express.
    """
    sd = dict(sd)
    mean, scale = sd.pop("mean", None), sd.pop("scale", None)
    if (mean is not None and bool(mean.any())) or (scale is not None and not bool((scale == 1).all())):
        raise ValueError("SpeechT5HifiGan mean/scale are not 0/1: the original HiFi-GAN has no input normalisation")
    unexpected = [k for k in sd if not _SPEECHT5_KEY.match(k)]
    if unexpected:
        raise KeyError(f"{len(unexpected)} SpeechT5HifiGan keys cannot be mapped: {_first(unexpected)}")
    return {re.sub(r"^upsampler\.", "ups.", k): t for k, t in sd.items()}


# -- building modules ------------------------------------------------------------------------


def _load_exact(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    expected = set(model.state_dict())
    missing, unexpected = expected - set(sd), set(sd) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_first(unexpected)}")
        raise KeyError(f"{what} state dict does not fit the model; " + "; ".join(parts))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{what} state dict does not fit the model: {err}") from err


def build_vae(vae_config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> AutoencoderKL:
    """diffusers ``AutoencoderKL`` (eval mode) from TANGO's VAE config and original state dict.

    ``state_dict`` is in the original layout, as in ``pytorch_model_vae.bin``; its
    ``vocoder.*`` keys are ignored (see :func:`build_vocoder`).
    """
    vae = AutoencoderKL(**vae_config_to_diffusers(vae_config))
    _load_exact(vae, vae_state_dict_to_diffusers(state_dict), "VAE")
    return vae.eval()


def build_vocoder(cfg: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> SpeechT5HifiGan:
    """``SpeechT5HifiGan`` (eval mode) from an original HiFi-GAN config and Generator state dict.

    ``state_dict`` has the Generator's own keys (``vocoder.`` stripped, see
    :func:`split_vocoder`), with or without weight norm.
    """
    vocoder = SpeechT5HifiGan(hifigan_config_to_speecht5(cfg))
    _load_exact(vocoder, hifigan_state_dict_to_speecht5(state_dict), "HiFi-GAN")
    return vocoder.eval()
