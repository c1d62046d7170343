"""benchmarks/gpu_edit.py at toy size on the CPU, as a user runs it: every stage timed, FLOPs counted."""

import json
from pathlib import Path

import pytest

from tests.service_setup import ROOT, load_module

STAGES = ("load", "encode", "step1", "step2_lora", "step2_full", "sampling", "decode")
STEPPED = ("step1", "step2_lora", "step2_full", "sampling", "decode")


@pytest.fixture(scope="module")
def gpu_edit():
    return load_module("gpu_edit", ROOT / "benchmarks" / "gpu_edit.py")


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "variants"), [("tango", "draws,cuda_graphs"), ("audioldm", "fused_adam")])
def test_the_tiny_run_times_every_stage_and_counts_flops(gpu_edit, tmp_path: Path, backbone: str, variants: str):
    output = tmp_path / "result.json"
    argv = ["--size", "tiny", "--device", "cpu", "--backbone", backbone, "--variants", variants]
    argv += ["--work-dir", str(tmp_path / "models"), "-o", str(output)]
    assert gpu_edit.main(argv) == 0

    report = json.loads(output.read_text())
    assert report["backbone"] == backbone and report["size"] == "tiny" and report["device"]["type"] == "cpu"
    assert list(report["stages"]) == list(STAGES)
    for name in STAGES:
        assert report["stages"][name]["seconds"] > 0, name
    for name in STEPPED:
        stage = report["stages"][name]
        assert stage["flops_per_step"] > 0 and stage["steps_per_second"] > 0, name
        assert stage["mfu"] is None  # no datasheet peak for a CPU
    # a few steps run, extrapolated to the paper's counts and marked so
    lora = report["stages"]["step2_lora"]
    assert lora["steps"] == 1500 and lora["extrapolated"] and lora["seconds"] > lora["seconds_run"]
    assert report["summary"]["extrapolated"] == ["sampling", "step1", "step2_full", "step2_lora"]
    assert all(value is None for value in report["summary"]["targets"].values())  # toy size: no verdict
    # the sampling stage counts the UNet rows of 4 η with guidance: more than a fit step's one row
    assert report["stages"]["sampling"]["flops_per_step"] > report["stages"]["step1"]["flops_per_step"]

    for name in variants.split(","):
        variant = report["variants"][name]
        if name == "cuda_graphs":
            assert variant["skipped"] == "needs CUDA"
        elif name == "draws":
            arms = variant["arms"]
            assert {a["draws_per_step"] * a["steps"] for a in arms.values()} == {variant["draws"]}
            assert all(a["probe_loss"] > 0 for a in arms.values())
        else:
            for stage in variant["stages"].values():
                assert stage["off"]["seconds_per_step"] > 0 and stage["on"]["seconds_per_step"] > 0


def test_the_full_size_configs_are_tango_and_audioldm_m(gpu_edit):
    """The stand-ins have the real sizes: counted on the meta device, nothing allocated."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        tango = UNet2DConditionModel.from_config(gpu_edit.tango_unet_config())
        audioldm = UNet2DConditionModel(**gpu_edit.AUDIOLDM_M_UNET)
        t5 = T5EncoderModel(T5Config(**gpu_edit.FLAN_T5_LARGE))
    millions = [round(sum(p.numel() for p in m.parameters()) / 1e6) for m in (tango, audioldm, t5)]
    assert millions == [866, 416, 341]


def test_the_readme_commands_parse(gpu_edit):
    from tests.test_readme import _commands

    commands = _commands("python benchmarks/gpu_edit.py")
    assert len(commands) >= 3
    for argv in commands:
        args = gpu_edit.parse_args(argv[2:])
        assert args.backbone in ("tango", "audioldm") and args.variants is not None
