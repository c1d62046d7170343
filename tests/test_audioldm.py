"""The AudioLDM backbone on a tiny model written to disk in the diffusers layout."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from nrt.audio import AudioClip, load_audio, write_audio
from nrt.backbones import load_backbone
from nrt.backbones.audioldm import AudioLDMBackbone, load_audioldm, write_tiny_audioldm
from nrt.backbones.base import Condition
from nrt.bundle import load_bundle, save_bundle
from nrt.edit import generate, prepare_input
from nrt.embedding import optimize_embedding
from nrt.errors import BundleError, ModelNotFoundError
from nrt.fit import fit
from nrt.settings import FitConfig, SampleConfig

PROMPT = "a dog barking while rain is falling"
CLIP_RATE = 22050  # not the model's rate, so that the output must be resampled back
CLIP_SECONDS = 1.37  # not a multiple of the 32-frame padding


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("nrt-cache")
        mp.setenv("NRT_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_audioldm(tmp_path_factory.mktemp("tiny-audioldm"))


@pytest.fixture(scope="module")
def backbone(model_dir: Path) -> AudioLDMBackbone:
    return load_backbone(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> AudioClip:
    n = round(CLIP_SECONDS * CLIP_RATE)
    t = np.arange(n) / CLIP_RATE
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
    right = 0.2 * np.sin(2 * np.pi * 660 * t)
    path = tmp_path_factory.mktemp("clip") / "input.wav"
    write_audio(path, np.stack([left, right], axis=1).astype(np.float32), CLIP_RATE)
    return load_audio(path)


def unet_snapshot(backbone: AudioLDMBackbone) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backbone.unet.state_dict().items()}


def changed_weights(before: dict[str, torch.Tensor], backbone: AudioLDMBackbone) -> list[str]:
    after = backbone.unet.state_dict()
    if set(after) != set(before):
        return sorted(set(after) ^ set(before))
    return [k for k in before if not torch.equal(before[k], after[k])]


# -- loading --------------------------------------------------------------------------------


def test_writer_and_loader_round_trip(model_dir: Path, backbone: AudioLDMBackbone) -> None:
    assert isinstance(backbone, AudioLDMBackbone)  # load_backbone dispatched on the layout
    assert backbone.info.kind == "audioldm"
    assert backbone.info.revision.startswith("local-")
    assert load_audioldm(model_dir).info.revision == backbone.info.revision

    # every tensor on disk reaches the module under the same name, unchanged
    parts = {
        "unet/diffusion_pytorch_model.safetensors": backbone.unet,
        "vae/diffusion_pytorch_model.safetensors": backbone.vae,
        "text_encoder/model.safetensors": backbone.text_encoder,
        "vocoder/model.safetensors": backbone.vocoder,
    }
    for file, module in parts.items():
        stored, loaded = load_file(model_dir / file), module.state_dict()
        assert set(stored) == set(loaded), file
        assert all(torch.equal(stored[k], loaded[k]) for k in stored), file

    # AudioLDM's architecture: CLAP vector into the class embedding, per-block self-attention
    config = backbone.unet.config
    assert config.class_embed_type == "simple_projection"
    assert config.class_embeddings_concat is True
    assert list(config.cross_attention_dim) == list(config.block_out_channels)
    assert config.projection_class_embeddings_input_dim == backbone.text_encoder.config.projection_dim

    # a real tokenizer (not an offline stub) with RoBERTa's special tokens
    tok = backbone.tokenizer
    assert 300 <= len(tok) <= 1000
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens(tok("a dog barking")["input_ids"])[1:3] == ["a", "Ġdog"]

    scheduler = backbone.scheduler_config
    betas = (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"])
    assert betas == (0.0015, 0.0195, "scaled_linear")
    assert (scheduler["prediction_type"], scheduler["num_train_timesteps"]) == ("epsilon", 1000)
    assert scheduler["clip_sample"] is False
    assert backbone.sample_rate == 16000
    assert backbone.mel.config.n_mel_channels == 64 and backbone.mel.hop_length == 160


def test_builtin_tiny_audioldm_is_written_once(cache: Path) -> None:
    first = load_backbone("tiny-audioldm", device="cpu")
    assert isinstance(first, AudioLDMBackbone)
    assert first.info.model_id == "tiny-audioldm"
    index = cache / "tiny-audioldm-v1" / "model_index.json"
    assert index.exists()
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # no staging left behind
    stamp = index.stat().st_mtime_ns
    second = load_backbone("tiny-audioldm", device="cpu")
    assert index.stat().st_mtime_ns == stamp
    assert second.info.revision == first.info.revision


def test_unknown_hub_id_fails_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="cvssp/audioldm-no-such-model"):
        load_backbone("cvssp/audioldm-no-such-model", device="cpu")
    assert time.perf_counter() - started < 10


def test_incomplete_directory_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="missing vae/, text_encoder/"):
        load_backbone(str(tmp_path), device="cpu")


# -- audio and text -------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [CLIP_SECONDS, 0.5, 2.0])
def test_encode_decode_keep_the_exact_length(backbone: AudioLDMBackbone, seconds: float) -> None:
    num_samples = round(seconds * backbone.sample_rate) + 1  # odd on purpose
    wave = 0.3 * torch.randn(2, num_samples)
    latents = backbone.encode(wave)
    frames = math.ceil((num_samples // 160 + 1) / 32) * 32 // 4
    assert latents.shape == (2, *backbone.latent_shape(num_samples)) == (2, 8, frames, 16)
    out = backbone.decode(latents, num_samples)
    assert out.shape == (2, num_samples)
    assert torch.isfinite(out).all()


def test_encode_text_gives_unit_vectors_without_mask(backbone: AudioLDMBackbone) -> None:
    condition = backbone.encode_text([PROMPT, "church bells ringing", ""])
    assert condition.embeds.shape == (3, backbone.text_encoder.config.projection_dim)
    assert condition.mask is None
    torch.testing.assert_close(condition.embeds.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(condition.embeds[0], condition.embeds[1])

    null = backbone.null_condition(Condition(condition.embeds[:2]))
    assert null.embeds.shape == (2, condition.embeds.shape[1]) and null.mask is None
    torch.testing.assert_close(null.embeds, condition.embeds[2:].repeat(2, 1))


def test_parity_with_diffusers_audioldm_pipeline(backbone: AudioLDMBackbone) -> None:
    """Prompts and the denoiser call as diffusers' (deprecated) AudioLDMPipeline makes them."""
    diffusers = pytest.importorskip("diffusers")
    if not hasattr(diffusers, "AudioLDMPipeline"):
        pytest.skip("this diffusers has no AudioLDMPipeline")
    pipe = diffusers.AudioLDMPipeline(
        vae=backbone.vae, text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer, unet=backbone.unet,
        scheduler=diffusers.DDIMScheduler.from_config(backbone.scheduler_config), vocoder=backbone.vocoder,
    )
    prompts = [PROMPT, "church bells ringing"]
    # the pipeline returns [negative ("") rows, prompt rows], L2-normalised
    reference = pipe._encode_prompt(prompts, torch.device("cpu"), 1, True)
    condition = backbone.encode_text(prompts)
    torch.testing.assert_close(condition.embeds, reference[2:], atol=1e-6, rtol=0)
    torch.testing.assert_close(backbone.null_condition(condition).embeds, reference[:2], atol=1e-6, rtol=0)

    latents = torch.randn(2, *backbone.latent_shape(16000))
    timesteps = torch.tensor([3, 900])
    expected = pipe.unet(latents, timesteps, encoder_hidden_states=None, class_labels=reference[2:]).sample
    torch.testing.assert_close(backbone.denoise(latents, timesteps, condition), expected, atol=1e-5, rtol=1e-5)


