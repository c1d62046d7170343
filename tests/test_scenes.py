import hashlib
import re
from dataclasses import replace

import numpy as np
import pytest

from nrt.mini.scenes import (
    BACKGROUNDS,
    CHANGES,
    CLIP_SECONDS,
    EDIT_TYPES,
    HELDOUT_PAIRS,
    KINDS,
    SAMPLE_RATE,
    EditCase,
    Event,
    Scene,
    caption_corpus,
    caption_vocabulary,
    caption_words,
    content_overlap,
    edit_cases,
    find_mention,
    sample_scene,
    scene_for,
    vary_scene,
)

REQUIRED_KINDS = ("beep", "siren", "knock", "bell", "hum", "rain", "click", "chirp", "footsteps", "burst")


def _digest(audio: np.ndarray) -> str:
    return hashlib.sha1(audio.tobytes()).hexdigest()


def _has_pair(kinds) -> bool:
    return any(a in kinds and b in kinds for a, b in HELDOUT_PAIRS)


@pytest.fixture(scope="module")
def cases() -> list[EditCase]:
    return edit_cases(n_per_type=6)


# --------------------------------------------------------------------------- kinds


def test_kinds_and_backgrounds_are_described():
    assert len(KINDS) >= 10 and set(REQUIRED_KINDS) <= set(KINDS)
    assert len(BACKGROUNDS) >= 2
    for name, kind in {**KINDS, **BACKGROUNDS}.items():
        assert kind.name == name and kind.noun and kind.words
        assert all(word == word.lower() for word in kind.words)
    for a, b in HELDOUT_PAIRS:
        assert a in KINDS and b in KINDS and a != b
    assert len(set(map(frozenset, HELDOUT_PAIRS))) == len(HELDOUT_PAIRS)


def _band_energies(audio: np.ndarray) -> np.ndarray:
    """Log energies in 20 log-spaced bands, 60 Hz to 7.8 kHz, with the overall level removed."""
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    bands = np.add.reduceat(power, np.searchsorted(freqs, np.geomspace(60, 7800, 21)))[:-1]
    log = np.log(bands + 1e-6 * power.sum())
    return log - log.mean()


def test_kinds_have_distinct_spectra():
    # Nearest centroid over band energies: one centroid per (kind, variant) from a few seeds,
    # tested on solo events with other seeds, onsets, durations and levels.
    keys, centroids = [], []
    for name, kind in KINDS.items():
        for variant in range(kind.n_variants):
            low, high = kind.durations
            feats = [
                _band_energies(Scene((Event(name, 0.2, (low + high) / 2, 0.8, variant),), None, seed).render())
                for seed in range(3)
            ]
            keys.append(name)
            centroids.append(np.mean(feats, axis=0))
    centroids = np.stack(centroids)
    rng = np.random.default_rng(1234)
    hits = {name: 0 for name in KINDS}
    trials = 8
    for name in KINDS:
        for _ in range(trials):
            scene = sample_scene(rng, kinds=[name], n_events=1, background=None)
            distances = ((centroids - _band_energies(scene.render())) ** 2).sum(axis=1)
            hits[name] += keys[int(distances.argmin())] == name
    accuracy = sum(hits.values()) / (trials * len(KINDS))
    assert accuracy > 0.8, hits
    assert min(hits.values()) >= trials // 2, hits


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("index", range(6))
def test_render_is_normalised_float32_of_clip_length(index):
    scene = scene_for("train", index)
    audio = scene.render()
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == round(CLIP_SECONDS * SAMPLE_RATE) == 40960
    assert np.isfinite(audio).all()
    assert abs(float(np.abs(audio).max()) - 0.9) < 1e-6


@pytest.mark.parametrize("duration, rate", [(2.56, 22050), (1.0, 16000), (4.0, 44100)])
def test_render_other_durations_and_rates(duration, rate):
    scene = sample_scene(np.random.default_rng(3), duration=duration)
    audio = scene.render(rate)
    assert len(audio) == round(duration * rate)
    assert abs(float(np.abs(audio).max()) - 0.9) < 1e-6
    assert all(event.end <= duration + 1e-9 for event in scene.events)


