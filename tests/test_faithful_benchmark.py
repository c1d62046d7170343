"""The faithful-edits benchmark's choices: the start, t_start and η it makes nrt-mini's defaults."""

import csv

import pytest

from tests.service_setup import ROOT, load_module


@pytest.fixture(scope="module")
def bench():
    return load_module("mini_faithful", ROOT / "benchmarks" / "mini_faithful.py")


def fake_results(distance):
    """``nrt eval`` results whose distance to the reference is ``distance(method, clip, value)``."""
    clips = []
    for edit_type, prefix in (("addition", "add"), ("style_transfer", "style"), ("inpainting", "inpaint")):
        for k in range(2):
            clip_id = f"{prefix}-{k}"
            methods = {}
            for method, grid in (
                ("lora", (0.0, 0.5, 1.0)),
                ("lora-inversion", (0.0, 0.5, 1.0)),
                ("full", (0.0, 0.5, 1.0)),
                ("full-inversion", (0.0, 0.5, 1.0)),
                ("sdedit", (0.2, 0.6)),
            ):
                values = []
                for v in grid:
                    d = distance(method, edit_type, v)
                    values.append({"value": v, "in_grid": True, "ref_logmel_l1": d, "ref_gain": (10 - d) / 10,
                                   "ref_codec_gain": (10 - d) / 9})
                methods[method] = {"values": values}
            reference = {"input": {"ref_logmel_l1": 10.0, "ref_gain": 0.0, "ref_codec_gain": 0.0}}
            clips.append({"id": clip_id, "edit_type": edit_type, "methods": methods, "reference": reference})
    return {"clips": clips}


def test_the_closest_start_and_its_etas_become_the_defaults(bench):
    def distance(t_start):
        def at(method, edit_type, eta):
            if method.endswith("inversion"):  # closest at t_start 0.4, at η 0.5 (lora) or 1 (full)
                best = 0.5 if method.startswith("lora") else 1.0
                return 3 + abs(eta - best) + (0 if t_start == 0.4 else 2) + (0.5 if method.startswith("full") else 0)
            if method == "sdedit":
                return 6 - eta
            return 8 + eta  # the noise start: far, closest at η 0
        return at

    runs = {t: fake_results(distance(t)) for t in (0.4, 0.7)}
    methods = ["lora", "lora-inversion", "full", "full-inversion", "sdedit"]
    selection = bench.select(runs, methods)
    assert selection["t_start"] == 0.4
    assert [r["method"] for r in selection["ranking"][:2]] == ["lora-inversion", "full-inversion"]
    chosen = bench.defaults(selection, selection["ranking"][0]["method"])
    assert (chosen["start"], chosen["t_start"]) == ("inversion", 0.4)
    assert chosen["eta"]["lora"] == {"addition": 0.5, "style_transfer": 0.5, "inpainting": 0.5}
    assert chosen["eta"]["full"] == {"addition": 1.0, "style_transfer": 1.0, "inpainting": 1.0}
    assert selection["fixed"]["sdedit"]["addition"]["value"] == 0.6

    # reported at the fixed settings: ours (3 + 0 dB) against SDEdit (5.4 dB) is 2.4 dB closer, case by case
    summary = bench.report(runs[0.4], selection, methods)
    paired = {(r["edit_type"], r["ours"], r["other"]): r for r in summary["paired"]}
    assert paired[("addition", "lora-inversion", "sdedit")]["ref_logmel_l1"]["mean"] == pytest.approx(2.4)
    assert paired[("addition", "lora", "sdedit")]["ref_logmel_l1"]["mean"] == pytest.approx(-2.6)
    rows = {(r["edit_type"], r["method"], r["selection"]): r for r in summary["rows"]}
    assert rows[("style_transfer", "full-inversion", "fixed")]["value"] == 1.0
    assert rows[("style_transfer", "input", "reference")]["gain"]["mean"] == 0.0


def test_the_noise_start_gives_the_plain_methods_etas(bench):
    chosen = bench.defaults(
        {"t_start": 0.6, "fixed": {"lora": {"addition": {"value": 0.25}}, "full": {"inpainting": {"value": 1.0}}}},
        "full",
    )
    assert chosen == {"start": "noise", "t_start": 0.6, "method": "full", "keep_db": None,
                      "eta": {"lora": {"addition": 0.25}, "full": {"inpainting": 1.0}}}
    kept = bench.defaults(
        {"t_start": 0.4, "fixed": {"lora-inversion+keep10": {"addition": {"value": 0.75}},
                                   "lora-inversion": {"addition": {"value": 0.25}}}},
        "lora-inversion+keep10",
    )
    assert (kept["start"], kept["keep_db"], kept["eta"]) == ("inversion", 10.0, {"lora": {"addition": 0.75}})


