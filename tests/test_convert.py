"""Parity of nrt's converted VAE, vocoder and mel front end with the original AudioLDM code.

The reference is the ``audioldm`` package (the original classes TANGO builds). Small
instances are saved the way TANGO saves them, read back with ``weights_only=True``,
converted, and both sides run on the same input.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import types
from pathlib import Path

import librosa
import pytest
import torch
from diffusers import AutoencoderKL

from nrt.backbones.convert import (
    HIFIGAN_16K_64,
    build_vae,
    build_vocoder,
    hifigan_config_to_speecht5,
    hifigan_state_dict_from_speecht5,
    hifigan_state_dict_to_speecht5,
    split_vocoder,
    vae_config_to_diffusers,
    vae_state_dict_from_diffusers,
    vae_state_dict_to_diffusers,
)
from nrt.backbones.mel import MelFrontEnd, StftConfig, tacotron_stft_buffers

FORMATS = Path(__file__).resolve().parent / "data" / "tango"  # TANGO's published config files

# Max abs difference relative to the reference's max abs value. In float64 the converted
# VAE agrees to 5e-15 (the arithmetic is the same); in float32 the two orders of summation
# (diffusers runs the mid-block attention through SDPA, the original through bmm) leave
# rounding of 1.6e-6 (posterior) and 4.8e-6 (decoded mel) here. The vocoder runs the very
# same ops and agrees exactly.
REL_TOL = {torch.float64: 1e-12, torch.float32: 2e-5}

SMALL_DDCONFIG = {
    "double_z": True,
    "z_channels": 8,
    "resolution": 256,
    "downsample_time": False,
    "in_channels": 1,
    "out_ch": 1,
    "ch": 32,  # the original GroupNorm has 32 groups
    "ch_mult": [1, 2, 4],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}
SMALL_VAE_CONFIG = {
    "image_key": "fbank",
    "subband": 1,
    "embed_dim": 8,
    "time_shuffle": 1,
    "ddconfig": SMALL_DDCONFIG,
    "scale_factor": 0.75,
}
SMALL_HIFIGAN = {
    **HIFIGAN_16K_64,
    "upsample_initial_channel": 32,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# -- the reference package -------------------------------------------------------------------


@pytest.fixture(scope="module")
def audioldm() -> types.SimpleNamespace:
    """The original classes, imported without the package ``__init__`` (which needs torchaudio)."""
    spec = importlib.util.find_spec("audioldm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("audioldm is not installed (pip install --no-deps audioldm==0.1.1 einops progressbar)")
    root = spec.submodule_search_locations[0]
    saved = {name: sys.modules.get(name) for name in ("audioldm", "audioldm.audio")}
    try:
        for name, path in (("audioldm", root), ("audioldm.audio", f"{root}/audio")):
            if name not in sys.modules:
                stub = types.ModuleType(name)
                stub.__path__ = [path]
                sys.modules[name] = stub
        from audioldm.audio import stft
        from audioldm.hifigan import AttrDict, models
        from audioldm.variational_autoencoder import autoencoder
    except ImportError as err:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
        pytest.skip(f"audioldm's submodules do not import here: {err}")
    return types.SimpleNamespace(
        AutoencoderKL=autoencoder.AutoencoderKL, Generator=models.Generator, AttrDict=AttrDict, stft=stft
    )


def small_generator(audioldm, cfg: dict, weight_norm: bool) -> torch.nn.Module:
    """A small original HiFi-GAN with random weights of unit-scale activations."""
    gen = audioldm.Generator(audioldm.AttrDict(cfg))
    if not weight_norm:
        gen.remove_weight_norm()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                conv = gen.get_submodule(name.rsplit(".", 1)[0])
                # Conv1d weights are [out, in, k], ConvTranspose1d weights [in, out, k].
                fan_in = p.shape[0 if isinstance(conv, torch.nn.ConvTranspose1d) else 1] * p.shape[2]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    return gen.eval()


@pytest.fixture(scope="module")
def tango_checkpoint(audioldm, tmp_path_factory) -> tuple[torch.nn.Module, dict]:
    """A small original VAE (with a small vocoder), saved and reloaded as TANGO does."""
    torch.manual_seed(0)
    vae = audioldm.AutoencoderKL(ddconfig=SMALL_DDCONFIG, embed_dim=SMALL_VAE_CONFIG["embed_dim"])
    vae.vocoder = small_generator(audioldm, SMALL_HIFIGAN, weight_norm=False)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        # GroupNorm starts at weight 1, bias 0: make them distinct so a swapped norm shows.
        for module in vae.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=g))
    vae.eval()
    path = tmp_path_factory.mktemp("tango") / "pytorch_model_vae.bin"
    torch.save(vae.state_dict(), path)
    return vae, torch.load(path, weights_only=True)


# -- VAE -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vae_posterior_and_decode_match_the_original(tango_checkpoint, dtype: torch.dtype) -> None:
    original, sd = tango_checkpoint
    original = copy.deepcopy(original).to(dtype)
    vae_sd, _ = split_vocoder(sd)
    vae = build_vae(SMALL_VAE_CONFIG, vae_sd).to(dtype)
    assert vae.config.scaling_factor == SMALL_VAE_CONFIG["scale_factor"]
    tol = REL_TOL[dtype]

    mel = (torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 5).to(dtype)
    with torch.no_grad():
        ref = original.encode(mel)
        got = vae.encode(mel).latent_dist
        assert got.mean.shape == ref.mean.shape == (2, 8, 16, 16)
        assert rel_err(got.mean, ref.mean) < tol
        assert rel_err(got.logvar, ref.logvar) < tol

        z = ref.mean
        ref_mel = original.decode(z)
        got_mel = vae.decode(z).sample
    assert got_mel.shape == ref_mel.shape == mel.shape
    assert rel_err(got_mel, ref_mel) < tol


def test_vae_state_dict_round_trip_is_bit_exact(tango_checkpoint) -> None:
    _, sd = tango_checkpoint
    vae_sd, _ = split_vocoder(sd)
    converted = vae_state_dict_to_diffusers(sd)  # vocoder.* is dropped on the way
    assert not any(k.startswith("vocoder.") for k in converted)
    assert len(converted) == len(vae_sd)
    assert_state_dicts_equal(vae_state_dict_from_diffusers(converted), vae_sd)

    diffusers_sd = AutoencoderKL(**vae_config_to_diffusers(SMALL_VAE_CONFIG)).state_dict()
    assert_state_dicts_equal(vae_state_dict_to_diffusers(vae_state_dict_from_diffusers(diffusers_sd)), diffusers_sd)


def test_decoder_levels_are_reversed(tango_checkpoint) -> None:
    _, sd = tango_checkpoint
    converted = vae_state_dict_to_diffusers(sd)
    # The original's decoder.up[0] works at full resolution; diffusers lists it last.
    assert torch.equal(converted["decoder.up_blocks.2.resnets.0.conv1.weight"], sd["decoder.up.0.block.0.conv1.weight"])
    assert torch.equal(
        converted["decoder.up_blocks.0.upsamplers.0.conv.weight"], sd["decoder.up.2.upsample.conv.weight"]
    )
    assert converted["encoder.mid_block.attentions.0.to_q.weight"].shape == (128, 128)


def test_mustango_config_builds_the_same_vae(audioldm) -> None:
    cfg = json.loads((FORMATS / "mustango-vae_config.json").read_text())
    original = audioldm.AutoencoderKL(**{k: v for k, v in cfg.items() if k != "scale_factor"})
    original_sd = original.state_dict()
    assert len(original_sd) == 398
    vae_sd, vocoder_sd = split_vocoder(original_sd)

    kwargs = vae_config_to_diffusers(cfg)
    assert kwargs["scaling_factor"] == cfg["scale_factor"]
    assert kwargs["block_out_channels"] == [128, 256, 512] and kwargs["latent_channels"] == 8
    vae = AutoencoderKL(**kwargs)
    converted = vae_state_dict_to_diffusers(original_sd)
    target = vae.state_dict()
    assert sorted(converted) == sorted(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    n_params = sum(p.numel() for p in vae.parameters())
    assert n_params == sum(t.numel() for t in vae_sd.values())
    assert n_params + sum(t.numel() for t in vocoder_sd.values()) == sum(p.numel() for p in original.parameters())

    # The vocoder TANGO ships is HIFIGAN_16K_64, weight norm removed: it loads strictly.
    vocoder = build_vocoder(HIFIGAN_16K_64, vocoder_sd)
    assert vocoder.config.model_in_dim == 64 and vocoder.config.upsample_initial_channel == 1024


# -- vocoder ---------------------------------------------------------------------------------


def test_vocoder_matches_the_original(tango_checkpoint) -> None:
    original, sd = tango_checkpoint
    _, vocoder_sd = split_vocoder(sd)
    vocoder = build_vocoder(SMALL_HIFIGAN, vocoder_sd)
    assert vocoder.config.normalize_before is False

    log_mel = torch.randn(2, 64, 20, generator=torch.Generator().manual_seed(4)) - 4  # [B, mels, frames]
    with torch.no_grad():
        ref = original.vocoder(log_mel).squeeze(1)
        got = vocoder(log_mel.transpose(1, 2))
    # The first upsampler (rate 5, kernel 16, padding 5) yields 5 * frames + 1 samples, so
    # the waveform is 160 * frames + 32 long, not 160 * frames.
    assert got.shape == ref.shape == (2, 20 * 160 + 32)
    assert ref.std() > 1e-2  # the check means something only if the output is not flat
    assert rel_err(got, ref) < REL_TOL[torch.float32]


def test_vocoder_state_dict_round_trip_is_bit_exact(tango_checkpoint) -> None:
    _, sd = tango_checkpoint
    _, vocoder_sd = split_vocoder(sd)
    converted = hifigan_state_dict_to_speecht5(vocoder_sd)
    assert torch.equal(converted["mean"], torch.zeros(64)) and torch.equal(converted["scale"], torch.ones(64))
    assert "upsampler.0.weight" in converted and "ups.0.weight" not in converted
    assert_state_dicts_equal(hifigan_state_dict_from_speecht5(converted), vocoder_sd)


def test_weight_norm_is_folded(audioldm) -> None:
    with_norm = small_generator(audioldm, SMALL_HIFIGAN, weight_norm=True)
    sd = with_norm.state_dict()
    assert any(k.endswith("weight_g") for k in sd)
    vocoder = build_vocoder(SMALL_HIFIGAN, sd)

    log_mel = torch.randn(1, 64, 12, generator=torch.Generator().manual_seed(5)) - 4
    with torch.no_grad():
        ref = with_norm(log_mel).squeeze(1)
        got = vocoder(log_mel.transpose(1, 2))
    assert rel_err(got, ref) < REL_TOL[torch.float32]

    # Folding computes what remove_weight_norm computes, bit for bit.
    with_norm.remove_weight_norm()
    folded = hifigan_state_dict_from_speecht5(hifigan_state_dict_to_speecht5(sd))
    assert_state_dicts_equal(folded, with_norm.state_dict())

    # The parametrizations spelling of the same weights folds to the same tensors.
    renamed = {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    assert_state_dicts_equal(hifigan_state_dict_from_speecht5(hifigan_state_dict_to_speecht5(renamed)), folded)


# -- mel front end ---------------------------------------------------------------------------


@pytest.fixture()
def tacotron_stft(audioldm, monkeypatch):
    """audioldm's TacotronSTFT class, with its librosa 0.9 positional calls made keyword calls."""
    def pad_center(data, size, **kwargs):
        return librosa.util.pad_center(data, size=size, **kwargs)

    def mel(sr, n_fft, n_mels, fmin, fmax):
        return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)

    monkeypatch.setattr(audioldm.stft, "pad_center", pad_center)
    monkeypatch.setattr(audioldm.stft, "librosa_mel_fn", mel)
    return audioldm.stft.TacotronSTFT


