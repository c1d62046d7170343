"""nrt-mini's text-to-audio training: a smoke run writes a loadable model, and a stopped run continues."""

import json

import pytest
import torch

from nrt.backbones.tango import load_tango, load_weights
from nrt.errors import ModelNotFoundError
from nrt.mini import train_t2a
from nrt.mini.bank import SceneBank
from nrt.mini.training import CHECKPOINT, TrainConfig


def test_training_continues_from_its_checkpoint_and_writes_a_loadable_model(tmp_path):
    run, out = tmp_path / "run", tmp_path / "model"
    common = ["--smoke", "--run-dir", str(run), "--out", str(out), "--workers", "1", "--device", "cpu"]
    assert train_t2a.main([*common, "--steps", "3"]) == 0
    first = torch.load(run / CHECKPOINT, weights_only=False)
    assert first["step"] == 3 and len(first["losses"]) == 3

    assert train_t2a.main([*common, "--steps", "5"]) == 0
    state = torch.load(run / CHECKPOINT, weights_only=False)
    assert state["step"] == 5 and state["losses"][:3] == first["losses"]

    backbone = load_tango(out).to("cpu")
    assert backbone.latent_shape(40960) == (16, 36, 8)
    wave = backbone.decode(torch.randn(1, *backbone.latent_shape(8000)), 8000)
    assert wave.shape == (1, 8000) and torch.isfinite(wave).all()

    def written_matches(weights: str) -> bool:
        unet = load_tango(out).unet.state_dict()
        return all(torch.equal(unet[k], v.half().float()) for k, v in weights_of(weights).items())

    def weights_of(name: str) -> dict:
        return {k.removeprefix("unet."): v for k, v in state[name].items() if k.startswith("unet.")}

    # the default writes the moving average; --weights raw the last step's weights
    assert written_matches("ema") and not written_matches("model")
    assert train_t2a.main([*common, "--steps", "5", "--weights", "raw"]) == 0
    assert written_matches("model") and not written_matches("ema")

    # a new run started from the written model begins with its weights and its codec statistics
    bank = SceneBank(8, workers=1, progress=False)
    parts = train_t2a.build_parts(bank, torch.device("cpu"), seed=1, init=out)
    loaded = load_tango(out)
    assert all(torch.equal(parts.model.unet.state_dict()[k], v) for k, v in loaded.unet.state_dict().items())
    text = loaded.text_encoder.state_dict()
    assert all(torch.equal(v, text[k].float()) for k, v in parts.model.text_encoder.state_dict().items())
    fresh = train_t2a.build_parts(bank, torch.device("cpu"), seed=1)
    assert not torch.equal(fresh.model.unet.conv_in.weight, parts.model.unet.conv_in.weight)
    vae = load_weights(out / "pytorch_model_vae.bin")
    assert torch.equal(parts.codec.mean, vae["mean"]) and torch.equal(parts.codec.std, vae["std"])
    init = ["--smoke", "--workers", "1", "--device", "cpu", "--steps", "2", "--init", str(out)]
    assert train_t2a.main([*init, "--run-dir", str(tmp_path / "run2"), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "main_config.json").read_text())["init"] == str(out)
    with pytest.raises(ModelNotFoundError, match="holds no trained nrt-mini"):
        train_t2a.build_parts(bank, torch.device("cpu"), seed=1, init=tmp_path)


def test_the_learning_rate_warms_up_then_decays_over_steps_or_time():
    config = TrainConfig(steps=1000, lr=1e-3, warmup=100, max_minutes=10)
    assert config.lr_at(0) < config.lr_at(99) <= 1e-3
    assert config.lr_at(550) < config.lr_at(200)
    # half the time budget spent at step 200: the decay follows whichever is further along
    assert config.lr_at(200, minutes=5) < config.lr_at(200, minutes=0)
    assert config.lr_at(999) < 1e-5


def test_the_ema_copies_during_warm_up_then_averages_ever_longer():
    config = TrainConfig(steps=10_000, warmup=100, ema_decay=0.999)
    assert config.ema_decay_at(0) == config.ema_decay_at(99) == 0.0
    assert config.ema_decay_at(100) == 0.1  # (1 + 0) / (10 + 0)
    assert config.ema_decay_at(100) < config.ema_decay_at(200) < config.ema_decay_at(1000) < 0.999
    assert config.ema_decay_at(9999) == 0.999