def test_denoise_sees_only_the_direction_of_the_embedding(backbone: AudioLDMBackbone) -> None:
    latents = torch.randn(2, *backbone.latent_shape(16000))
    timesteps = torch.tensor([10, 700])
    condition = backbone.encode_text([PROMPT, "church bells ringing"])
    reference = backbone.denoise(latents, timesteps, condition)
    for scale in (0.01, 3.7, 250.0):
        scaled = backbone.denoise(latents, timesteps, Condition(condition.embeds * scale))
        torch.testing.assert_close(scaled, reference, atol=1e-5, rtol=1e-4)
    # ... and the direction does matter
    swapped = backbone.denoise(latents, timesteps, Condition(condition.embeds.flip(0)))
    assert (swapped - reference).abs().max() > 1e-3


# -- the method on AudioLDM -----------------------------------------------------------------


def test_step1_leaves_every_unet_weight_bit_identical(backbone: AudioLDMBackbone, clip: AudioClip) -> None:
    wave = prepare_input(backbone, clip).wave
    latents = backbone.encode(wave.unsqueeze(0))
    e_tgt = backbone.encode_text([PROMPT])
    before = unet_snapshot(backbone)
    e_opt, losses = optimize_embedding(
        backbone, DDPMScheduler.from_config(backbone.scheduler_config), latents, e_tgt,
        steps=5, lr=1e-2, batch_size=1, generator=torch.Generator().manual_seed(0), progress=False,
    )
    assert changed_weights(before, backbone) == []
    assert all(p.grad is None for p in backbone.unet.parameters())
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert e_opt.embeds.shape == e_tgt.embeds.shape and e_opt.mask is None
    assert not torch.equal(e_opt.embeds, e_tgt.embeds)


