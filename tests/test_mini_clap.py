"""nrt-mini's CLAP: the built model loads in the scorer, features match it, training learns and resumes."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nrt.clap import ClapScorer
from nrt.mini import clap as mini_clap
from nrt.mini.scenes import SAMPLE_RATE, caption_corpus, caption_vocabulary, scene_for
from nrt.mini.training import CHECKPOINT, TrainConfig


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_clap.build_clap(tmp_path_factory.mktemp("mini-clap"))


@pytest.fixture(scope="module")
def scorer(clap_dir: Path) -> ClapScorer:
    return ClapScorer.from_pretrained(clap_dir)


def _waves(n: int) -> np.ndarray:
    return np.stack([scene_for("heldout", i).render(SAMPLE_RATE) for i in range(n)])


def test_built_model_loads_in_the_scorer_and_scores(clap_dir: Path, scorer: ClapScorer) -> None:
    size = sum(f.stat().st_size for f in clap_dir.iterdir())
    assert size <= 8e6, f"{size / 1e6:.1f} MB on disk"
    params = sum(p.numel() for p in scorer.model.parameters())
    assert 1e6 <= params <= 3e6
    assert scorer.model.dtype == torch.float32  # stored as float16, loaded as float32
    assert (scorer.sample_rate, scorer.window_samples) == (16_000, 48_000)
    waves = list(_waves(3))
    scores = scorer.score(waves[1:], SAMPLE_RATE, waves[0], SAMPLE_RATE, scene_for("heldout", 0).caption())
    assert np.isfinite(scores.text).all() and np.isfinite(scores.audio).all()
    # Clips must not all collapse onto one embedding before training.
    audio = scorer.embed_audio(waves, SAMPLE_RATE)
    assert (audio @ audio.T).min() < 0.999


def test_tokenizer_knows_every_caption_word(scorer: ClapScorer) -> None:
    tok = scorer.tokenizer
    words = caption_vocabulary()
    for text in [" ".join(words), *caption_corpus(200)]:
        assert tok.unk_token_id not in tok(text)["input_ids"], text
    # Frequent words are whole tokens (plus <s> and </s>).
    assert all(len(tok(" " + w, add_special_tokens=False)["input_ids"]) <= 3 for w in words)


def test_featurize_equals_the_scorers_features(scorer: ClapScorer) -> None:
    waves = _waves(4)
    ours = pickle.loads(pickle.dumps(mini_clap.featurizer(scorer.feature_extractor)))(waves)
    theirs = scorer.features(list(waves))["input_features"].numpy()
    assert ours.dtype == np.float16 and ours.shape == theirs.shape == (4, 1, 256, 64)
    np.testing.assert_allclose(ours.astype(np.float32), theirs, rtol=1e-3, atol=1e-3)


def test_training_lowers_the_heldout_loss(tmp_path: Path) -> None:
    config = TrainConfig(steps=60, lr=1e-3, warmup=5, ema_decay=0.5, checkpoint_every=100)
    # caption contrast alone: the hard negatives' batches are checked on their own below
    out = mini_clap.train_clap(
        tmp_path / "run", tmp_path / "out", bank_size=256, config=config, batch_size=8, device="cpu",
        workers=1, progress=False, hard_negatives=False,
    )
    base, tok, extractor = mini_clap.load_parts(tmp_path / "run" / "base")
    trained, _, _ = mini_clap.load_parts(out)
    batch = mini_clap.heldout_batch(extractor, tok, 16)
    before, after = mini_clap.evaluate_loss(base, batch), mini_clap.evaluate_loss(trained, batch)
    # Better than before, and better than any guess that ignores the inputs (log 16).
    assert after < before - 0.15, (before, after)
    assert after < math.log(16) - 0.1, (before, after)
    summary = json.loads((out / "training.json").read_text())
    assert summary["step"] == 60 and summary["finished"]


def test_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    def run(steps: int) -> dict:
        config = TrainConfig(steps=steps, warmup=2, checkpoint_every=100)
        mini_clap.train_clap(
            tmp_path / "run", tmp_path / "out", bank_size=16, config=config, batch_size=4, device="cpu",
            workers=1, progress=False,
        )
        return torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)

    assert run(10)["step"] == 10
    state = run(20)
    assert state["step"] == 20 and len(state["losses"]) == 20
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_retrieval_accuracy_reports_rates_and_cosines(scorer: ClapScorer) -> None:
    r = mini_clap.retrieval_accuracy(scorer, [scene_for("heldout", i) for i in range(4)])
    assert r["n"] == 4 and r["chance"] == 0.25
    for key in ("text_to_audio", "audio_to_text", "text_to_audio_content", "audio_to_text_content"):
        assert 0 <= r[key] <= 1
    assert r["text_to_audio_content"] >= r["text_to_audio"]
    assert -1 <= r["mismatched_cosine"] <= 1 and -1 <= r["matched_cosine"] <= 1


def test_embedding_retrieval_counts_hits_both_ways() -> None:
    text = torch.eye(3)
    # clip 0 matches caption 0; clips 1 and 2 both sit closest to caption 1
    audio = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.8, 0.6]])
    r = mini_clap.embedding_retrieval(text, audio)
    assert r["n"] == 3 and r["chance"] == pytest.approx(1 / 3)
    assert r["text_to_audio"] == pytest.approx(1.0)  # every caption's best clip is its own
    assert r["audio_to_text"] == pytest.approx(2 / 3)  # clip 2's best caption is caption 1
    assert r["matched_cosine"] == pytest.approx((1 + 1 + 0.6) / 3)
    assert r["mismatched_cosine"] == pytest.approx(0.8 / 6)
    assert "text_to_audio_content" not in r
    # rows 1 and 2 say the same: clip 2's hit on caption 1 then counts
    keyed = mini_clap.embedding_retrieval(text, audio, keys=torch.tensor([0, 1, 1]))
    assert keyed["audio_to_text_content"] == pytest.approx(1.0) and keyed["text_to_audio_content"] == pytest.approx(1.0)
    assert keyed["audio_to_text"] == r["audio_to_text"]
    with pytest.raises(ValueError, match="as many clips as captions"):
        mini_clap.embedding_retrieval(text, audio[:2])


def test_smoke_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clap"
    assert mini_clap.main(["--smoke", "--device", "cpu", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained to step 20/20" in printed and "retrieval on 16 held-out scenes" in printed
    assert ClapScorer.from_pretrained(out).embed_text(["two beeps"]).isfinite().all()


def test_hard_negative_batches_pair_every_scene_with_a_one_event_variant(scorer: ClapScorer) -> None:
    from nrt.mini.bank import SceneBank

    extractor = scorer.feature_extractor
    bank = SceneBank(16, workers=1, featurize=mini_clap.featurizer(extractor), progress=False)
    batches = mini_clap.BankBatches(bank, scorer.tokenizer, 8, torch.device("cpu"), extractor=extractor)
    try:
        batch, again = batches(3), batches(3)
    finally:
        batches.close()
    assert batch.input_features.shape == (8, 1, 256, 64) and batch.overlap.shape == (8, 8)
    assert torch.equal(batch.input_features, again.input_features) and torch.equal(batch.overlap, again.overlap)
    assert torch.equal(batch.overlap, batch.overlap.T) and torch.all(batch.overlap.diagonal() == 1)
    # each variant shares content with its own scene (a swap in a one-event scene shares only a background)
    pairs = batch.overlap[torch.arange(4), torch.arange(4) + 4]
    assert (pairs < 1).sum() >= 1 and (pairs > 0).sum() >= 3, pairs
    with pytest.raises(ValueError, match="even size"):
        mini_clap.BankBatches(bank, scorer.tokenizer, 7, torch.device("cpu"), extractor=extractor)


def test_the_content_term_pulls_audio_cosines_towards_shared_content(clap_dir: Path) -> None:
    model, tok, extractor = mini_clap.load_parts(clap_dir)
    model.eval()
    scenes = [scene_for("heldout", i) for i in range(4)]
    features = torch.from_numpy(mini_clap.featurize(extractor, np.stack([s.render(SAMPLE_RATE) for s in scenes])))
    overlap = mini_clap.overlap_matrix(scenes)
    batch = mini_clap.make_batch(tok, [s.caption(1) for s in scenes], features, mini_clap.content_keys(scenes), overlap)
    with torch.no_grad():
        plain = mini_clap.clap_loss(model, batch, content_weight=0.0)
        weighted = mini_clap.clap_loss(model, batch, content_weight=2.0)
        audio = model.get_audio_features(input_features=batch.input_features)
        audio = getattr(audio, "pooler_output", audio)
        audio = torch.nn.functional.normalize(audio, dim=-1)
    error = (audio @ audio.T - overlap) ** 2
    off = ~torch.eye(4, dtype=torch.bool)
    terms = [error[m].mean() for m in (off & (overlap > 0), off & (overlap <= 0)) if m.any()]
    assert float(weighted - plain) == pytest.approx(2.0 * float(sum(terms) / len(terms)), rel=1e-4)
    assert float(weighted) > float(plain)


def test_training_can_start_from_a_trained_clap(clap_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(steps=2, warmup=1, checkpoint_every=100)
    with pytest.raises(ValueError, match="holds no trained CLAP"):
        mini_clap.train_clap(tmp_path / "bad", tmp_path / "out", bank_size=8, config=config, batch_size=4,
                             device="cpu", workers=1, progress=False, init=tmp_path)
    mini_clap.train_clap(tmp_path / "run", tmp_path / "out", bank_size=8, config=config, batch_size=4,
                         device="cpu", workers=1, progress=False, init=clap_dir)
    start, _, _ = mini_clap.load_parts(tmp_path / "run" / "base")
    init, _, _ = mini_clap.load_parts(clap_dir)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), init.state_dict().values()))
    assert (tmp_path / "run" / "base" / "tokenizer.json").read_bytes() == (clap_dir / "tokenizer.json").read_bytes()
    summary = json.loads((tmp_path / "out" / "training.json").read_text())
    assert summary["init"] == str(clap_dir) and summary["hard_negatives"] and summary["step"] == 2
    # the tokenizer is written as it was read, not with the padding and truncation batching set
    written = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert written["padding"] is None and written["truncation"] is None