def test_render_and_caption_are_deterministic():
    for index in range(5):
        a, b = scene_for("train", index), scene_for("train", index)
        assert a == b
        assert _digest(a.render()) == _digest(b.render())
        assert [a.caption(v) for v in range(8)] == [b.caption(v) for v in range(8)]
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    assert sample_scene(rng_a) == sample_scene(rng_b)


def test_different_seeds_render_differently():
    events = (Event("rain", 0.2, 1.5, 0.8, 0), Event("beep", 1.0, 0.5, 0.6, 2))
    renders = {_digest(Scene(events, None, seed).render()) for seed in range(5)}
    assert len(renders) == 5
    assert len({scene_for("train", i) for i in range(50)}) == 50


def test_every_event_is_audible():
    # An event's own stretch of the clip carries its energy: no event renders silent.
    for index in range(30):
        scene = scene_for("heldout", index)
        audio = scene.render()
        for event in scene.events:
            start = round(event.onset * SAMPLE_RATE)
            stretch = audio[start : start + round(event.duration * SAMPLE_RATE)]
            assert np.abs(stretch).max() > 0.05


def test_shared_events_render_identically():
    # Adding an event after another leaves the first one's samples as they were, up to the
    # mix's normalisation gain.
    first = Event("bell", 0.1, 1.0, 0.7, 0)
    later = Event("siren", 1.4, 1.0, 0.9, 1)
    alone = Scene((first,), None, 42).render()
    both = Scene((first, later), None, 42).render()
    head = slice(0, round(1.35 * SAMPLE_RATE))
    gain = float(both[head] @ alone[head] / (alone[head] @ alone[head]))
    np.testing.assert_allclose(both[head], gain * alone[head], atol=1e-6)
    # And replacing the later event by another kind changes nothing before it either.
    other = Scene((first, replace(later, kind="whistle", variant=0)), None, 42).render()
    gain = float(other[head] @ alone[head] / (alone[head] @ alone[head]))
    np.testing.assert_allclose(other[head], gain * alone[head], atol=1e-6)


def test_invalid_events_and_scenes_raise():
    good = Event("beep", 0.0, 0.5, 0.5, 0)
    with pytest.raises(ValueError, match="'gong'"):
        Event("gong", 0.0, 0.5, 0.5, 0)
    with pytest.raises(ValueError, match=r"1\.5"):
        Event("beep", 0.0, 0.5, 1.5, 0)
    with pytest.raises(ValueError, match="variant"):
        Event("beep", 0.0, 0.5, 0.5, 3)
    with pytest.raises(ValueError, match=r"-0\.1"):
        Event("beep", -0.1, 0.5, 0.5, 0)
    with pytest.raises(ValueError, match="got 0"):
        Scene((), None, 0)
    with pytest.raises(ValueError, match="got 4"):
        Scene((good,) * 4, None, 0)
    with pytest.raises(ValueError, match="'snow'"):
        Scene((good,), "snow", 0)
    with pytest.raises(ValueError, match="ends after"):
        Scene((Event("beep", 2.3, 0.5, 0.5, 0),), None, 0)
    with pytest.raises(ValueError, match="8000"):
        Scene((good,), None, 0).render(8000)


def test_events_are_sorted_by_onset():
    late, early = Event("bell", 1.0, 1.0, 0.5, 0), Event("beep", 0.2, 0.3, 0.5, 0)
    scene = Scene((late, early), None, 1)
    assert scene.events == (early, late)
    assert scene.kinds == ("beep", "bell")


# --------------------------------------------------------------------------- sampling


