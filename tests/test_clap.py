"""The CLAP scorer on the tiny ClapModel built offline: Eq. 3 and 4, windows, determinism."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
from transformers import AutoTokenizer, ClapModel, ClapProcessor, RobertaTokenizer

from nrt.clap import ClapScorer, build_tiny_clap, window_starts
from nrt.errors import InputError, ModelNotFoundError, NrtError

RATE = 48_000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("clap-tiny"))


@pytest.fixture(scope="module")
def scorer(tiny_dir: Path) -> ClapScorer:
    return ClapScorer.from_pretrained(tiny_dir)


def _noise(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32)


def _chirp(seconds: float, rate: int = RATE, f0: float = 200.0, f1: float = 4000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))).astype(np.float32)


def _direct_audio_embedding(scorer: ClapScorer, clip: np.ndarray) -> torch.Tensor:
    """The model's own embedding of a clip no longer than the window, bypassing the scorer."""
    inputs = scorer.feature_extractor(clip, sampling_rate=RATE, truncation="rand_trunc", return_tensors="pt")
    with torch.no_grad():
        out = scorer.model.get_audio_features(input_features=inputs["input_features"].float())
    return out.pooler_output[0]


def test_tiny_model_loads_through_transformers_own_loaders(tiny_dir: Path, scorer: ClapScorer) -> None:
    processor = ClapProcessor.from_pretrained(tiny_dir)
    assert len(AutoTokenizer.from_pretrained(tiny_dir)) == scorer.model.config.text_config.vocab_size
    assert len(processor.tokenizer) > 500
    assert processor.feature_extractor.sampling_rate == scorer.sample_rate == RATE
    ids = processor.tokenizer("a dog barks in the distance")["input_ids"]
    assert ids[0] == processor.tokenizer.bos_token_id and ids[-1] == processor.tokenizer.eos_token_id
    assert processor.tokenizer.unk_token_id not in ids