def test_mel_front_end_matches_tacotron_stft(tacotron_stft) -> None:
    cfg = json.loads((FORMATS / "mustango-stft_config.json").read_text())
    wave = torch.rand(2, 16000, generator=torch.Generator().manual_seed(6)) - 0.5
    with torch.no_grad():
        ref, _, _ = tacotron_stft(**cfg).mel_spectrogram(wave)
        got = MelFrontEnd(StftConfig.from_dict(cfg))(wave)
    assert ref.shape == (2, 64, 101) and got.shape == (2, 101, 64)
    # Log-mel, so an absolute tolerance: the DFT by convolution and torch.stft's FFT differ
    # by float32 rounding, measured max 1.2e-6 (mean 1.7e-7) on log values in -2.8..-0.3.
    assert (got.transpose(1, 2) - ref).abs().max().item() < 1e-4


def test_stft_buffers_equal_tacotron_stft_state(tacotron_stft) -> None:
    """What nrt writes as pytorch_model_stft.bin is the original module's state dict."""
    cfg = json.loads((FORMATS / "mustango-stft_config.json").read_text())
    reference = tacotron_stft(**cfg).state_dict()
    ours = tacotron_stft_buffers(StftConfig.from_dict(cfg))
    assert ours.keys() == reference.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], reference[key], atol=1e-6, rtol=1e-5)


