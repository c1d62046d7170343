"""Steps 1 and 2: what each may change, and that the fit really reconstructs."""

import pytest
import torch
from diffusers import DDPMScheduler

from nrt.audio import load_audio
from nrt.backbones import load_backbone
from nrt.edit import interpolate, prepare_input
from nrt.errors import InputError
from nrt.finetune import fitted_unet
from nrt.fit import fit
from nrt.loss import ProbeSet, prediction_target
from nrt.sample import sample
from nrt.settings import FitConfig, SampleConfig

PROMPT = "a dog barking"


@pytest.fixture()
def wave(backbone, tone_wav):
    return prepare_input(backbone, load_audio(tone_wav)).wave


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_step1_lowers_the_probe_loss_and_leaves_the_unet_alone(backbone, wave):
    before = _snapshot(backbone.unet)
    result = fit(backbone, wave, PROMPT, FitConfig(embed_steps=40, embed_lr=1e-2, tune_steps=0), progress=False)
    assert result.losses["probe_e_opt"] < result.losses["probe_e_tgt"]
    assert not torch.equal(result.e_opt.embeds, result.e_tgt.embeds)
    assert torch.equal(result.e_opt.mask, result.e_tgt.mask)
    assert _same(before, _snapshot(backbone.unet))


def test_full_finetune_changes_a_copy_of_the_unet(backbone, wave):
    before = _snapshot(backbone.unet)
    config = FitConfig(method="full", embed_steps=5, tune_steps=30, tune_lr=1e-3, batch_size=2)
    result = fit(backbone, wave, PROMPT, config, progress=False)
    assert _same(before, _snapshot(backbone.unet))  # the shared base is untouched
    assert result.unet_state.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], result.unet_state[k])]
    assert len(changed) > len(before) // 2
    assert result.losses["probe_fitted"] < 0.8 * result.losses["probe_e_opt"]


def test_lora_trains_only_adapter_weights(backbone, wave):
    before = _snapshot(backbone.unet)
    config = FitConfig(method="lora", embed_steps=3, tune_steps=20, tune_lr=1e-2, lora_rank=4)
    result = fit(backbone, wave, PROMPT, config, progress=False)
    assert _same(before, _snapshot(backbone.unet))  # adapter removed again, base bit-identical
    targets = {"to_q", "to_k", "to_v", "to_out.0"}
    expected = sum(
        config.lora_rank * (m.in_features + m.out_features)
        for name, m in backbone.unet.named_modules()
        if isinstance(m, torch.nn.Linear) and any(name.endswith("." + t) for t in targets)
    )
    assert all("lora_" in k for k in result.unet_state)
    assert sum(v.numel() for v in result.unet_state.values()) == expected
    assert any(v.abs().sum() > 0 for k, v in result.unet_state.items() if "lora_B" in k)  # B left zero
    assert result.losses["probe_fitted"] < result.losses["probe_e_opt"]


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_the_loss_target_follows_prediction_type(kind):
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)
    latents, noise = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    t = torch.tensor([10, 900])
    target = prediction_target(scheduler, latents, noise, t)
    alpha = scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    expected = noise if kind == "epsilon" else alpha * noise - sigma * latents
    torch.testing.assert_close(target, expected)


def test_epsilon_models_fit_too(tiny_eps_dir, tone_wav):
    backbone = load_backbone(str(tiny_eps_dir), device="cpu")
    assert backbone.scheduler_config["prediction_type"] == "epsilon"
    wave = prepare_input(backbone, load_audio(tone_wav)).wave
    result = fit(backbone, wave, PROMPT, FitConfig(method="full", embed_steps=5, tune_steps=20, tune_lr=1e-3),
                 progress=False)
    assert result.losses["probe_fitted"] < result.losses["probe_e_tgt"]


def test_fit_reconstructs_and_eta_moves_away(backbone, wave):
    """After fitting, η=0 lands far closer to the input's latent than the unfitted model; η=1 less close."""
    wave = wave[:16000]
    latents = backbone.encode(wave.unsqueeze(0))
    config = SampleConfig(steps=20, scheduler="ddim", guidance=1.0)
    e_tgt = backbone.encode_text([PROMPT])
    unfitted = sample(backbone, e_tgt, latents.shape[1:], config, [0], progress=False)
    d_unfitted = (unfitted - latents).pow(2).mean().item()

    fit_config = FitConfig(method="full", embed_steps=50, embed_lr=1e-2, tune_steps=50, tune_lr=1e-3, batch_size=4)
    result = fit(backbone, wave, PROMPT, fit_config, progress=False)
    with fitted_unet(backbone, "full", result.unet_state) as unet:
        outputs = sample(backbone, interpolate(result.e_tgt, result.e_opt, [0.0, 1.0]), latents.shape[1:],
                         config, [0, 0], unet=unet, progress=False)
    d0, d1 = [(o - latents[0]).pow(2).mean().item() for o in outputs]
    assert d0 < 0.5 * d_unfitted  # the stated margin: half the unfitted model's distance
    assert d1 > d0


def test_probe_set_is_fixed():
    a = ProbeSet.make(torch.Size([1, 8, 4, 4]), 1000, seed=3)
    b = ProbeSet.make(torch.Size([1, 8, 4, 4]), 1000, seed=3)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    assert a.timesteps.min() == 0 and a.timesteps.max() == 999


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "dora"}, "method"),
        ({"embed_steps": -1}, "embed_steps"),
        ({"embed_lr": 0}, "embed_lr"),
        ({"tune_lr": 2.0}, "tune_lr"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"seed": -1}, "seed"),
    ],
)
def test_fit_config_names_the_bad_value(kwargs, message):
    with pytest.raises(InputError, match=message):
        FitConfig(**kwargs)


def test_lora_default_rate_differs_from_full():
    assert FitConfig(method="full").resolved_tune_lr == 1e-6
    assert FitConfig(method="lora").resolved_tune_lr == 3e-4
