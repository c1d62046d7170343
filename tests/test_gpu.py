"""On a CUDA device: a bf16 fit and edit, a LoRA bundle that reloads bit-exact, batch against
single sampling, and the service's editor giving GPU memory back when a clip is evicted.

Run with ``python -m pytest -m gpu`` where CUDA is present (``benchmarks/gpu_run.sh`` runs them
with the GPU benchmark); elsewhere every test here is skipped, saying why.
"""

import io
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from nrt.audio import load_audio
from nrt.backbones import load_backbone
from nrt.bundle import load_bundle, save_bundle
from nrt.edit import generate, prepare_input
from nrt.finetune import ADAPTER, fitted_unet
from nrt.fit import fit
from nrt.sample import sample
from nrt.settings import FitConfig, SampleConfig
from tests.conftest import write_tone_clip

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: torch.cuda.is_available() is False"),
]

PROMPT = "a dog barking while church bells ring"
QUICK = SampleConfig(steps=8)


def _fit(backbone, clip, **settings):
    torch.manual_seed(0)
    config = FitConfig(**{"embed_steps": 5, "tune_steps": 5, **settings})
    return fit(backbone, prepare_input(backbone, clip).wave, PROMPT, config, progress=False)


@pytest.fixture()
def clip(tmp_path):
    return load_audio(write_tone_clip(tmp_path / "beep.wav", seconds=1.5, rate=22050, channels=2))


def test_a_bf16_fit_and_edit_on_cuda(tiny_dir, clip, tmp_path):
    backbone = load_backbone(str(tiny_dir), device="cuda", dtype="bf16")
    assert backbone.device.type == "cuda" and backbone.unet.dtype == torch.bfloat16
    result = _fit(backbone, clip, embed_steps=20, embed_lr=1e-2, tune_lr=1e-2)
    assert all(np.isfinite(v) for v in result.losses.values())
    assert result.losses["probe_e_opt"] < result.losses["probe_e_tgt"]
    assert {v.dtype for v in result.unet_state.values()} == {torch.float32}  # the adapter trained in float32
    assert backbone.vae.device.type == "cuda"  # the frozen parts are back after the fit

    bundle = load_bundle(save_bundle(tmp_path / "bundle", result, backbone.info, clip, target_prompt=PROMPT))
    outputs = generate(backbone, bundle, [0.0, 0.5, 1.0], QUICK, seed=3, progress=False)
    for audio in outputs:
        assert audio.shape == clip.samples.shape and np.isfinite(audio).all()
    assert not np.array_equal(outputs[0], outputs[2])


def test_a_lora_bundle_reloads_bit_exact_on_cuda(tiny_dir, clip, tmp_path):
    from peft import get_peft_model_state_dict

    backbone = load_backbone(str(tiny_dir), device="cuda", dtype="fp32")
    result = _fit(backbone, clip, tune_lr=1e-2)
    bundle = load_bundle(save_bundle(tmp_path / "bundle", result, backbone.info, clip, target_prompt=PROMPT))
    assert bundle.unet_state.keys() == result.unet_state.keys()
    assert all(torch.equal(bundle.unet_state[k], result.unet_state[k]) for k in result.unet_state)
    assert torch.equal(bundle.e_opt.embeds, result.e_opt.embeds) and torch.equal(bundle.e_tgt.mask, result.e_tgt.mask)

    with fitted_unet(backbone, "lora", bundle.unet_state, bundle.lora) as unet:  # on the GPU, as an edit uses it
        placed = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
        assert {v.device.type for v in placed.values()} == {"cuda"}
        assert all(torch.equal(placed[k].cpu(), result.unet_state[k]) for k in result.unet_state)
    assert not any("lora_" in name for name, _ in backbone.unet.named_parameters())


def test_batch_and_single_sampling_agree_on_cuda(tiny_dir):
    backbone = load_backbone(str(tiny_dir), device="cuda", dtype="fp32")
    shape = backbone.latent_shape(16000)
    condition = backbone.encode_text(["rain"])
    batch = sample(backbone, condition.repeat(3), shape, QUICK, [5, 5, 6], progress=False)
    alone = sample(backbone, condition, shape, QUICK, [5], progress=False)
    assert batch.device.type == "cuda"
    # cuDNN and cuBLAS may pick other kernels for another batch size: equal within float32 rounding
    torch.testing.assert_close(batch[0], alone[0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(batch[1], batch[0], atol=1e-5, rtol=1e-4)
    assert (batch[2] - batch[0]).abs().mean() > 0.1  # another seed, another output


def test_the_editor_gives_gpu_memory_back_when_a_clip_is_evicted(tiny_dir, clip, tmp_path):
    """A full fine-tune's bundle holds its own UNet on the device: evicting the clip frees it."""
    from nrt.service.editor import ClipSlot, EditJob, EditorCore
    from nrt.service.settings import ServiceSettings
    from nrt.storage import Storage

    storage = Storage(tmp_path / "root")
    core = EditorCore(ServiceSettings(storage=str(storage.root), model=str(tiny_dir)), device="cuda")
    result = _fit(core.backbone, clip, method="full", tune_lr=1e-3)
    save_bundle(tmp_path / "full", result, core.backbone.info, clip, target_prompt=PROMPT)
    for clip_id in ("first", "second"):
        shutil.copytree(tmp_path / "full", storage.local_path(f"bundles/{clip_id}/k"))
    unet_bytes = sum(p.numel() * p.element_size() for p in core.backbone.unet.parameters())

    def edit(slot: ClipSlot) -> np.ndarray:
        job = EditJob(bundle=f"bundles/{slot.clip_id}/k", eta=0.5, steps=3, guidance=2.0, scheduler="ddpm", seed=1)
        audio, _ = sf.read(io.BytesIO(core.edit(slot, job)["audio"]), always_2d=True)
        return audio

    # a first clip comes and goes, so that what any edit leaves for good (caches, workspaces) is counted
    first = ClipSlot("first", core)
    edit(first)
    first.close()
    torch.cuda.synchronize()
    settled = torch.cuda.memory_allocated()

    second = ClipSlot("second", core)
    assert edit(second).shape == clip.samples.shape
    loaded = torch.cuda.memory_allocated()
    assert loaded - settled >= unet_bytes  # its own UNet copy, on the device
    second.close()  # Serve's multiplexer evicts a clip by dropping its slot
    torch.cuda.synchronize()
    assert second.loaded is None
    assert torch.cuda.memory_allocated() <= settled + 64 * 1024