# -- what cannot be mapped -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"subband": 2}, "subband"),
        ({"ddconfig": {**SMALL_DDCONFIG, "attn_resolutions": [64]}}, "attn_resolutions"),
        ({"ddconfig": {**SMALL_DDCONFIG, "double_z": False}}, "double_z"),
        ({"ddconfig": {**SMALL_DDCONFIG, "z_channels": 4}}, "z_channels"),
        ({"ddconfig": {**SMALL_DDCONFIG, "ch": 16}}, "multiples of 32"),
        ({"ddconfig": {**SMALL_DDCONFIG, "downsample_time_stride4_levels": [1]}}, "stride4"),
        ({"mystery": 1}, "mystery"),
    ],
)
def test_unmappable_vae_configs_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vae_config_to_diffusers({**SMALL_VAE_CONFIG, **change})


def test_attention_at_an_unused_resolution_is_accepted() -> None:
    # The original only adds attention where a level's resolution is listed (256, 128, 64 here).
    kwargs = vae_config_to_diffusers({**SMALL_VAE_CONFIG, "ddconfig": {**SMALL_DDCONFIG, "attn_resolutions": [32]}})
    assert kwargs["block_out_channels"] == [32, 64, 128]


def test_unknown_or_missing_keys_fail_loudly(tango_checkpoint) -> None:
    _, sd = tango_checkpoint
    with pytest.raises(KeyError, match="encoder.down.0.attn.0.q.weight"):
        vae_state_dict_to_diffusers({**sd, "encoder.down.0.attn.0.q.weight": torch.zeros(32, 32, 1, 1)})
    incomplete = {k: v for k, v in sd.items() if k != "decoder.norm_out.bias"}
    with pytest.raises(KeyError, match="decoder.conv_norm_out.bias"):
        build_vae(SMALL_VAE_CONFIG, incomplete)
    bigger = {**SMALL_VAE_CONFIG, "ddconfig": {**SMALL_DDCONFIG, "ch": 64}}
    with pytest.raises(ValueError, match="does not fit"):
        build_vae(bigger, sd)

    _, vocoder_sd = split_vocoder(sd)
    with pytest.raises(KeyError, match="ups.9.alpha"):
        hifigan_state_dict_to_speecht5({**vocoder_sd, "ups.9.alpha": torch.zeros(1)})
    converted = hifigan_state_dict_to_speecht5(vocoder_sd)
    with pytest.raises(ValueError, match="mean/scale"):
        hifigan_state_dict_from_speecht5({**converted, "mean": torch.ones(64)})


def test_unmappable_hifigan_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="resblock"):
        hifigan_config_to_speecht5({**HIFIGAN_16K_64, "resblock": "2"})
    with pytest.raises(ValueError, match="dilation"):
        hifigan_config_to_speecht5({**HIFIGAN_16K_64, "resblock_dilation_sizes": [[1, 3]] * 3})
