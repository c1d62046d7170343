"""nrt-mini's text-to-audio training: a smoke run writes a loadable model, and a stopped run continues."""

import torch

from nrt.backbones.tango import load_tango
from nrt.mini import train_t2a
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


def test_the_learning_rate_warms_up_then_decays_over_steps_or_time():
    config = TrainConfig(steps=1000, lr=1e-3, warmup=100, max_minutes=10)
    assert config.lr_at(0) < config.lr_at(99) <= 1e-3
    assert config.lr_at(550) < config.lr_at(200)
    # half the time budget spent at step 200: the decay follows whichever is further along
    assert config.lr_at(200, minutes=5) < config.lr_at(200, minutes=0)
    assert config.lr_at(999) < 1e-5
