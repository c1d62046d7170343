"""The AudioLDM 2 backbone on a tiny model written to disk in the diffusers layout."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from nrt.audio import AudioClip, load_audio
from nrt.backbones import load_backbone
from nrt.backbones.audioldm2 import AudioLDM2Backbone, load_audioldm2
from nrt.backbones.base import BackboneInfo, Condition
from nrt.backbones.tiny_audioldm2 import LM_DIM, write_tiny_audioldm2
from nrt.bundle import load_bundle, save_bundle
from nrt.cli import main
from nrt.edit import PreparedBundle, generate, interpolate, prepare_input
from nrt.errors import BundleError, ModelNotFoundError
from nrt.finetune import fitted_unet
from nrt.fit import FitResult, fit
from nrt.sample import invert, sample
from nrt.sdedit import sdedit
from nrt.settings import STARTS, FitConfig, SampleConfig
from tests.conftest import write_tone_clip
from tests.test_audioldm import changed_weights, unet_snapshot

PROMPT = "a dog barking while rain is falling"
OTHER = "church bells ringing"
CLIP_RATE = 22050  # not the model's rate, so that the output must be resampled back
CLIP_SECONDS = 0.9  # not a multiple of the 32-frame padding
T5_DIM = 32  # the tiny T5's width (the tiny TANGO's)
FAST = SampleConfig(steps=3, guidance=3.0, t_start=0.7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_audioldm2(tmp_path_factory.mktemp("tiny-audioldm2"))


@pytest.fixture(scope="module")
def backbone(model_dir: Path) -> AudioLDM2Backbone:
    return load_backbone(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> AudioClip:
    directory = tmp_path_factory.mktemp("clip")
    return load_audio(write_tone_clip(directory / "input.wav", CLIP_SECONDS, CLIP_RATE, channels=2))


# -- loading --------------------------------------------------------------------------------


def test_writer_and_loader_round_trip(model_dir: Path, backbone: AudioLDM2Backbone) -> None:
    assert isinstance(backbone, AudioLDM2Backbone)  # load_backbone dispatched on model_index.json
    assert json.loads((model_dir / "model_index.json").read_text())["_class_name"] == "AudioLDM2Pipeline"
    assert backbone.info.kind == "audioldm2"
    assert backbone.info.revision.startswith("local-")
    assert load_audioldm2(model_dir).info.revision == backbone.info.revision

    # every tensor on disk reaches the module under the same name, unchanged
    parts = {
        "unet/diffusion_pytorch_model.safetensors": backbone.unet,
        "vae/diffusion_pytorch_model.safetensors": backbone.vae,
        "vocoder/model.safetensors": backbone.vocoder,
        "text_encoder/model.safetensors": backbone.text_encoder,
        "text_encoder_2/model.safetensors": backbone.text_encoder_2,
        "projection_model/diffusion_pytorch_model.safetensors": backbone.projection_model,
        "language_model/model.safetensors": backbone.language_model.transformer,
    }
    for file, module in parts.items():
        stored, loaded = load_file(model_dir / file), module.state_dict()
        assert set(stored) <= set(loaded), file
        assert all(torch.equal(stored[k], loaded[k]) for k in stored), file
        # what the file leaves out is tied to what it holds (T5's encoder.embed_tokens is its shared)
        held = {loaded[k].data_ptr() for k in stored}
        assert all(loaded[k].data_ptr() in held for k in set(loaded) - set(stored)), file

    # the published GPT2Model weights load into GPT2LMHeadModel, its head tied to the embedding
    lm = backbone.language_model
    assert type(lm).__name__ == "GPT2LMHeadModel"
    assert json.loads((model_dir / "language_model" / "config.json").read_text())["architectures"] == ["GPT2Model"]
    assert lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr()
    assert backbone.generated_tokens == 8

    # the UNet attends to GPT-2's width and T5's, with a self-attention layer besides
    assert all(list(dims) == [None, LM_DIM, T5_DIM] for dims in backbone.unet.config.cross_attention_dim)
    assert hasattr(backbone.unet, "add_adapter") and hasattr(backbone.unet, "unload_lora")

    # real tokenizers (not offline stubs) with RoBERTa's and T5's special tokens
    tok, tok_2 = backbone.tokenizer, backbone.tokenizer_2
    assert 300 <= len(tok) <= 1000 and (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    assert 100 <= len(tok_2) <= 1000 and (tok_2.pad_token_id, tok_2.eos_token_id) == (0, 1)
    assert tok_2.convert_ids_to_tokens(tok_2("a dog barking")["input_ids"]) == ["▁a", "▁dog", "▁barking", "</s>"]
    assert tok_2.model_max_length == 128

    scheduler = backbone.scheduler_config
    assert (scheduler["prediction_type"], scheduler["num_train_timesteps"], scheduler["clip_sample"]) == (
        "epsilon",
        1000,
        False,
    )
    assert backbone.sample_rate == 16000 and backbone.mel.config.n_mel_channels == 64


def test_builtin_tiny_audioldm2_is_written_once() -> None:
    first = load_backbone("tiny-audioldm2", device="cpu")
    assert isinstance(first, AudioLDM2Backbone) and first.info.model_id == "tiny-audioldm2"
    second = load_backbone("tiny-audioldm2", device="cpu")
    assert second.info.revision == first.info.revision


def test_unknown_hub_id_fails_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="cvssp/audioldm2-no-such-model"):
        load_backbone("cvssp/audioldm2-no-such-model", device="cpu")
    assert time.perf_counter() - started < 10


def test_incomplete_directory_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="not an AudioLDM 2 model directory.*missing vae/, vocoder/"):
        load_backbone(str(tmp_path), device="cpu")


def test_speech_models_are_refused_by_name(model_dir: Path, tmp_path: Path) -> None:
    for sub in model_dir.iterdir():
        (tmp_path / sub.name).mkdir() if sub.is_dir() else (tmp_path / sub.name).write_bytes(sub.read_bytes())
    (tmp_path / "text_encoder_2" / "config.json").write_text(json.dumps({"model_type": "vits"}))
    with pytest.raises(ModelNotFoundError, match="'vits' model.*second text encoder is T5"):
        load_backbone(str(tmp_path), device="cpu")


# -- the condition with two sequences -------------------------------------------------------


def two_sequences(batch: int = 1, length: int = 5) -> Condition:
    mask_1 = torch.ones(batch, length, dtype=torch.bool)
    mask_1[:, -2:] = False
    return Condition(torch.randn(batch, 8, LM_DIM), None, torch.randn(batch, length, T5_DIM), mask_1)


def test_condition_methods_carry_the_second_sequence() -> None:
    one = two_sequences()
    four = one.repeat(4)
    assert four.embeds.shape == (4, 8, LM_DIM) and four.embeds_1.shape == (4, 5, T5_DIM)
    assert four.mask is None and torch.equal(four.mask_1, one.mask_1.repeat(4, 1))
    both = Condition.cat([one, four])
    assert both.batch_size == 5 and both.embeds_1.shape[0] == 5 and both.mask_1.shape == (5, 5)
    half = one.to(dtype=torch.float16)
    assert half.embeds.dtype == half.embeds_1.dtype == torch.float16 and half.mask_1.dtype == torch.bool
    grad = one.with_sequences(one.embeds.requires_grad_(), one.embeds_1.requires_grad_()).detach()
    assert not grad.embeds.requires_grad and not grad.embeds_1.requires_grad
    with pytest.raises(ValueError, match="with and without a second sequence"):
        Condition.cat([one, Condition(torch.randn(1, 8, LM_DIM))])
    # a single-sequence condition (TANGO's, AudioLDM's) is what it was
    tango = Condition(torch.randn(1, 3, 4), torch.tensor([[True, True, False]]))
    assert tango.sequences == (tango.embeds,) and tango.repeat(2).embeds_1 is None


def test_interpolation_blends_both_sequences() -> None:
    e_tgt, e_opt = two_sequences(), two_sequences()
    rows = interpolate(e_tgt, e_opt, [1.0, 0.0, 0.25])
    assert rows.batch_size == 3 and torch.equal(rows.mask_1, e_tgt.mask_1.repeat(3, 1))
    for mine, tgt, opt in zip(rows.sequences, e_tgt.sequences, e_opt.sequences):
        torch.testing.assert_close(mine[0], tgt[0])
        torch.testing.assert_close(mine[1], opt[0])
        torch.testing.assert_close(mine[2], 0.25 * tgt[0] + 0.75 * opt[0])


# -- text and the denoiser ------------------------------------------------------------------


def test_encode_text_gives_both_sequences(backbone: AudioLDM2Backbone) -> None:
    condition = backbone.encode_text([PROMPT, OTHER])
    assert condition.embeds.shape == (2, 8, LM_DIM) and condition.mask is None
    # T5 pads to the longer prompt ("... falling" and its end token: 8 tokens)
    assert condition.embeds_1.shape == (2, 8, T5_DIM) and condition.mask_1.dtype == torch.bool
    assert condition.mask_1.sum(dim=1).tolist() == [8, 4]
    assert not torch.allclose(condition.embeds[0], condition.embeds[1])

    null = backbone.null_condition(condition)
    assert null.batch_size == 2 and null.embeds_1.shape == condition.embeds_1.shape
    assert null.mask_1[:, 0].all() and not null.mask_1[:, 1:].any()  # the end token, then padding
    torch.testing.assert_close(null.embeds[0], null.embeds[1])
    longer = backbone.null_condition(backbone.encode_text([PROMPT + " " + PROMPT]))
    assert longer.embeds_1.shape[1] == 15


def test_parity_with_diffusers_audioldm2_pipeline(backbone: AudioLDM2Backbone) -> None:
    """Prompts and the denoiser call as diffusers' AudioLDM2Pipeline makes them, on the same modules."""
    diffusers = pytest.importorskip("diffusers")
    pipe = diffusers.AudioLDM2Pipeline(
        vae=backbone.vae,
        text_encoder=backbone.text_encoder,
        text_encoder_2=backbone.text_encoder_2,
        projection_model=backbone.projection_model,
        language_model=backbone.language_model,
        tokenizer=backbone.tokenizer,
        tokenizer_2=backbone.tokenizer_2,
        feature_extractor=None,
        unet=backbone.unet,
        scheduler=diffusers.DDIMScheduler.from_config(backbone.scheduler_config),
        vocoder=backbone.vocoder,
    )
    prompts = [PROMPT, OTHER]
    # the pipeline returns [negative ("") rows, prompt rows] of the T5 states, their mask and GPT-2's states
    t5, t5_mask, generated = pipe.encode_prompt(prompts, torch.device("cpu"), 1, True)
    condition = backbone.encode_text(prompts)
    guided = Condition.cat([backbone.null_condition(condition), condition])
    # GPT-2 with and without a key/value cache: equal up to float32 rounding
    torch.testing.assert_close(guided.embeds, generated, atol=1e-5, rtol=0)
    torch.testing.assert_close(guided.embeds_1, t5, atol=1e-6, rtol=0)
    assert torch.equal(guided.mask_1, t5_mask == 1)

    latents = torch.randn(4, *backbone.latent_shape(16000))
    timesteps = torch.tensor([3, 900, 3, 900])
    expected = pipe.unet(
        latents,
        timesteps,
        encoder_hidden_states=generated,
        encoder_hidden_states_1=t5,
        encoder_attention_mask_1=t5_mask,
    ).sample
    reference = Condition(generated, None, t5, t5_mask == 1)
    torch.testing.assert_close(backbone.denoise(latents, timesteps, reference), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(backbone.denoise(latents, timesteps, guided), expected, atol=1e-4, rtol=1e-4)


def test_encode_decode_keep_the_exact_length(backbone: AudioLDM2Backbone) -> None:
    num_samples = round(CLIP_SECONDS * backbone.sample_rate) + 1
    latents = backbone.encode(0.3 * torch.randn(2, num_samples))
    frames = math.ceil((num_samples // 160 + 1) / 32) * 32 // 4
    assert latents.shape == (2, *backbone.latent_shape(num_samples)) == (2, 8, frames, 16)
    assert backbone.decode(latents, num_samples).shape == (2, num_samples)


# -- the method on AudioLDM 2 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fits(backbone: AudioLDM2Backbone, clip: AudioClip) -> dict:
    """One short fit per method, with the names of the backbone's UNet weights that it changed."""
    wave = prepare_input(backbone, clip).wave
    results = {}
    for method in ("lora", "full"):
        before = unet_snapshot(backbone)
        config = FitConfig(method=method, embed_steps=3, tune_steps=3, tune_lr=1e-3, lora_rank=4)
        result = fit(backbone, wave, PROMPT, config, progress=False)
        results[method] = (result, changed_weights(before, backbone))
    return results


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fit_runs_and_leaves_the_base_unet_alone(backbone: AudioLDM2Backbone, fits: dict, method: str) -> None:
    result, changed = fits[method]
    assert changed == []
    # step 1 moved both sequences, the GPT-2 one and the T5 one, and kept the T5 mask
    for opt, tgt in zip(result.e_opt.sequences, result.e_tgt.sequences, strict=True):
        assert opt.shape == tgt.shape and not opt.requires_grad and not torch.equal(opt, tgt)
    assert result.e_opt.embeds.shape == (1, 8, LM_DIM) and result.e_opt.embeds_1.shape[2] == T5_DIM
    assert torch.equal(result.e_opt.mask_1, result.e_tgt.mask_1)
    assert all(math.isfinite(v) for v in result.losses.values())
    if method == "full":
        base = backbone.unet.state_dict()
        assert set(result.unet_state) == set(base)
        assert any(not torch.equal(result.unet_state[k], base[k]) for k in base)
    else:
        # the adapter reaches the layers that read GPT-2's sequence and those that read T5's
        widths = {v.shape[1] for k, v in result.unet_state.items() if "to_k.lora_A" in k}
        assert {LM_DIM, T5_DIM} <= widths
        assert any(v.abs().max() > 0 for k, v in result.unet_state.items() if "lora_B" in k)


@pytest.fixture(scope="module")
def bundle_path(fits: dict, backbone: AudioLDM2Backbone, clip: AudioClip, tmp_path_factory) -> Path:
    result, _ = fits["lora"]
    return save_bundle(tmp_path_factory.mktemp("b") / "bundle", result, backbone.info, clip, target_prompt=PROMPT)


def test_bundle_keeps_both_sequences_bit_exact(
    bundle_path: Path, fits: dict, backbone: AudioLDM2Backbone, tmp_path: Path
) -> None:
    stored = load_file(bundle_path / "embeddings.safetensors")
    assert set(stored) == {"e_tgt", "e_opt", "e_tgt_1", "e_opt_1", "e_tgt_mask_1", "e_opt_mask_1"}
    result, _ = fits["lora"]
    bundle = load_bundle(bundle_path, backbone.info)
    for loaded, saved in ((bundle.e_tgt, result.e_tgt), (bundle.e_opt, result.e_opt)):
        assert loaded.mask is None and torch.equal(loaded.mask_1, saved.mask_1)
        assert all(torch.equal(a, b) for a, b in zip(loaded.sequences, saved.sequences, strict=True))
    with pytest.raises(BundleError, match="fitted on audioldm2"):
        load_bundle(bundle_path, BackboneInfo(kind="audioldm", model_id="tiny-audioldm"))

    # a single-sequence bundle keeps the files it always had, and loads without a second sequence
    tango = FitResult(
        Condition(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool)),
        Condition(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool)),
        {"w": torch.zeros(2)},
        FitConfig(),
        {},
        0.0,
    )
    info = BackboneInfo(kind="tango", model_id="tiny")
    old = save_bundle(tmp_path / "old", tango, info, bundle.input, target_prompt=PROMPT)
    assert set(load_file(old / "embeddings.safetensors")) == {"e_tgt", "e_opt", "e_tgt_mask", "e_opt_mask"}
    assert load_bundle(old, info).e_opt.embeds_1 is None


def test_generate_from_the_bundle_with_every_start(
    bundle_path: Path, backbone: AudioLDM2Backbone, clip: AudioClip
) -> None:
    bundle = load_bundle(bundle_path, backbone.info)
    outputs = {"noise": generate(backbone, bundle, [0.0, 1.0], FAST, seed=0, progress=False)}
    ready = PreparedBundle(backbone, bundle)
    with fitted_unet(backbone, bundle.method, bundle.unet_state, bundle.lora) as unet:
        for start in ("input", "inversion"):
            config = SampleConfig(steps=FAST.steps, guidance=FAST.guidance, start=start, t_start=FAST.t_start)
            outputs[start] = ready.edit([0.0, 1.0], config, 0, unet)
        # regenerating an inversion at e_opt gives the input's latent back
        inversion = invert(backbone, ready.e_opt, ready.latent, FAST, seed=3, unet=unet, progress=False)
        again = sample(backbone, ready.e_opt, ready.shape, FAST, [5], unet=unet, inversion=inversion, progress=False)
    torch.testing.assert_close(again, ready.latent, atol=1e-4, rtol=0)
    assert set(outputs) == set(STARTS)
    for start, (eta_0, eta_1) in outputs.items():
        for out in (eta_0, eta_1):
            assert out.shape == clip.samples.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert not np.array_equal(eta_0, eta_1), start  # η changes the edit
    assert not np.array_equal(outputs["noise"][0], outputs["input"][0])


def test_sdedit_runs_on_audioldm2(backbone: AudioLDM2Backbone, clip: AudioClip) -> None:
    outputs = sdedit(backbone, clip, OTHER, [0.5], FAST, seed=0, progress=False)
    assert len(outputs) == 1 and outputs[0].shape == clip.samples.shape and np.isfinite(outputs[0]).all()


# -- the command line, a sweep trial and the service's editor -------------------------------


def test_cli_edit_on_a_model_directory(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rate = 16000
    sf.write(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate), rate)
    argv = ["edit", str(tmp_path / "in.wav"), "a bell", "--eta", "0.5", "-o", str(tmp_path / "edit.wav")]
    argv += ["--model", str(model_dir), "--device", "cpu", "--quiet", "--embed-steps", "2", "--tune-steps", "2"]
    code = main([*argv, "--steps", "2"])
    assert code == 0, capsys.readouterr().err
    assert sf.info(tmp_path / "edit.wav").frames == rate
    meta = json.loads((tmp_path / "edit.bundle" / "bundle.json").read_text())
    assert meta["backbone"]["kind"] == "audioldm2"


def test_a_sweep_trial_and_the_service_editor(bundle_path: Path, backbone: AudioLDM2Backbone, tmp_path: Path) -> None:
    from nrt.scoring import load_scorer
    from nrt.service.editor import ClipSlot, EditJob, EditorCore
    from nrt.service.settings import ServiceSettings
    from nrt.sweep.fitted import FittedClip

    # a trial: the fitted clip held by a worker, one edit, scored by the CLAP sum
    fitted = FittedClip(backbone, load_bundle(bundle_path, backbone.info), load_scorer("tiny", device="cpu"))
    try:
        audio = fitted.edit_one(0.5, FAST, seed=0)
        row = fitted.scorer.score([audio], fitted.rate)[0]
    finally:
        fitted.close()
    assert row["sum"] == pytest.approx(row["text"] + row["audio"])

    # the service's editor on the built-in tiny AudioLDM 2 (the same files: the bundle fits it)
    core = EditorCore(ServiceSettings(storage=str(tmp_path), model="tiny-audioldm2"), device="cpu")
    rel = "bundles/beep/lora-test"
    shutil.copytree(bundle_path, tmp_path / rel)
    job = EditJob(bundle=rel, eta=0.5, steps=2, guidance=2.0, scheduler="ddpm", seed=0, subtype="FLOAT")
    edited = core.edit(ClipSlot("beep", core), job)
    assert (edited["sample_rate"], edited["frames"], edited["channels"]) == (CLIP_RATE, len(audio), 2)
