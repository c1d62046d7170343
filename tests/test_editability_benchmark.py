"""The editability benchmark's bookkeeping: which cases it runs, what it measures, how it reports."""

import csv

import pytest

from tests.service_setup import ROOT, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module("mini_editability", ROOT / "benchmarks" / "mini_editability.py")


def test_the_cases_of_the_chosen_types_are_written_beside_the_manifest(bench, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "id,edit_type,audio,target_prompt,mask,reference\n"
        "a,addition,audio/a.wav,x,,reference/a.wav\n"
        "g,inpainting,audio/g.wav,y,0.5-1.0,reference/g.wav\n"
        "s,style_transfer,audio/s.wav,z,,reference/s.wav\n"
    )
    part = bench.type_manifest(manifest, ["addition", "style_transfer"])
    assert part.parent == tmp_path  # relative audio paths still hold
    with open(part, newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["a", "s"]
    with pytest.raises(SystemExit, match="no case of"):
        bench.type_manifest(manifest, ["nothing"])


def test_only_merged_outputs_count_each_against_its_cases_input(bench):
    def clip(cid, d_input, d_kept, d_plain, gain):
        return {"id": cid, "edit_type": "addition", "methods": {
            "lora-inversion": {"values": [{"value": 1.0, "ref_logmel_l1": d_plain, "input_ref_logmel_l1": d_input}]},
            "lora-inversion+keep10": {"values": [{"value": 1.0, "ref_logmel_l1": d_kept, "ref_gain": gain}]},
            "ddpm-inversion+keep10": {"values": [{"value": 0.8, "ref_logmel_l1": d_input, "ref_gain": 0.0}]},
        }}  # fmt: skip

    cases = bench.per_case({"clips": [clip("a", 7.0, 6.5, 9.0, 0.25), clip("b", 5.0, 5.5, 8.0, None)]}, 10.0)
    assert cases[("addition", "lora-inversion", 1.0)] == {
        "a": {"delta": pytest.approx(-0.5), "gain": 0.25},
        "b": {"delta": pytest.approx(0.5), "gain": None},
    }
    assert bench.per_case({"clips": [clip("a", 7.0, 6.5, 9.0, 0.1)]}, 6.0) == {}  # no output merged at 6 dB
    # paired against each baseline, over the cases where both gains are defined
    (pair,) = bench.paired(cases)
    assert (pair["method"], pair["baseline"], pair["baseline_value"]) == ("lora-inversion", "ddpm-inversion", 0.8)
    assert pair["gain_difference"]["n"] == 1 and pair["gain_difference"]["mean"] == pytest.approx(0.25)


def test_variants_are_a_guidance_and_maybe_step_2_steps(bench):
    import argparse

    assert bench.parse_variant("3") == (3.0, None) and bench.parse_variant("2.5:50") == (2.5, 50)
    assert bench.variant(3.0, None) == "g3" and bench.variant(3.0, 0) == "g3-tune0"
    for bad in ("x", "3:x", "0.5", "3:-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_variant(bad)


def test_the_table_has_a_column_per_variant(bench):
    from nrt.report import interval

    rows = [
        {"guidance": g, "tune_steps": t, "edit_type": "style_transfer", "method": "lora-inversion", "value": 1.0,
         "delta": interval(v), "gain": interval([0.1])}
        for g, t, v in ((2.0, None, [-0.5, -0.3]), (6.0, None, [0.8]), (3.0, 50, [-1.0]))
    ]  # fmt: skip
    pairs = [{"guidance": 3.0, "tune_steps": 50, "edit_type": "style_transfer", "method": "lora-inversion",
              "value": 1.0, "baseline": "sdedit", "baseline_value": 0.8, "gain_difference": interval([0.2, 0.4])}]  # fmt: skip
    settings = {"command": "python benchmarks/mini_editability.py", "variants": [[2.0, None], [6.0, None], [3.0, 50]],
                "types": ["style_transfer"], "cases": 2, "t_start": 0.8, "steps": 50, "keep_db": 10.0,
                "seconds": 60.0}  # fmt: skip
    text = bench.render({"settings": settings, "rows": rows, "paired": pairs})
    assert "(selection set)" in text  # a summary written before --set read as the selection's
    assert "| edit type | method | value | guidance 2 | guidance 6 | guidance 3, 50 step 2 steps |" in text
    assert "| style_transfer | lora-inversion | 1 | -0.400 [-1.671, 0.871] | 0.800 | -1.000 |" in text
    assert "| style_transfer | lora-inversion | 1 | 0.100 | 0.100 | 0.100 |" in text  # the gains
    assert "| guidance 3, 50 step 2 steps | style_transfer | lora-inversion | 1 | sdedit | 0.8 | 0.300 [" in text


def test_the_committed_results_render_to_the_committed_report(bench):
    import json

    results = ROOT / "benchmarks" / "results" / "mini_faithful"
    saved = json.loads((results / "editability.json").read_text(encoding="utf-8"))
    assert [tuple(v) for v in saved["settings"]["variants"]][:3] == [(2.0, None), (3.0, None), (6.0, None)]
    assert saved["rows"] and saved["paired"]
    assert bench.render(saved) == (results / "editability.md").read_text(encoding="utf-8")
    report = json.loads((results / "editability_report.json").read_text(encoding="utf-8"))
    assert report["settings"]["set"] == "report"
    assert bench.render(report) == (results / "editability_report.md").read_text(encoding="utf-8")