def test_sample_scene_respects_its_arguments():
    rng = np.random.default_rng(0)
    counts, backgrounds = set(), set()
    for _ in range(200):
        scene = sample_scene(rng)
        counts.add(len(scene.events))
        backgrounds.add(scene.background)
        assert len(set(scene.kinds)) == len(scene.kinds)
        assert all(0.1 <= e.level <= 1 and e.end <= CLIP_SECONDS + 1e-9 for e in scene.events)
        assert list(scene.kinds) == [e.kind for e in sorted(scene.events, key=lambda e: e.onset)]
    assert counts == {1, 2, 3}
    assert backgrounds == {None, *BACKGROUNDS}
    scene = sample_scene(rng, kinds=["bell", "rain"], n_events=2, background="wind")
    assert sorted(scene.kinds) == ["bell", "rain"] and scene.background == "wind"
    assert sample_scene(rng, background=None).background is None
    with pytest.raises(ValueError, match="'gong'"):
        sample_scene(rng, kinds=["gong"])
    with pytest.raises(ValueError, match="n_events"):
        sample_scene(rng, kinds=["bell", "rain"], n_events=3)
    with pytest.raises(ValueError, match="'snow'"):
        sample_scene(rng, background="snow")


def test_splits_never_share_a_scene():
    train = [scene_for("train", i) for i in range(300)]
    heldout = [scene_for("heldout", i) for i in range(300)]
    assert {s.seed for s in train}.isdisjoint({s.seed for s in heldout})
    assert all(s.seed % 2 == 0 for s in train) and all(s.seed % 2 == 1 for s in heldout)
    train_audio = {_digest(s.render()) for s in train}
    heldout_audio = {_digest(s.render()) for s in heldout}
    assert len(train_audio) == len(heldout_audio) == 300
    assert train_audio.isdisjoint(heldout_audio)


def test_train_avoids_heldout_pairs():
    assert not any(_has_pair(scene_for("train", i).kinds) for i in range(2000))


def test_heldout_holds_heldout_pairs():
    scenes = [scene_for("heldout", i) for i in range(100)]
    assert sum(_has_pair(s.kinds) for s in scenes) >= 50
    for a, b in HELDOUT_PAIRS:
        assert any(a in s.kinds and b in s.kinds for s in scenes)


def test_scene_for_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'test'"):
        scene_for("test", 0)
    with pytest.raises(ValueError, match="-1"):
        scene_for("train", -1)


# --------------------------------------------------------------------------- captions


def _caption_scenes() -> list[Scene]:
    return [scene_for(split, i) for split in ("train", "heldout") for i in range(150)]


def test_captions_mention_kinds_in_onset_order_and_background():
    for scene in _caption_scenes():
        for variant in range(6):
            caption = scene.caption(variant)
            positions = [find_mention(caption, KINDS[kind].words) for kind in scene.kinds]
            assert min(positions) >= 0, caption
            assert positions == sorted(positions) and len(set(positions)) == len(positions), caption
            for name, kind in KINDS.items():
                if name not in scene.kinds:
                    assert find_mention(caption, kind.words) == -1, (name, caption)
            for name, background in BACKGROUNDS.items():
                assert (find_mention(caption, background.words) >= 0) == (name == scene.background), caption


def test_captions_use_only_vocabulary_words():
    vocabulary = caption_vocabulary()
    assert vocabulary == sorted(set(vocabulary))
    assert all(word == word.lower() and re.fullmatch(r"[a-z]+", word) for word in vocabulary)
    known = set(vocabulary)
    for scene in _caption_scenes():
        for variant in range(8):
            caption = scene.caption(variant)
            assert caption == caption.strip() and "  " not in caption
            assert set(caption_words(caption)) <= known, caption


def test_caption_wordings_vary_but_canonical_one_depends_on_content_only():
    scene = Scene((Event("beep", 0.1, 0.62, 0.8, 2), Event("bell", 1.0, 1.5, 0.6, 0)), "static", 5)
    assert scene.caption() == "three high beeps, then a church bell, over soft static"
    wordings = {scene.caption(v) for v in range(8)}
    assert len(wordings) >= 4
    assert replace(scene, seed=6).caption() == scene.caption()
    overlapping = Scene((Event("siren", 0.1, 2.0, 0.8, 0), Event("footsteps", 0.8, 1.5, 0.6, 0)), None, 5)
    assert overlapping.caption() == "a wailing siren while slow footsteps pass"
    with pytest.raises(ValueError, match="-1"):
        scene.caption(-1)