@pytest.fixture(scope="module")
def fits(backbone: AudioLDMBackbone, clip: AudioClip) -> dict:
    """One short fit per method, with the names of the backbone's UNet weights that it changed."""
    wave = prepare_input(backbone, clip).wave
    results = {}
    for method in ("lora", "full"):
        before = unet_snapshot(backbone)
        config = FitConfig(method=method, embed_steps=10, tune_steps=10, tune_lr=1e-3, lora_rank=4)
        result = fit(backbone, wave, PROMPT, config, progress=False)
        results[method] = (result, changed_weights(before, backbone))
    return results


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fit_runs_and_leaves_the_base_unet_alone(backbone: AudioLDMBackbone, fits: dict, method: str) -> None:
    result, changed = fits[method]
    assert changed == []  # steps 1 and 2 work on the embedding, an adapter or a copy
    assert result.e_opt.embeds.shape == (1, backbone.text_encoder.config.projection_dim)
    assert result.e_opt.mask is None
    assert not torch.equal(result.e_opt.embeds, result.e_tgt.embeds)
    assert all(math.isfinite(v) for v in result.losses.values())
    base = backbone.unet.state_dict()
    if method == "full":
        assert set(result.unet_state) == set(base)
        assert any(not torch.equal(result.unet_state[k], base[k]) for k in base)
    else:
        assert result.unet_state and all("lora" in k for k in result.unet_state)
        assert any(v.abs().max() > 0 for k, v in result.unet_state.items() if "lora_B" in k)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_generate_from_a_saved_bundle_matches_the_input(
    backbone: AudioLDMBackbone, fits: dict, clip: AudioClip, tmp_path: Path, method: str
) -> None:
    result, _ = fits[method]
    path = save_bundle(tmp_path / "bundle", result, backbone.info, clip, target_prompt=PROMPT)

    bundle = load_bundle(path, backbone.info)
    assert bundle.meta["backbone"]["kind"] == "audioldm"
    assert torch.equal(bundle.e_opt.embeds, result.e_opt.embeds) and bundle.e_opt.mask is None
    outputs = generate(backbone, bundle, [0.0, 1.0], SampleConfig(steps=2, guidance=3.0), seed=0, progress=False)
    assert len(outputs) == 2
    for out in outputs:
        assert out.shape == clip.samples.shape == (round(CLIP_SECONDS * CLIP_RATE), 2)
        assert out.dtype == np.float32 and np.isfinite(out).all()
    assert bundle.input.sample_rate == CLIP_RATE
    assert not np.array_equal(outputs[0], outputs[1])  # η changes the edit


def test_bundle_fitted_on_tango_is_refused(
    cache: Path, backbone: AudioLDMBackbone, clip: AudioClip, tmp_path: Path
) -> None:
    tango = load_backbone("tiny", device="cpu")
    wave = prepare_input(tango, clip).wave
    result = fit(tango, wave, PROMPT, FitConfig(embed_steps=1, tune_steps=1), progress=False)
    path = save_bundle(tmp_path / "tango-bundle", result, tango.info, clip, target_prompt=PROMPT)

    assert load_bundle(path, tango.info).meta["backbone"]["kind"] == "tango"
    with pytest.raises(BundleError, match="fitted on tango"):
        load_bundle(path, backbone.info)
