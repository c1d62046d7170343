"""The saved nrt-mini quality and CLAP results still render with the benchmarks' current code."""

import json

import numpy as np
import pytest

from tests.service_setup import ROOT, load_module

RESULTS = ROOT / "benchmarks" / "results" / "mini_quality"


@pytest.fixture(scope="module")
def mini_quality():
    return load_module("mini_quality", ROOT / "benchmarks" / "mini_quality.py")


def test_the_saved_results_render_to_the_committed_report(mini_quality) -> None:
    results = json.loads((RESULTS / "quality.json").read_text(encoding="utf-8"))
    assert mini_quality.render(results) == (RESULTS / "quality.md").read_text(encoding="utf-8")


def test_auc_counts_ties_half_and_needs_both_classes() -> None:
    from nrt.mini.clap import auc

    scores = np.array([0.9, 0.5, 0.5, 0.1])
    positive = np.array([True, True, False, False])
    # pairs (pos, neg): 0.9>0.5, 0.9>0.1, 0.5=0.5 (half), 0.5>0.1 -> 3.5 of 4
    assert auc(scores, positive) == pytest.approx(0.875)
    assert auc(scores, np.ones(4, dtype=bool)) is None


def test_the_saved_clap_results_render_to_the_committed_report() -> None:
    module = load_module("mini_clap", ROOT / "benchmarks" / "mini_clap.py")
    saved = json.loads((ROOT / "benchmarks" / "results" / "mini_clap" / "clap.json").read_text(encoding="utf-8"))
    rendered = module.render(saved["results"], saved["command"])
    assert rendered == (ROOT / "benchmarks" / "results" / "mini_clap" / "clap.md").read_text(encoding="utf-8")
    assert "| all: closer than unrelated (median gap) | 89.3% (+0.673) | 95.3% (+0.515) |" in rendered


def test_staying_put_scores_each_scene_against_its_own_edit_and_round_trip(mini_quality, tiny_dir) -> None:
    from nrt.scoring import load_scorer

    stay = mini_quality.part_stay(load_scorer("mini", progress=False), str(tiny_dir), n=2, first=5000)
    assert stay["cosine"]["n"] == stay["codec_cosine"]["n"] == 2
    assert stay["cosine"]["lo"] <= stay["cosine"]["mean"] <= stay["cosine"]["hi"] and -1 <= stay["cosine"]["mean"] <= 1
    assert stay["at_target"] in (0.0, 0.5, 1.0) and stay["first_scene"] == 5000
    assert stay["t2a_weights"].startswith(str(tiny_dir))
    # the codec's round trip of a scene is closer to it than an edit of an untrained model
    assert stay["codec_cosine"]["mean"] > stay["cosine"]["mean"]
    report = mini_quality.render({"stay": {**stay, "clap_weights": "abc"}})
    assert "## Staying put" in report and "from held-out scene 5000" in report
