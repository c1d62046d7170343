"""Sampling, step 3, inpainting and SDEdit on the tiny backbone."""

import numpy as np
import pytest
import soundfile as sf
import torch

from nrt.audio import load_audio
from nrt.bundle import load_bundle, save_bundle
from nrt.edit import generate, prepare_input
from nrt.errors import InputError
from nrt.fit import fit
from nrt.fit_clip import latent_weight
from nrt.sample import sample
from nrt.sdedit import sdedit
from nrt.settings import FitConfig, SampleConfig, check_etas, check_seed

QUICK = SampleConfig(steps=8)


def _bundle(backbone, clip, tmp_path, mask=None, method="lora"):
    prepared = prepare_input(backbone, clip)
    result = fit(backbone, prepared.wave, "beeps", FitConfig(method=method, embed_steps=3, tune_steps=3),
                 latent_weight=latent_weight(backbone, clip, mask), progress=False)
    edit_type = "inpainting" if mask else "addition"
    path = save_bundle(tmp_path / "bundle", result, backbone.info, clip, target_prompt="beeps",
                       edit_type=edit_type, mask=mask)
    return load_bundle(path, backbone.info)


def test_a_seed_reproduces_and_batching_does_not_change_outputs(backbone):
    cond = backbone.encode_text(["rain"]).repeat(3)
    shape = backbone.latent_shape(8000)
    batch = sample(backbone, cond, shape, QUICK, [5, 5, 6], progress=False)
    alone = sample(backbone, backbone.encode_text(["rain"]), shape, QUICK, [5], progress=False)
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch[1], batch[0])
    assert not torch.allclose(batch[2], batch[0])


def test_ddim_is_deterministic_and_shaped(backbone):
    cond = backbone.encode_text(["rain"])
    config = SampleConfig(steps=5, scheduler="ddim")
    a = sample(backbone, cond, backbone.latent_shape(8000), config, [1], progress=False)
    b = sample(backbone, cond, backbone.latent_shape(8000), config, [1], progress=False)
    assert torch.equal(a, b)


def test_generate_gives_the_input_shape_at_every_eta(backbone, tmp_path):
    path = tmp_path / "in.wav"
    rate, n = 44100, 44100 + 123
    t = np.arange(n) / rate
    sf.write(path, np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 220 * t)], 1) * 0.3, rate,
             subtype="PCM_24")
    clip = load_audio(path)
    bundle = _bundle(backbone, clip, tmp_path)
    outputs = generate(backbone, bundle, [0.0, 0.5, 1.0], QUICK, seed=2, progress=False)
    assert len(outputs) == 3
    for audio in outputs:
        assert audio.shape == (n, 2) and audio.dtype == np.float32 and np.isfinite(audio).all()
    single = generate(backbone, bundle, [0.5], QUICK, seed=2, progress=False)[0]
    np.testing.assert_allclose(single, outputs[1], atol=1e-4)
    again = generate(backbone, bundle, [0.5], QUICK, seed=2, progress=False)[0]
    assert np.array_equal(single, again)


def test_inpainting_keeps_the_observed_region(backbone, tmp_path):
    rate = 16000
    t = np.arange(int(1.5 * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 500 * t))[:, None]
    audio[int(0.5 * rate): int(0.9 * rate)] = 0.0
    sf.write(tmp_path / "gap.wav", audio, rate, subtype="PCM_16")
    clip = load_audio(tmp_path / "gap.wav")
    mask = [(0.5, 0.9)]
    bundle = _bundle(backbone, clip, tmp_path, mask=mask)
    assert bundle.meta["edit_type"] == "inpainting" and bundle.mask == mask
    out = generate(backbone, bundle, [0.7], QUICK, seed=0, progress=False)[0]
    inside = np.zeros(len(out), bool)
    inside[int(0.5 * rate): int(0.9 * rate)] = True
    assert np.array_equal(out[~inside], clip.samples[~inside])  # sample for sample
    middle = slice(int(0.6 * rate), int(0.8 * rate))
    assert np.abs(out[middle]).max() > 0  # the model filled the gap


def test_inpainting_gap_is_out_of_the_fit_loss(backbone, tone_wav):
    clip = load_audio(tone_wav)
    weight = latent_weight(backbone, clip, [(0.25, 0.5)])
    frames = backbone.latent_shape(int(clip.duration * backbone.sample_rate))[1]
    assert weight.shape == (1, 1, frames, 1)
    fps = backbone.latent_frames_per_second
    assert weight[0, 0, int(0.3 * fps), 0] == 0 and weight[0, 0, int(0.8 * fps), 0] == 1


def test_sdedit_strength_controls_distance_from_the_input(backbone, tone_wav):
    clip = load_audio(tone_wav)
    low, high = sdedit(backbone, clip, "a bell", [0.1, 1.0], SampleConfig(steps=10), seed=0, progress=False)
    assert low.shape == clip.samples.shape == high.shape
    # the tiny decoder is random, so compare where the strength acts: in the latent
    latents = backbone.encode(prepare_input(backbone, clip).wave.unsqueeze(0))
    cond = backbone.encode_text(["a bell"])
    config = SampleConfig(steps=10)
    distance = {
        s: (sample(backbone, cond, latents.shape[1:], config, [0], init=latents, strength=s, progress=False)
            - latents).pow(2).mean().item()
        for s in (0.1, 0.5, 1.0)
    }
    assert distance[0.1] < distance[0.5] < distance[1.0]


@pytest.mark.parametrize("etas", [[], [1.5], [-0.1], ["x"], [True]])
def test_bad_eta_is_refused(etas):
    with pytest.raises(InputError, match="eta"):
        check_etas(etas)


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 1001}, {"guidance": 21}, {"guidance": -1},
                                    {"scheduler": "euler"}])
def test_bad_sampling_settings_are_refused(kwargs):
    with pytest.raises(InputError):
        SampleConfig(**kwargs)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_bad_seed_is_refused(seed):
    with pytest.raises(InputError, match="seed"):
        check_seed(seed)


def test_half_precision_runs_end_to_end(tiny_dir, tone_wav, tmp_path):
    from nrt.backbones import load_backbone

    backbone = load_backbone(str(tiny_dir), device="cpu", dtype="bf16")
    assert backbone.unet.dtype == torch.bfloat16 and backbone.vae.dtype == torch.float32
    clip = load_audio(tone_wav)
    bundle = _bundle(backbone, clip, tmp_path, method="full")
    assert all(v.dtype == torch.float32 for v in bundle.unet_state.values())  # trained in float32
    out = generate(backbone, bundle, [0.5], SampleConfig(steps=3), progress=False)[0]
    assert out.shape == clip.samples.shape and np.isfinite(out).all()
