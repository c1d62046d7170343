"""The guidance benchmark's bookkeeping: which cases it runs, what it measures, how it reports."""

import csv

import pytest

from tests.service_setup import ROOT, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module("mini_guidance", ROOT / "benchmarks" / "mini_guidance.py")


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
    def clip(cid, d_input, d_kept, d_plain):
        return {"id": cid, "edit_type": "addition", "methods": {
            "lora-inversion": {"values": [{"value": 1.0, "ref_logmel_l1": d_plain, "input_ref_logmel_l1": d_input}]},
            "lora-inversion+keep10": {"values": [{"value": 1.0, "ref_logmel_l1": d_kept}]},
        }}  # fmt: skip

    rows = bench.deltas({"clips": [clip("a", 7.0, 6.5, 9.0), clip("b", 5.0, 5.5, 8.0)]}, 10.0)
    assert rows == {("addition", "lora-inversion", 1.0): [pytest.approx(-0.5), pytest.approx(0.5)]}
    assert bench.deltas({"clips": [clip("a", 7.0, 6.5, 9.0)]}, 6.0) == {}  # no output merged at 6 dB


def test_the_table_has_a_column_per_guidance(bench):
    from nrt.report import interval

    rows = [
        {"guidance": g, "edit_type": "style_transfer", "method": "lora-inversion", "value": 1.0, "delta": interval(v)}
        for g, v in ((2.0, [-0.5, -0.3]), (6.0, [0.8]))
    ]
    settings = {"command": "python benchmarks/mini_guidance.py", "guidance": [2.0, 6.0], "types": ["style_transfer"],
                "cases": 2, "t_start": 0.8, "steps": 50, "keep_db": 10.0, "seconds": 60.0}  # fmt: skip
    text = bench.render({"settings": settings, "rows": rows})
    assert "| edit type | method | value | guidance 2 | guidance 6 |" in text
    assert "| style_transfer | lora-inversion | 1 | -0.400 [-1.671, 0.871] | 0.800 |" in text


def test_the_committed_results_render_to_the_committed_report(bench):
    import json

    results = ROOT / "benchmarks" / "results" / "mini_faithful"
    saved = json.loads((results / "guidance.json").read_text(encoding="utf-8"))
    assert saved["settings"]["guidance"] == [2.0, 3.0, 6.0] and saved["rows"]
    assert bench.render(saved) == (results / "guidance.md").read_text(encoding="utf-8")
