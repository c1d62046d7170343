"""benchmarks/mini_codec.py: the codec's round trips per front end, and the timing models it builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.service_setup import ROOT, load_module

RESULTS = ROOT / "benchmarks" / "results" / "mini_codec"


@pytest.fixture(scope="module")
def mini_codec():
    return load_module("mini_codec", ROOT / "benchmarks" / "mini_codec.py")


def test_the_saved_results_render_to_the_committed_report(mini_codec) -> None:
    results = json.loads((RESULTS / "codec.json").read_text(encoding="utf-8"))
    assert mini_codec.render(results) == (RESULTS / "codec.md").read_text(encoding="utf-8")


def test_the_direct_round_trip_of_the_shipped_codec_measures_what_an_edit_decodes(mini_codec) -> None:
    from nrt.audio import AudioClip
    from nrt.backbones import load_backbone
    from nrt.mini.scenes import SAMPLE_RATE, scene_for
    from nrt.reference import codec_round_trip, log_mel_distance

    stft, vocoder = mini_codec.shipped()
    [ours] = [c for c in mini_codec.candidates() if c.front_end == (stft.n_mel_channels, stft.hop_length)][:1]
    wave = scene_for("heldout", 3).render(SAMPLE_RATE).astype(np.float32)
    direct, _ = mini_codec.round_trip(wave, ours, float(vocoder["momentum"]))
    backbone = load_backbone("mini", device="cpu")
    path = codec_round_trip(backbone, AudioClip(wave[:, None], SAMPLE_RATE, "FLOAT", "WAV"))[:, 0]
    assert direct.shape == wave.shape == path.shape
    d_direct, d_path = log_mel_distance(direct, wave, SAMPLE_RATE), log_mel_distance(path, wave, SAMPLE_RATE)
    assert d_direct > 0.5  # a 32-band codec loses something the 64-band yardstick sees
    assert abs(d_direct - d_path) < 0.25 * d_path  # only the padding and the phase's start differ
    # a copy is at distance 0 on both yardsticks
    assert log_mel_distance(wave, wave, SAMPLE_RATE) == 0 == mini_codec.stft_distance(wave, wave)


def test_a_candidate_front_end_model_loads_and_runs_an_edits_stages(mini_codec, tmp_path) -> None:
    from nrt.backbones import load_backbone

    model = mini_codec.candidate_model((64, 160), tmp_path / "m64-h160")
    backbone = load_backbone(str(model), device="cpu")
    wave = torch.zeros(1, 16000)
    wave[0, 4000:4400] = 0.5
    latents = backbone.encode(wave)
    assert latents.shape[1] == 16 and latents.shape[-1] == 64 // 4  # 4x4 patches of 64 bands
    assert latents.shape[2] >= (16000 // 160 + 1) // 4  # frames at hop 160, folded by 4
    with torch.no_grad():
        out = backbone.denoise(latents, torch.tensor([500]), backbone.encode_text(["a beep"]))
        assert out.shape == latents.shape
        assert backbone.decode(latents, 16000).shape == (1, 16000)