def test_caption_corpus():
    corpus = caption_corpus(300)
    assert len(corpus) == 300 and corpus == caption_corpus(300)
    assert caption_corpus(300, seed=1) != corpus
    assert len(set(corpus)) > 150
    words = {word for caption in corpus for word in caption_words(caption)}
    assert words <= set(caption_vocabulary())


# --------------------------------------------------------------------------- edit cases


def test_edit_cases_are_ordered_and_deterministic(cases):
    assert [c.edit_type for c in cases] == [t for t in EDIT_TYPES for _ in range(6)]
    assert len({c.id for c in cases}) == len(cases)
    assert all(re.fullmatch(r"[a-z0-9-]+", c.id) for c in cases)
    assert [c.id for c in cases[:2]] == ["add-000", "add-001"]
    assert cases == edit_cases(n_per_type=6)
    # A case depends on its own index only: fewer cases are a prefix of more.
    fewer = edit_cases(n_per_type=3)
    assert [c for c in cases if int(c.id[-3:]) < 3] == fewer
    assert edit_cases(n_per_type=2, seed=1) != edit_cases(n_per_type=2)


def test_edit_cases_share_seeds_and_come_from_heldout_seeds(cases):
    for case in cases:
        assert case.source.seed == case.target.seed
        assert case.target.seed % 2 == 1  # train seeds are even
        assert case.target_prompt == case.target.caption()
        assert case.source.duration == case.target.duration == CLIP_SECONDS
    for edit_type in EDIT_TYPES:
        targets = [c.target for c in cases if c.edit_type == edit_type]
        assert sum(_has_pair(t.kinds) for t in targets) >= len(targets) // 2


def test_addition_cases(cases):
    for case in (c for c in cases if c.edit_type == "addition"):
        assert 1 <= len(case.source.events) <= 2 and case.mask is None
        assert len(case.target.events) == len(case.source.events) + 1
        assert set(case.source.events) < set(case.target.events)
        (added,) = set(case.target.events) - set(case.source.events)
        assert added.kind not in case.source.kinds
        assert case.source.background == case.target.background
        np.testing.assert_array_equal(case.source_audio(), case.source.render())


def _check_style_transfer(case: EditCase) -> None:
    source, target = case.source.events, case.target.events
    assert len(source) == len(target) and case.mask is None
    assert [(e.onset, e.duration, e.level) for e in source] == [(e.onset, e.duration, e.level) for e in target]
    changed = [(a, b) for a, b in zip(source, target, strict=True) if a != b]
    assert len(changed) == 1
    before, after = changed[0]
    assert before.kind != after.kind and after.kind not in case.source.kinds
    assert case.source.background == case.target.background


def test_style_transfer_cases(cases):
    for case in (c for c in cases if c.edit_type == "style_transfer"):
        _check_style_transfer(case)


def test_many_edit_cases_for_many_seeds():
    # An even style case that drew three events and chose to change the last one used to
    # raise IndexError: from 20 cases per type at seed 0, and for most seeds at 40.
    for seed in range(21):
        cases = edit_cases(n_per_type=40, seed=seed)
        assert [c.edit_type for c in cases] == [t for t in EDIT_TYPES for _ in range(40)]
        for case in (c for c in cases if c.edit_type == "style_transfer"):
            _check_style_transfer(case)


def test_published_edit_cases_are_unchanged():
    # benchmarks/results were measured on these cases (10 per type at seed 0); a change to
    # the case generator that alters them makes those results unreproducible.
    digest = hashlib.sha1(repr(edit_cases(n_per_type=10)).encode()).hexdigest()
    assert digest == "407081036d2b01beb3900fefe1e90b5f47dbe355"


