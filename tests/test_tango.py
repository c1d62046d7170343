"""The TANGO loader reads TANGO's own layout: tested on the tiny model written to disk."""

import json
import time

import pytest
import torch

from nrt.backbones import load_backbone
from nrt.backbones.tango import TANGO_FILES, _scheduler_config, _unet_config, load_weights
from nrt.errors import ModelNotFoundError


def test_tiny_is_written_in_tangos_layout(tiny_dir):
    for name in TANGO_FILES:
        assert (tiny_dir / name).exists(), name
    main = load_weights(tiny_dir / "pytorch_model_main.bin")
    prefixes = {k.split(".")[0] for k in main}
    assert prefixes == {"unet", "text_encoder"}
    vae = load_weights(tiny_dir / "pytorch_model_vae.bin")
    # the original AudioLDM key layout, vocoder inside the VAE file
    assert "encoder.down.0.block.0.conv1.weight" in vae
    assert "decoder.up.0.block.0.conv1.weight" in vae
    assert "encoder.mid.attn_1.q.weight" in vae
    assert "vocoder.ups.0.weight" in vae and "vocoder.conv_pre.weight" in vae
    config = json.loads((tiny_dir / "vae_config.json").read_text())
    assert set(config["ddconfig"]) >= {"ch", "ch_mult", "z_channels", "double_z"}


def test_loader_builds_every_component(backbone):
    assert backbone.info.kind == "tango"
    assert backbone.info.revision.startswith("local-")
    assert backbone.sample_rate == 16000
    assert backbone.frames_multiple == 32  # VAE 4 x UNet 8, as TANGO
    assert backbone.scheduler_config["prediction_type"] == "v_prediction"
    assert backbone.scheduler_config["clip_sample"] is False
    assert not any(p.requires_grad for p in backbone.unet.parameters())


def test_real_tango_configs_are_carried_as_data(tmp_path):
    """main_config.json of a real snapshot names files that the snapshot lacks."""
    main = {"unet_model_config_path": "configs/diffusion_model_config.json",
            "scheduler_name": "stabilityai/stable-diffusion-2-1"}
    unet = _unet_config(tmp_path, main)
    assert unet["cross_attention_dim"] == 1024
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    scheduler = _scheduler_config(main)
    assert scheduler["prediction_type"] == "v_prediction"
    assert scheduler["num_train_timesteps"] == 1000
    assert scheduler["beta_schedule"] == "scaled_linear"
    assert (scheduler["beta_start"], scheduler["beta_end"]) == (0.00085, 0.012)
    assert scheduler["clip_sample"] is False and scheduler["steps_offset"] == 1


def test_mustango_blocks_are_refused_clearly(tmp_path):
    main = {"unet_model_config_path": "configs/music_diffusion_model_config.json"}
    with pytest.raises(ModelNotFoundError, match="music_diffusion_model_config"):
        _unet_config(tmp_path, main)


@pytest.mark.parametrize("seconds", [0.5, 1.37, 2.0])
def test_encode_decode_keep_the_exact_length(backbone, seconds):
    n = int(seconds * backbone.sample_rate) + 7
    wave, _ = backbone.normalize(torch.randn(n) * 0.1)
    latents = backbone.encode(wave.unsqueeze(0))
    assert latents.shape[1:] == backbone.latent_shape(n)
    assert (latents.shape[2] * backbone.vae_downsample) % backbone.frames_multiple == 0
    assert backbone.decode(latents, n).shape == (1, n)


def test_normalize_is_undone_exactly(backbone):
    wave = torch.randn(4000, dtype=torch.float64) * 0.3 + 0.01
    levelled, loudness = backbone.normalize(wave)
    assert levelled.abs().max().item() == pytest.approx(0.5)
    assert levelled.mean().item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(loudness.undo(levelled), wave)


def test_text_mask_and_null_condition(backbone):
    cond = backbone.encode_text(["a dog barking", "rain"])
    assert cond.embeds.shape[:2] == cond.mask.shape
    assert cond.mask[0].sum() > cond.mask[1].sum()  # padded to the longer prompt
    null = backbone.null_condition(cond)
    assert null.embeds.shape == cond.embeds.shape
    assert null.mask[:, 0].all() and not null.mask[:, 1:].any()  # "" is one end-of-sequence token


def test_missing_files_are_named(tmp_path):
    (tmp_path / "main_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="pytorch_model_main.bin"):
        load_backbone(str(tmp_path), device="cpu")


def test_unknown_hub_model_fails_in_seconds():
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        load_backbone("declare-lab/no-such-model", device="cpu")
    assert time.perf_counter() - started < 10
    message = str(info.value)
    assert "\n" not in message and "declare-lab/no-such-model" in message and "--model DIR" in message


def test_builtin_tiny_is_cached_once(monkeypatch, tmp_path):
    from nrt.backbones import tiny

    monkeypatch.setenv("NRT_CACHE", str(tmp_path))
    first = tiny.ensure_tiny()
    stamp = (first / "pytorch_model_main.bin").stat().st_mtime_ns
    assert tiny.ensure_tiny() == first
    assert (first / "pytorch_model_main.bin").stat().st_mtime_ns == stamp
    assert load_backbone("tiny", device="cpu").info.model_id == "tiny"