def test_shards_deal_the_rows_out_beside_the_manifest(bench, tmp_path):
    manifest = tmp_path / "manifest.csv"
    rows = [["id", "edit_type", "audio", "target_prompt"]] + [[f"c{i}", "addition", f"a/{i}.wav", "p, q"]
                                                             for i in range(5)]
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    parts = bench.shard_manifests(manifest, 2)
    assert [p.parent for p in parts] == [tmp_path, tmp_path]  # relative audio paths still hold
    read = [list(csv.reader(p.read_text().splitlines())) for p in parts]
    assert [r[0] for r in read] == [rows[0], rows[0]]
    assert [[row[0] for row in r[1:]] for r in read] == [["c0", "c2", "c4"], ["c1", "c3"]]
    assert read[0][1][3] == "p, q"  # quoting survives
    assert len(bench.shard_manifests(manifest, 9)) == 5  # never an empty part


def test_the_summary_renders_with_the_defaults_to_paste(bench):
    runs = {0.4: fake_results(lambda m, t, v: 3 + v if m.endswith("inversion") else 6 + v)}  # SDEdit: 6.2 at 0.2
    methods = ["lora", "lora-inversion", "full", "full-inversion", "sdedit"]
    selection = bench.select(runs, methods)
    summary = {
        "settings": {"command": "python benchmarks/mini_faithful.py", "select_cases": 6, "report_cases": 6,
                     "steps": 50, "etas": [0.0, 0.5, 1.0], "strengths": [0.2, 0.6], "baseline_t_starts": [0.4],
                     "t_starts": [0.4], "seconds": 60.0},
        "defaults": bench.defaults(selection, selection["ranking"][0]["method"]),
        "selection": selection,
        "report": bench.report(runs[0.4], selection, methods),
        "reproduction": [{"edit_type": "addition", "method": "lora-inversion", "n": 20, "f1_input_min": 0.29,
                          "f1_input_mean": 0.8, "input_at_least_095": 14, "f1_codec_min": 1.0, "f1_codec_mean": 1.0,
                          "codec_at_least_095": 20, "codec_self_f1_mean": 0.8, "codec_self_at_least_095": 14,
                          "logmel_to_codec_max": 0.0071},
                         {"edit_type": "style_transfer", "method": "lora-inversion", "n": 20, "f1_input_min": 0.4,
                          "f1_input_mean": 0.76, "input_at_least_095": 5, "f1_codec_min": 1.0, "f1_codec_mean": 1.0,
                          "codec_at_least_095": 20, "codec_self_f1_mean": 0.76, "codec_self_at_least_095": 5,
                          "logmel_to_codec_max": 0.02, "keep_db": 10.0, "f1_kept_min": 1.0, "kept_at_least_095": 20}],
    }
    text = bench.render(summary)
    assert "| addition | lora-inversion | 20 | 0.29, 0.80, 14 | 1.00, 1.00, 20 | 0.80, 14 | 0.007 | – |" in text
    assert "| 0.76, 5 | 0.020 | 1.00, 20 (10 dB) |" in text
    assert "`MINI_SAMPLE = {'start': 'inversion', 't_start': 0.4, 'keep_db': 0.0}`" in text
    assert "| lora-inversion | addition | 0 | 3.000 | 2 |" in text  # the fixed settings
    del summary["report"], summary["reproduction"]  # --select-only
    assert bench.render(summary).endswith("Not run yet (`--select-only`): rerun without it to resume.\n")
    assert "'lora': {'addition': 0.0, 'style_transfer': 0.0, 'inpainting': 0.0}" in text
    assert "| addition | lora-inversion | sdedit | 3.200 [3.200, 3.200] | 2 |" in text


