"""nrt-mini: the shipped weights load through the normal loaders, generate what captions say,
and edit: Text CLAP moves toward the target while Audio CLAP stays above unrelated clips'."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from nrt.audio import load_audio
from nrt.backbones import load_backbone
from nrt.backbones.patch import GriffinLimVocoder, PatchAutoencoder
from nrt.bundle import load_bundle, save_bundle
from nrt.clap import ClapScorer
from nrt.defaults import model_defaults
from nrt.edit import generate, prepare_input
from nrt.fit import fit
from nrt.mini.model import CLAP_DIR, T2A_DIR
from nrt.mini.scenes import SAMPLE_RATE, edit_cases, scene_for
from nrt.sample import sample
from nrt.settings import FitConfig, SampleConfig

PACKAGE_LIMIT = 30e6  # bytes of shipped weights


@pytest.fixture(scope="module")
def mini():
    return load_backbone("mini", device="cpu")


@pytest.fixture(scope="module")
def clap():
    return ClapScorer.from_pretrained("mini")


def test_shipped_weights_are_small_and_load(mini, clap):
    size = sum(p.stat().st_size for d in (T2A_DIR, CLAP_DIR) for p in Path(d).rglob("*") if p.is_file())
    assert size <= PACKAGE_LIMIT, f"{size / 1e6:.1f} MB of weights"
    assert isinstance(mini.vae, PatchAutoencoder) and isinstance(mini.vocoder, GriffinLimVocoder)
    assert mini.info.model_id == "mini" and mini.sample_rate == SAMPLE_RATE
    # the trained standardisation, not the identity the class starts with
    assert float(mini.vae.std) > 1.0 and mini.vae.mean.abs().sum() > 0
    assert len(mini.tokenizer("three high beeps, then a church bell")["input_ids"]) == 9  # words + end
    assert clap.sample_rate == SAMPLE_RATE
    assert model_defaults(None).clap == "mini"


def test_the_patch_latent_reconstructs_a_scene(mini):
    wave = torch.from_numpy(scene_for("heldout", 3).render(SAMPLE_RATE)).unsqueeze(0)
    level, _ = mini.normalize(wave)
    latents = mini.encode(level)
    assert latents.shape[1:] == mini.latent_shape(wave.shape[-1])
    # standardised: the model sees roughly unit-scale latents
    assert 0.3 < float(latents.std()) < 3
    front = mini.mel
    rebuilt = mini.decode(latents, wave.shape[-1])
    error = (front(rebuilt) - front(level)).abs().mean()
    assert error < 1.0, error  # natural-log mel units; Griffin-Lim loses phase, not content


@pytest.mark.slow
def test_generation_follows_held_out_captions(mini, clap):
    scenes = [scene_for("heldout", i) for i in range(8)]
    captions = [s.caption(1) for s in scenes]
    shape = mini.latent_shape(len(scenes[0].render(SAMPLE_RATE)))
    config = SampleConfig(steps=25, guidance=3.0, scheduler="ddim")
    latents = sample(mini, mini.encode_text(captions), shape, config, list(range(len(scenes))), progress=False)
    waves = mini.decode(latents, shape[1] * 4 * mini.mel.hop_length).numpy()
    similarity = clap.embed_text(captions) @ clap.embed_audio(list(waves), SAMPLE_RATE).T
    hits = int((similarity.argmax(dim=1) == torch.arange(len(scenes))).sum())
    # chance is 1 of 8; the model card reports 75 % top-1 among 24 held-out captions
    assert hits >= 4, similarity


@pytest.mark.slow
def test_a_short_fit_edits_toward_the_target(mini, clap, tmp_path):
    case = edit_cases(n_per_type=2)[1]  # addition: an engine hum joins quick footsteps over a drone
    assert case.edit_type == "addition"
    path = tmp_path / "input.wav"
    sf.write(path, case.source_audio(), SAMPLE_RATE, subtype="PCM_16")
    clip = load_audio(path)
    prepared = prepare_input(mini, clip)
    defaults = model_defaults("mini")
    config = FitConfig(method="lora", **defaults.fit, tune_lr=defaults.tune_lr["lora"])
    result = fit(mini, prepared.wave, case.target_prompt, config, progress=False)
    saved = save_bundle(tmp_path / "bundle", result, mini.info, clip, target_prompt=case.target_prompt,
                        edit_type="addition")
    outputs = generate(mini, load_bundle(saved, mini.info), [0.0, 1.0], SampleConfig(steps=50, scheduler="ddim"),
                       seed=0, progress=False)
    outputs = [o[:, 0] for o in outputs]
    scores = clap.score(outputs, SAMPLE_RATE, reference=case.source_audio(), reference_rate=SAMPLE_RATE,
                        prompt=case.target_prompt)
    text, audio = scores.text, scores.audio
    assert text[1] > text[0] + 0.05, (text, audio)
    # the floor: Audio CLAP between unrelated held-out scenes
    others = [scene_for("heldout", 100 + i).render(SAMPLE_RATE) for i in range(8)]
    embeds = clap.embed_audio(others, SAMPLE_RATE)
    unrelated = float((embeds @ embeds.T)[~torch.eye(8, dtype=torch.bool)].mean())
    # MODEL_CARD.md: unrelated held-out scenes score about 0 with each other
    assert audio[1] > unrelated + 0.3, (audio, unrelated)
    assert all(np.isfinite(o).all() for o in outputs)