def test_score_equals_hand_computed_cosine(scorer: ClapScorer) -> None:
    reference, short_edit, long_edit = _noise(1.5, 0), _chirp(1.2), _chirp(5.0)
    prompt = "a dog barks in the distance"
    scores = scorer.score([short_edit, long_edit], RATE, reference, RATE, prompt)

    tokens = scorer.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        h_t = scorer.model.get_text_features(**tokens).pooler_output[0]
    h_a = _direct_audio_embedding(scorer, reference)
    window = scorer.window_samples
    # A 5 s clip with a 2 s window: ceil(5 / 2) = 3 windows starting at 0, 1.5 s and 3 s.
    starts = [0, (len(long_edit) - window) // 2, len(long_edit) - window]
    windows = [
        torch.nn.functional.normalize(_direct_audio_embedding(scorer, long_edit[s : s + window]), dim=0) for s in starts
    ]
    edits = [_direct_audio_embedding(scorer, short_edit), torch.stack(windows).mean(0)]

    cos = torch.nn.functional.cosine_similarity
    for i, h_edit in enumerate(edits):
        assert scores.text[i] == pytest.approx(cos(h_edit, h_t, dim=0).item(), abs=1e-5)
        assert scores.audio[i] == pytest.approx(cos(h_edit, h_a, dim=0).item(), abs=1e-5)
        assert scores[i].sum == pytest.approx(scores.text[i] + scores.audio[i])


def test_identical_edit_has_audio_clap_one(scorer: ClapScorer, tiny_dir: Path) -> None:
    reference = _chirp(3.0)
    scores = scorer.score([reference, _noise(3.0, 1)], RATE, reference, RATE, "a chirp")
    assert scores.audio[0] == pytest.approx(1.0, abs=1e-5)
    assert scores.audio[1] < 0.9  # the tiny model tells a chirp from noise

    band_limited = ClapScorer.from_pretrained(tiny_dir, band_limit_rate=16_000)
    assert band_limited.score_one(reference, RATE, reference, RATE, "a chirp").audio == pytest.approx(1.0, abs=1e-5)


def test_batch_gives_the_numbers_of_one_at_a_time(scorer: ClapScorer, tiny_dir: Path) -> None:
    reference = _noise(2.5, 2)
    edits = [_chirp(0.4), _noise(2.0, 3), _chirp(5.3, f0=500), _noise(7.0, 4)]
    prompt = "rain falls on a roof while thunder rumbles"
    batch = scorer.score(edits, RATE, reference, RATE, prompt)
    small = ClapScorer.from_pretrained(tiny_dir, batch_size=2).score(edits, RATE, reference, RATE, prompt)
    assert len(batch) == len(edits)
    for i, edit in enumerate(edits):
        one = scorer.score_one(edit, RATE, reference, RATE, prompt)
        assert batch[i].text == pytest.approx(one.text, abs=1e-5)
        assert batch[i].audio == pytest.approx(one.audio, abs=1e-5)
    np.testing.assert_allclose(small.text, batch.text, atol=1e-5)
    np.testing.assert_allclose(small.audio, batch.audio, atol=1e-5)

    prompts = ["a dog barks", "a car engine idles in a small room while people talk", "wind"]
    together = scorer.embed_text(prompts)
    alone = torch.cat([scorer.embed_text([p]) for p in prompts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_long_clip_is_scored_deterministically(scorer: ClapScorer) -> None:
    clip = np.concatenate([_chirp(4.0), _noise(4.0, 5), _chirp(4.5, f0=3000, f1=300)])  # 12.5 s
    reference = _noise(12.0, 6)
    # The extractor on its own crops a clip this long at a place drawn from numpy's global generator.
    fe = scorer.feature_extractor
    np.random.seed(1)
    crop_a = fe(clip, sampling_rate=RATE, truncation="rand_trunc", return_tensors="np")["input_features"]
    np.random.seed(2)
    crop_b = fe(clip, sampling_rate=RATE, truncation="rand_trunc", return_tensors="np")["input_features"]
    assert not np.array_equal(crop_a, crop_b)

    np.random.seed(1)
    state = np.random.get_state()
    first = scorer.score([clip], RATE, reference, RATE, "a chirp")
    after = np.random.get_state()
    np.random.seed(2)
    second = scorer.score([clip], RATE, reference, RATE, "a chirp")
    np.testing.assert_array_equal(first.text, second.text)
    np.testing.assert_array_equal(first.audio, second.audio)
    assert np.array_equal(state[1], after[1]) and state[2:] == after[2:]  # scoring leaves the generator alone


def test_other_rates_and_stereo_are_accepted(scorer: ClapScorer) -> None:
    mono_16k = _chirp(1.5, rate=16_000, f1=6000)
    e_mono = scorer.embed_audio([mono_16k], 16_000)
    e_stereo = scorer.embed_audio([np.stack([mono_16k, mono_16k])], 16_000)
    e_stereo_last = scorer.embed_audio([np.stack([mono_16k, mono_16k], axis=1)], 16_000)
    torch.testing.assert_close(e_stereo, e_mono, atol=1e-6, rtol=0)
    torch.testing.assert_close(e_stereo_last, e_mono, atol=1e-6, rtol=0)

    # The same sound at 16 kHz, at 44.1 kHz and at 48 kHz lands on nearly the same embedding.
    upsampled = [soxr.resample(mono_16k, 16_000, rate) for rate in (44_100, RATE)]
    e_44k = scorer.embed_audio([upsampled[0]], 44_100)
    e_48k = scorer.embed_audio([upsampled[1]], RATE)
    assert e_mono.shape == e_44k.shape == (1, scorer.model.config.projection_dim)
    assert (e_44k @ e_mono.T).item() > 0.999 and (e_48k @ e_mono.T).item() > 0.999


def test_band_limit_compares_what_a_16k_backbone_can_represent(scorer: ClapScorer, tiny_dir: Path) -> None:
    t = np.arange(3 * RATE) / RATE
    full_band = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 12_000 * t)).astype(np.float32)
    at_16k = soxr.resample(full_band, RATE, 16_000)
    band_limited = ClapScorer.from_pretrained(tiny_dir, band_limit_rate=16_000)
    # Band-limited, the full-band input is exactly what a 16 kHz backbone's copy of it is.
    torch.testing.assert_close(band_limited.embed_audio([full_band], RATE), band_limited.embed_audio([at_16k], 16_000))
    # Without the limit, the 12 kHz partial counts.
    assert (scorer.embed_audio([full_band], RATE) @ scorer.embed_audio([at_16k], 16_000).T).item() < 0.999


def test_window_starts_cover_the_clip_with_the_fewest_windows() -> None:
    window = 96_000
    assert window_starts(1, window) == [0]
    assert window_starts(window, window) == [0]
    for n in (window + 1, 2 * window, 2 * window + 7, 600_001):
        starts = window_starts(n, window)
        assert len(starts) == -(-n // window)
        assert starts[0] == 0 and starts[-1] == n - window
        assert all(0 < b - a <= window for a, b in zip(starts, starts[1:]))


def test_bad_input_is_refused(scorer: ClapScorer) -> None:
    with pytest.raises(InputError, match="empty"):
        scorer.embed_audio([np.zeros(0, np.float32)], RATE)
    with pytest.raises(InputError, match="positive integer"):
        scorer.embed_audio([_noise(1.0, 0)], 0)
    with pytest.raises(InputError, match="NaN"):
        scorer.embed_audio([np.full(100, np.nan, np.float32)], RATE)
    with pytest.raises(InputError, match="list of waveforms"):
        scorer.score(_noise(1.0, 0), RATE, _noise(1.0, 0), RATE, "noise")


@pytest.mark.parametrize("name", ["laion/no-such-clap-model", "./no/such/clap/dir"])
def test_unknown_model_fails_fast_in_one_line(name: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as caught:
        ClapScorer.from_pretrained(name)
    assert time.monotonic() - start < 5.0
    message = str(caught.value)
    assert name in message and "huggingface-cli download" in message and "\n" not in message


def test_offline_tokenizer_stub_is_rejected(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "stub-tokenizer"
    shutil.copytree(tiny_dir, broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    RobertaTokenizer().save_pretrained(broken)  # what an offline hub miss can hand back: 5 tokens
    with pytest.raises(NrtError, match="5 tokens"):
        ClapScorer.from_pretrained(broken)


def test_builtin_tiny_is_built_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NRT_CACHE", str(tmp_path))
    first = ClapScorer.from_pretrained("tiny")
    built = next(tmp_path.glob("clap-tiny-v*"))
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    second = ClapScorer.from_pretrained("tiny")
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp
    clip = _chirp(1.0)
    torch.testing.assert_close(first.embed_audio([clip], RATE), second.embed_audio([clip], RATE), atol=0, rtol=0)
    assert isinstance(first.model, ClapModel)
