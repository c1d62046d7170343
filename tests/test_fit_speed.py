"""The fit's speed settings (measured on a GPU by benchmarks/gpu_edit.py): what each does, and
that off, the default on every device, leaves the fit as it was."""

import pytest
import torch

import nrt.embedding
import nrt.finetune
from nrt.audio import load_audio
from nrt.edit import prepare_input
from nrt.fit import fit
from nrt.settings import FitConfig
from nrt.sweep.config import fit_key

PROMPT = "a dog barking"


@pytest.fixture()
def wave(backbone, tone_wav):
    return prepare_input(backbone, load_audio(tone_wav)).wave[:8000]


def _fit(backbone, wave, **settings):
    torch.manual_seed(0)  # LoRA's A matrices start from the global generator
    config = FitConfig(embed_steps=2, tune_steps=2, **settings)
    return fit(backbone, wave, PROMPT, config, progress=False)


def _same_result(a, b) -> bool:
    return torch.equal(a.e_opt.embeds, b.e_opt.embeds) and all(
        torch.equal(a.unet_state[k], b.unet_state[k]) for k in a.unet_state
    )


def test_more_draws_a_step_see_the_same_draws_in_fewer_steps(backbone, wave, monkeypatch):
    """batch_size is the draws-per-step knob: 2 draws a step over half the steps draw as many (t, noise) pairs."""
    seen: list[int] = []

    def counting(draw):
        def wrapped(shape, num_train_timesteps, batch, generator):
            seen.append(batch)
            return draw(shape, num_train_timesteps, batch, generator)

        return wrapped

    monkeypatch.setattr(nrt.embedding, "draw", counting(nrt.embedding.draw))
    monkeypatch.setattr(nrt.finetune, "draw", counting(nrt.finetune.draw))
    fit(backbone, wave, PROMPT, FitConfig(embed_steps=4, tune_steps=6), progress=False)
    one_a_step = list(seen)
    seen.clear()
    fit(backbone, wave, PROMPT, FitConfig(embed_steps=2, tune_steps=3, batch_size=2), progress=False)
    assert one_a_step == [1] * 10 and seen == [2] * 5
    assert sum(one_a_step) == sum(seen)


def test_compile_unet_runs_both_steps_through_torch_compile(backbone, wave, monkeypatch):
    plain = _fit(backbone, wave)
    compiled: list[torch.nn.Module] = []

    def fake_compile(module, **kwargs):  # records what would be compiled, runs it as it is
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = _fit(backbone, wave, compile_unet=True)
    assert len(compiled) == 2 and compiled[0] is backbone.unet  # step 1's frozen UNet, step 2's adapted one
    assert _same_result(plain, result)


def test_off_calls_no_compiler_and_repeats_bit_for_bit(backbone, wave, monkeypatch):
    first = _fit(backbone, wave)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile called with compile_unet off")

    monkeypatch.setattr(torch, "compile", refuse)
    assert _same_result(first, _fit(backbone, wave, compile_unet=False, fused_adam=False))


def test_fused_adam_takes_the_same_steps_within_rounding(backbone, wave, monkeypatch):
    made: list[dict] = []
    adam = torch.optim.Adam

    def recording(params, **kwargs):
        made.append(kwargs)
        return adam(params, **kwargs)

    plain = _fit(backbone, wave, method="full", tune_lr=1e-3)
    monkeypatch.setattr(torch.optim, "Adam", recording)
    fused = _fit(backbone, wave, method="full", tune_lr=1e-3, fused_adam=True)
    assert [k.get("fused") for k in made] == [True, True]
    # Adam's first steps move a weight by about the rate whatever the size of its gradient, so
    # where a gradient is near zero, rounding can turn its step around: compare the whole update
    base = backbone.unet.state_dict()

    def update(result) -> torch.Tensor:
        return torch.cat([(result.unet_state[k].float() - base[k].float()).flatten() for k in base])

    assert torch.linalg.norm(update(fused) - update(plain)) < 0.02 * torch.linalg.norm(update(plain))
    torch.testing.assert_close(fused.e_opt.embeds, plain.e_opt.embeds, rtol=1e-3, atol=1e-5)
    assert fused.losses["probe_fitted"] == pytest.approx(plain.losses["probe_fitted"], rel=1e-3)


def test_speed_settings_are_recorded_but_name_no_other_fit():
    """A bundle fitted with them is the same fit to the sweep's cache: its key does not change."""
    clip = {"sha256": "0" * 64, "prompt": PROMPT}
    fast = FitConfig(compile_unet=True, fused_adam=True)
    assert fit_key(fast, "tiny", "bf16", clip) == fit_key(FitConfig(), "tiny", "bf16", clip)
    assert fast.to_dict()["compile_unet"] is True and FitConfig().to_dict()["fused_adam"] is False