def test_merged_outputs_are_measured_against_the_reference(bench, tmp_path):
    """An output equal to the codec's round trip of the input, merged, is the input again."""
    import json

    import numpy as np
    import soundfile as sf

    from nrt.audio import load_audio
    from nrt.backbones import load_backbone
    from nrt.reference import ReferenceYardstick, codec_round_trip

    rate = 16_000
    rng = np.random.default_rng(0)
    t = np.arange(rate) / rate
    source = (0.1 * rng.standard_normal(rate)).astype(np.float32)
    target = source + (0.4 * np.sin(2 * np.pi * 800 * t) * (t > 0.5)).astype(np.float32)
    (tmp_path / "audio").mkdir()
    (tmp_path / "reference").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", source, rate, subtype="FLOAT")
    sf.write(tmp_path / "reference" / "a.wav", target, rate, subtype="FLOAT")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,edit_type,audio,target_prompt,reference\na,addition,audio/a.wav,a tone,reference/a.wav\n")
    backbone = load_backbone("tiny", device="cpu")
    codec = codec_round_trip(backbone, load_audio(tmp_path / "audio" / "a.wav"))
    (tmp_path / "run" / "audio" / "a").mkdir(parents=True)
    sf.write(tmp_path / "run" / "audio" / "a" / "lora-inversion-0.00.wav", codec, rate, subtype="FLOAT")
    results = {"clips": [{
        "id": "a", "edit_type": "addition", "audio": str(tmp_path / "audio" / "a.wav"), "mask": None,
        "outputs": [{"method": "lora-inversion", "value": 0.0, "seed": 0, "file": "audio/a/lora-inversion-0.00.wav"}],
        "methods": {"lora-inversion": {"values": [{"value": 0.0, "in_grid": True, "ref_logmel_l1": 9.0}]}},
        "reference": {},
    }]}
    kept = bench.add_kept(results, manifest, tmp_path / "run", "tiny", [10.0])
    row = kept["clips"][0]["methods"]["lora-inversion+keep10"]["values"][0]
    yardstick = ReferenceYardstick(backbone, None, load_audio(tmp_path / "audio" / "a.wav"),
                                   load_audio(tmp_path / "reference" / "a.wav"))
    assert row["value"] == 0.0 and row["ref_logmel_l1"] == pytest.approx(yardstick.input_distance, abs=1e-3)
    assert kept["clips"][0]["methods"]["lora-inversion"] == results["clips"][0]["methods"]["lora-inversion"]
    cache = json.loads((tmp_path / "run" / "keep.json").read_text())
    assert list(cache["a"]) and all(k.startswith("audio/a/lora-inversion-0.00.wav|10|") for k in cache["a"])
    again = bench.add_kept(results, manifest, tmp_path / "run", "tiny", [10.0])  # from the cache
    assert again["clips"][0]["methods"]["lora-inversion+keep10"]["values"][0] == row
    # the reproduction check: as decoded it is the round trip exactly; merged, the input's onsets again
    (check,) = bench.reproduction(results, tmp_path / "run", "tiny", ["lora-inversion"], keep_db=10.0)
    assert check["f1_codec_min"] == 1.0 and check["logmel_to_codec_max"] < 1e-3
    assert check["f1_kept_min"] == 1.0 and check["kept_at_least_095"] == 1 and check["keep_db"] == 10.0
    assert "f1_kept_min" not in bench.reproduction(results, tmp_path / "run", "tiny", ["lora-inversion"])[0]


def test_a_tie_within_a_twentieth_of_a_db_goes_to_the_stronger_edit(bench):
    distances = {"a": {0.0: 7.50, 0.5: 7.52, 1.0: 7.70}, "b": {0.0: 7.60, 0.5: 7.61, 1.0: 7.80}}
    assert bench.closest_setting(distances, ["a", "b"]) == (0.5, pytest.approx(7.565))
    apart = {"a": {0.0: 7.0, 0.5: 7.2}}
    assert bench.closest_setting(apart, ["a"]) == (0.0, 7.0)


def test_inpainting_rows_are_not_merged(bench, tmp_path):
    entry = {"values": [{"value": 1.0, "in_grid": True, "ref_logmel_l1": 3.4}]}
    results = {"clips": [{"id": "g", "edit_type": "inpainting", "audio": "unused.wav", "mask": [[0.5, 1.0]],
                          "outputs": [], "methods": {"lora": entry}, "reference": {}}]}
    kept = bench.add_kept(results, tmp_path / "no-manifest.csv", tmp_path, "tiny", [10.0])
    assert kept["clips"][0]["methods"]["lora+keep10"] == entry


def test_the_committed_results_render_to_the_committed_report(bench):
    import json

    results = ROOT / "benchmarks" / "results" / "mini_faithful"
    saved = json.loads((results / "faithful.json").read_text(encoding="utf-8"))
    assert saved["report"] and saved["reproduction"]  # the report set's run, not --select-only
    assert bench.render(saved) == (results / "faithful.md").read_text(encoding="utf-8")
