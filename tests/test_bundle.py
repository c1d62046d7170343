"""Bundles: atomic, safetensors only, bit-exact round trips, refused when foreign; and fit_clip, which makes them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from nrt.audio import load_audio
from nrt.backbones.base import BackboneInfo
from nrt.bundle import FORMAT_VERSION, load_bundle, read_meta, save_bundle
from nrt.edit import generate, prepare_input
from nrt.errors import BundleError
from nrt.fit import fit
from nrt.fit_clip import fit_clip
from nrt.settings import FitConfig, SampleConfig


@pytest.fixture()
def fitted(backbone, tone_wav):
    clip = load_audio(tone_wav)
    result = fit(backbone, prepare_input(backbone, clip).wave, "beeps and rain",
                 FitConfig(embed_steps=3, tune_steps=3), progress=False)
    return clip, result


def test_round_trip_is_bit_exact(backbone, fitted, tmp_path):
    clip, result = fitted
    path = save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="beeps and rain")
    assert sorted(p.name for p in path.iterdir()) == [
        "bundle.json", "embeddings.safetensors", "input.flac", "unet_lora.safetensors"]
    bundle = load_bundle(path, backbone.info)
    assert torch.equal(bundle.e_tgt.embeds, result.e_tgt.embeds)
    assert torch.equal(bundle.e_opt.embeds, result.e_opt.embeds)
    assert torch.equal(bundle.e_opt.mask, result.e_opt.mask)
    assert bundle.unet_state.keys() == result.unet_state.keys()
    assert all(torch.equal(bundle.unet_state[k], result.unet_state[k]) for k in result.unet_state)
    assert np.array_equal(bundle.input.samples, clip.samples)
    assert bundle.input.sample_rate == clip.sample_rate
    meta = bundle.meta
    assert meta["backbone"]["kind"] == "tango" and meta["method"]["lora"]["rank"] == 8
    assert meta["fit"]["embed_steps"] == 3 and meta["fit"]["tune_lr"] == 3e-4
    assert meta["input"]["num_frames"] == clip.num_frames and len(meta["input"]["sha256"]) == 64
    assert {"probe_e_tgt", "probe_e_opt", "probe_fitted"} <= meta["losses"].keys()
    assert not list(path.parent.glob(".*"))  # no staging left behind


def test_float_input_is_kept_exactly(backbone, fitted, tmp_path):
    _, result = fitted
    data = (np.random.default_rng(0).standard_normal((20001, 2)) * 0.2).astype(np.float32)
    sf.write(tmp_path / "f.wav", data, 32000, subtype="FLOAT")
    clip = load_audio(tmp_path / "f.wav")
    path = save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="x")
    assert (path / "input.wav").exists()
    assert np.array_equal(load_bundle(path).input.samples, data)


def test_a_new_process_makes_the_same_audio(backbone, fitted, tmp_path, tiny_dir):
    clip, result = fitted
    path = save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="beeps and rain")
    here = generate(backbone, load_bundle(path, backbone.info), [0.6], SampleConfig(steps=6), seed=9,
                    progress=False)[0]
    script = (
        "import sys, numpy as np, torch; torch.set_num_threads(2)\n"
        "from nrt.backbones import load_backbone\n"
        "from nrt.bundle import load_bundle\n"
        "from nrt.edit import generate\n"
        "from nrt.sample import SampleConfig\n"
        f"b = load_backbone({str(tiny_dir)!r}, device='cpu')\n"
        f"out = generate(b, load_bundle({str(path)!r}, b.info), [0.6], SampleConfig(steps=6), seed=9, progress=False)[0]\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), here)


def test_a_bundle_from_another_model_is_refused(backbone, fitted, tmp_path):
    clip, result = fitted
    path = save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="x")
    other = BackboneInfo(kind="tango", model_id="declare-lab/tango", revision="abc123")
    with pytest.raises(BundleError, match="declare-lab/tango"):
        load_bundle(path, other)
    with pytest.raises(BundleError, match="audioldm"):
        load_bundle(path, BackboneInfo(kind="audioldm", model_id="cvssp/audioldm-s-full-v2"))


def test_newer_format_and_incomplete_bundles_are_refused(backbone, fitted, tmp_path):
    clip, result = fitted
    path = save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="x")
    meta = json.loads((path / "bundle.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="newer"):
        read_meta(path)
    meta["format_version"] = FORMAT_VERSION
    (path / "bundle.json").write_text(json.dumps(meta))
    (path / "unet_lora.safetensors").unlink()
    with pytest.raises(BundleError, match="unet_lora.safetensors"):
        read_meta(path)
    (path / "bundle.json").unlink()
    with pytest.raises(BundleError, match="no bundle.json"):
        read_meta(path)


def test_a_failed_write_leaves_nothing(backbone, fitted, tmp_path, monkeypatch):
    clip, result = fitted
    import nrt.bundle

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nrt.bundle, "write_audio", explode)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="disk full"):
        save_bundle(out / "b", result, backbone.info, clip, target_prompt="x")
    assert list(out.iterdir()) == []


def test_existing_bundle_is_not_overwritten_by_accident(backbone, fitted, tmp_path):
    clip, result = fitted
    path = save_bundle(tmp_path / "out" / "b", result, backbone.info, clip, target_prompt="first")
    with pytest.raises(BundleError, match="exists"):
        save_bundle(path, result, backbone.info, clip, target_prompt="second")
    save_bundle(path, result, backbone.info, clip, target_prompt="second", overwrite=True)
    assert read_meta(path)["target_prompt"] == "second"
    assert [p.name for p in path.parent.iterdir()] == ["b"]


def test_nothing_is_unpickled(backbone, fitted, tmp_path, monkeypatch):
    clip, result = fitted
    path = save_bundle(tmp_path / "b", result, backbone.info, clip, target_prompt="x")
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle must not be unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_bundle(path).e_opt.embeds.shape == result.e_opt.embeds.shape


FAST = FitConfig(embed_steps=3, tune_steps=3)


def test_fit_clip_saves_what_the_fit_made(backbone, tone_wav, tmp_path):
    clip = load_audio(tone_wav)
    mask = [(0.25, 0.5)]
    result = fit_clip(backbone, clip, "beeps and rain", FAST, tmp_path / "b", edit_type="inpainting",
                      mask=mask, progress=False)
    bundle = load_bundle(tmp_path / "b", backbone.info)
    assert torch.equal(bundle.e_opt.embeds, result.e_opt.embeds)
    assert all(torch.equal(bundle.unet_state[k], v) for k, v in result.unet_state.items())
    assert bundle.meta["edit_type"] == "inpainting" and bundle.mask == mask
    assert bundle.prompt == "beeps and rain" and bundle.meta["fit"] == FAST.to_dict()
    assert np.array_equal(bundle.input.samples, clip.samples)
    # the masked range is kept out of the loss: the same fit without the mask ends elsewhere
    unmasked = fit_clip(backbone, clip, "beeps and rain", FAST, tmp_path / "c", progress=False)
    assert unmasked.losses["probe_e_tgt"] != result.losses["probe_e_tgt"]


def test_fit_clip_checks_the_target_before_fitting(backbone, tone_wav, tmp_path, monkeypatch):
    import nrt.fit_clip

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran before the target was checked")

    monkeypatch.setattr(nrt.fit_clip, "fit", no_fit)
    clip = load_audio(tone_wav)
    (tmp_path / "taken").mkdir()
    with pytest.raises(BundleError, match="exists already"):
        fit_clip(backbone, clip, "x", FAST, tmp_path / "taken", progress=False)
    with pytest.raises(ValueError, match="'remix'"):
        fit_clip(backbone, clip, "x", FAST, tmp_path / "new", edit_type="remix", progress=False)


def test_fit_clip_writes_nothing_when_the_check_refuses(backbone, tone_wav, tmp_path):
    seen = []

    def refuse(result):
        seen.append(result)
        raise RuntimeError("diverged")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="diverged"):
        fit_clip(backbone, load_audio(tone_wav), "x", FAST, out / "b", check=refuse, progress=False)
    assert len(seen) == 1 and list(out.iterdir()) == []