def test_inpainting_cases(cases):
    for case in (c for c in cases if c.edit_type == "inpainting"):
        start, end = case.mask
        assert 0 <= start < end <= CLIP_SECONDS and 0.3 - 1e-9 <= end - start <= 0.8 + 1e-9
        assert 2 <= len(case.target.events) <= 3
        inside = [e for e in case.target.events if start <= e.onset and e.end <= end + 1e-9]
        assert len(inside) == 1
        assert case.source.events == tuple(e for e in case.target.events if e is not inside[0])
        audio, target = case.source_audio(), case.target.render()
        a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        assert not audio[a:b].any()
        np.testing.assert_array_equal(audio[:a], target[:a])
        np.testing.assert_array_equal(audio[b:], target[b:])
        assert target[a:b].any()


def test_edit_case_validation():
    scene = scene_for("heldout", 1)
    with pytest.raises(ValueError, match="'swap'"):
        EditCase("x-000", "swap", scene, scene, scene.caption(), None)
    with pytest.raises(ValueError, match="'Add 1'"):
        EditCase("Add 1", "addition", scene, scene, scene.caption(), None)
    with pytest.raises(ValueError, match="mask"):
        EditCase("add-000", "addition", scene, scene, scene.caption(), (0.1, 0.5))


# --------------------------------------------------------------------------- one-event changes


def test_each_change_changes_one_event_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    made = {change: 0 for change in CHANGES}
    for index in range(200):
        scene = scene_for("train", index)
        for change in CHANGES:
            variant = vary_scene(scene, rng, change)
            if variant is None:  # a full scene takes no event more, a scene of one keeps it; a move or
                # swap finds no place in 20 tries when the events fill the clip
                assert change != "add" or len(scene.events) == 3
                assert change != "remove" or len(scene.events) == 1
                continue
            made[change] += 1
            assert variant.seed == scene.seed and variant.background == scene.background
            assert not _has_pair(variant.kinds)  # a train scene's variant stays a train scene
            before, after = set(scene.events), set(variant.events)
            if change == "add":
                assert before < after and len(after - before) == 1
                assert (after - before).pop().kind not in scene.kinds
            elif change == "remove":
                assert after < before and len(before - after) == 1
            else:
                assert len(before - after) == len(after - before) == 1
                old, new = (before - after).pop(), (after - before).pop()
                if change == "move":
                    assert (new.kind, new.variant, new.duration) == (old.kind, old.variant, old.duration)
                    assert abs(new.onset - old.onset) >= 0.2
                    assert content_overlap(scene, variant) == 1.0
                else:
                    assert new.kind not in scene.kinds
            # the events both scenes hold render the same samples
            shared = before & after
            if shared and change != "move":
                only = replace(scene, events=tuple(shared), background=None)
                assert np.array_equal(only.render(), replace(variant, events=tuple(shared), background=None).render())
    assert all(count > 20 for count in made.values()), made
    with pytest.raises(ValueError, match="unknown change"):
        vary_scene(scene_for("train", 0), rng, "shuffle")


def test_content_overlap_counts_shared_events():
    beep = Event("beep", 0.1, 0.3, 0.8, 0)
    bell = Event("bell", 0.8, 1.0, 0.8, 0)
    siren = Event("siren", 1.0, 1.2, 0.8, 0)
    full = Scene((beep, bell, siren), None, 2)
    assert content_overlap(full, full) == 1.0
    # timing and level do not count, kind and variant do
    moved = Scene((replace(beep, onset=0.5, level=0.3), bell, siren), None, 4)
    assert content_overlap(full, moved) == 1.0
    two, one = Scene((beep, bell), None, 2), Scene((beep,), None, 2)
    assert content_overlap(full, two) == pytest.approx(2 / 3)
    assert content_overlap(full, one) == pytest.approx(1 / 3)
    assert content_overlap(two, full) == content_overlap(full, two)
    assert content_overlap(one, Scene((siren,), None, 2)) == 0.0
    assert content_overlap(one, Scene((replace(beep, variant=2),), None, 2)) == pytest.approx(0.5 / 1.5)
    # a shared background counts half an event; a background on one side only enlarges it
    assert content_overlap(Scene((beep,), "wind", 2), Scene((siren,), "wind", 2)) == pytest.approx(0.5 / 2.5)
    assert content_overlap(Scene((beep,), "wind", 2), one) == pytest.approx(1 / 1.5)
