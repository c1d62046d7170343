"""laion-clap ``.pt`` checkpoints read by nrt (nrt/laion_pt.py), against laion-clap's own model.

laion-clap's ``CLAP`` is built small from its own classes (its HTSAT with two narrow stages on
the real 256-pixel image, a one-layer RoBERTa of width 768, which its projection requires),
saved in the published layout (``{"epoch", "name", "state_dict": {"module." + key}, "optimizer"}``
with numpy learning rates), read through nrt and compared embedding for embedding.

laion-clap is installed with ``--no-deps`` (it pins numpy<2 and needs torchvision); its package
``__init__`` (which imports its training code, wandb and the hub) is bypassed, and the two
modules its model code only imports, never uses on this path (torchvision's FrozenBatchNorm2d,
h5py), are stubbed while it is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrt import laion_pt
from nrt.clap import ClapScorer, bpe_tokenizer, tiny_corpus
from nrt.errors import ModelNotFoundError, NrtError
from nrt.scoring import check_scorer, describe_clap, load_scorer

RATE = 48_000
WINDOW = 480_000  # laion-clap's 10 s at 48 kHz
# float32 through two implementations of the same network, on L2-normalised embeddings: the
# largest difference measured is 6e-8 for audio (torchlibrosa's STFT as a convolution against
# numpy's FFT included) and 3e-7 for text; the bound leaves room for other BLAS builds.
ATOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # laion-clap's HTSAT, not nrt

PROMPTS = ["a dog barks in the distance", "rain falls on a roof while thunder rumbles far away", "piano"]


def _laion_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """laion-clap's ``clap_module.model`` and ``.htsat``, imported past the package ``__init__``."""
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or spec.origin is None or importlib.util.find_spec("torchlibrosa") is None:
        pytest.skip("laion-clap is not installed: uv pip install --no-deps laion-clap==1.1.7 torchlibrosa==0.1.0")
    import torchlibrosa  # noqa: F401  (imported before the stubs, which its dependencies must not see)
    from transformers import BartModel, BertModel, RobertaModel  # noqa: F401  (likewise transformers' checks)

    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "h5py")
    stubs = {name: types.ModuleType(name) for name in names}
    stubs["torchvision.ops.misc"].FrozenBatchNorm2d = torch.nn.BatchNorm2d  # type: ignore[attr-defined]
    package = types.ModuleType("_laion_clap_module")
    package.__path__ = [str(Path(spec.origin).parent / "clap_module")]
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    sys.modules[package.__name__] = package
    try:
        return importlib.import_module("_laion_clap_module.model"), importlib.import_module("_laion_clap_module.htsat")
    except Exception as err:
        pytest.skip(f"laion-clap's model code cannot be imported here ({type(err).__name__}: {err})")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def laion() -> tuple[types.ModuleType, types.ModuleType]:
    return _laion_modules()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("roberta-tokenizer")
    bpe_tokenizer(tiny_corpus(), 600, 77).save_pretrained(directory)
    return directory


def _small_clap(laion: tuple[types.ModuleType, types.ModuleType], fusion: bool, vocab_size: int, seed: int):
    """laion-clap's ``CLAP`` from its own classes, small, with every weight random and distinct."""
    from transformers import RobertaConfig, RobertaModel

    model_module, htsat = laion

    def small_htsat(config, enable_fusion=False, fusion_type="None"):
        return htsat.HTSAT_Swin_Transformer(
            spec_size=256,
            patch_size=4,
            patch_stride=(4, 4),
            num_classes=config.class_num,
            embed_dim=8,
            depths=[1, 2],
            num_heads=[2, 4],
            window_size=8,
            config=config,
            enable_fusion=enable_fusion,
            fusion_type=fusion_type,
        )

    text = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=768,  # laion-clap's text projection takes 768 inputs
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        max_position_embeddings=80,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
    )
    roberta = types.SimpleNamespace(from_pretrained=lambda name: RobertaModel(text))
    audio_cfg = dict(
        audio_length=1024,
        clip_samples=WINDOW,
        mel_bins=64,
        sample_rate=RATE,
        window_size=1024,
        hop_size=480,
        fmin=50,
        fmax=14_000,
        class_num=10,
        model_type="HTSAT",
        model_name="tiny",
    )
    text_cfg = dict(context_length=77, vocab_size=vocab_size, width=768, heads=12, layers=1, model_type="roberta")
    torch.manual_seed(seed)
    original = model_module.create_htsat_model, model_module.RobertaModel
    model_module.create_htsat_model, model_module.RobertaModel = small_htsat, roberta
    try:
        model = model_module.CLAP(
            embed_dim=16,
            audio_cfg=audio_cfg,
            text_cfg=text_cfg,
            enable_fusion=fusion,
            fusion_type="aff_2d" if fusion else "None",
            joint_embed_shape=24,
        ).eval()
    finally:
        model_module.create_htsat_model, model_module.RobertaModel = original
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or tensor.ndim == 0 or "_extractor." in name or "attn_mask" in name:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            else:
                spread = float(tensor.std()) if tensor.numel() > 1 else 0.0
                tensor.copy_(tensor.mean() + (spread + 0.02) * noise)
        # dB mels around -60 +- 40, as real audio gives, so that clips stay apart
        model.audio_branch.bn0.running_mean.normal_(-60.0, 5.0, generator=generator)
        model.audio_branch.bn0.running_var.fill_(40.0**2)
        model.logit_scale_a.fill_(math.log(1 / 0.07))
        model.logit_scale_t.fill_(2.5)
    return model


def _save_published(model: torch.nn.Module, path: Path) -> Path:
    """The layout of LAION's files: a training snapshot with DDP names and numpy learning rates."""
    torch.save(
        {
            "epoch": 45,
            "name": "small-clap",
            "state_dict": {"module." + key: value for key, value in model.state_dict().items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.999), "params": []}]},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def unfused(laion, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    model = _small_clap(laion, fusion=False, vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)), seed=1)
    return model, _save_published(model, tmp_path_factory.mktemp("laion") / "630k-audioset-best.pt")


@pytest.fixture(scope="module")
def fused(laion, tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    model = _small_clap(laion, fusion=True, vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)), seed=2)
    return model, _save_published(model, tmp_path_factory.mktemp("laion") / "630k-audioset-fusion-best.pt")


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (300 + 900 * seed) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def _repeatpad(clip: np.ndarray) -> torch.Tensor:
    """laion-clap's ``repeatpad`` (training/data.py): tiled a whole number of times, then zeros."""
    wave = torch.from_numpy(clip).repeat(WINDOW // len(clip))
    return F.pad(wave, (0, WINDOW - len(wave)))


def _laion_text(model: torch.nn.Module, tokenizer, prompts: list[str]) -> torch.Tensor:
    """laion-clap's ``CLAP_Module.get_text_embedding``: padded to 77 tokens, as its tokenizer does."""
    tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        return model.get_text_embedding({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})


def test_unfused_embeddings_and_logit_scales_match_laion_clap(unfused, tokenizer_dir: Path) -> None:
    model, path = unfused
    scorer = laion_pt.load_scorer(path, tokenizer=tokenizer_dir)
    assert isinstance(scorer, ClapScorer)
    config = scorer.model.config.audio_config
    assert config.patch_embeds_hidden_size == 8 and list(config.depths) == [1, 2]
    assert list(config.num_attention_heads) == [2, 4]
    assert not config.enable_fusion and scorer.truncation == "rand_trunc"
    assert (scorer.sample_rate, scorer.window_samples) == (RATE, WINDOW)

    # audio: a whole window, and a short clip that both fill by repeating it
    clips = [_clip(10.0, 0), _clip(3.3, 1)]
    with torch.no_grad():
        expected = model.get_audio_embedding([{"waveform": _repeatpad(c)} for c in clips])
    got = scorer.embed_audio(clips, RATE)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert (got[0] - got[1]).abs().max() > 100 * ATOL  # the clips are told apart: the bound means something

    texts = _laion_text(model, scorer.tokenizer, PROMPTS)
    torch.testing.assert_close(scorer.embed_text(PROMPTS), texts, atol=ATOL, rtol=0)

    scale_a, scale_t = model.get_logit_scale()
    torch.testing.assert_close(scorer.model.logit_scale_a.exp(), scale_a, atol=0, rtol=1e-6)
    torch.testing.assert_close(scorer.model.logit_scale_t.exp(), scale_t, atol=0, rtol=1e-6)


def test_fused_embeddings_match_laion_clap_with_and_without_the_fusion_path(fused, tokenizer_dir: Path) -> None:
    model, path = fused
    scorer = laion_pt.load_scorer(path, tokenizer=tokenizer_dir)
    assert scorer.model.config.audio_config.enable_fusion and scorer.truncation == "fusion"

    # the same four-mel inputs into both: laion-clap makes them with torchaudio, not here
    short, long = _clip(4.0, 2), _clip(12.0, 3)
    with torch.no_grad():
        inputs = scorer.feature_extractor([short, long], sampling_rate=RATE, truncation="fusion", return_tensors="pt")
    mels, longer = inputs["input_features"], inputs["is_longer"]
    assert mels.shape[1] == 4 and longer[:, 0].tolist() == [False, True]

    def laion_audio(is_longer: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            embedding = model.encode_audio({"mel_fusion": mels, "longer": is_longer[:, 0]}, device="cpu")["embedding"]
            return F.normalize(model.audio_projection(embedding), dim=-1)

    def nrt_audio(is_longer: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = scorer.model.get_audio_features(input_features=mels, is_longer=is_longer)
        return F.normalize(out.pooler_output, dim=-1)

    # nrt's scorer never marks a window as longer; the long clip through the fusion path too
    never = torch.zeros_like(longer)
    expected_never, expected_longer = laion_audio(never), laion_audio(longer)
    torch.testing.assert_close(nrt_audio(never), expected_never, atol=ATOL, rtol=0)
    torch.testing.assert_close(nrt_audio(longer), expected_longer, atol=ATOL, rtol=0)
    assert (expected_longer[1] - expected_never[1]).abs().max() > 100 * ATOL  # the fusion weights took part
    torch.testing.assert_close(scorer.embed_audio([short], RATE)[0], expected_never[0], atol=ATOL, rtol=0)

    torch.testing.assert_close(
        scorer.embed_text(PROMPTS), _laion_text(model, scorer.tokenizer, PROMPTS), atol=ATOL, rtol=0
    )
    torch.testing.assert_close(scorer.model.logit_scale_a.exp(), model.get_logit_scale()[0], atol=0, rtol=1e-6)


def _edited(path: Path, tmp_path: Path, edit) -> Path:
    checkpoint = torch.load(path, weights_only=False)  # the test's own file
    edit(checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / path.name)
    return tmp_path / path.name


def test_an_unexpected_weight_is_refused_by_name(unfused, tmp_path: Path) -> None:
    def add(state: dict) -> None:
        state["module.audio_branch.layers.0.blocks.0.attn.gate.weight"] = torch.zeros(8, 8)
        state["module.text_branch.encoder.layer.0.adapter.weight"] = torch.zeros(4)

    with pytest.raises(NrtError, match="2 checkpoint weights have no place") as caught:
        laion_pt.load_model(_edited(unfused[1], tmp_path, add))
    assert "audio_branch.layers.0.blocks.0.attn.gate.weight" in str(caught.value)
    assert "text_branch.encoder.layer.0.adapter.weight" in str(caught.value)


def test_a_missing_weight_is_refused_by_name(unfused, tmp_path: Path) -> None:
    def drop(state: dict) -> None:
        del state["module.audio_branch.layers.1.blocks.1.attn.qkv.bias"]
        del state["module.text_branch.pooler.dense.bias"]

    with pytest.raises(NrtError, match="4 ClapModel weights missing") as caught:
        laion_pt.load_model(_edited(unfused[1], tmp_path, drop))
    for name in ("layers.1.blocks.1.attention.self.query.bias", "value.bias", "text_model.pooler.dense.bias"):
        assert name in str(caught.value)


def test_a_checkpoint_for_another_front_end_is_refused(unfused, tmp_path: Path) -> None:
    def halve_band(state: dict) -> None:
        import librosa

        mel = librosa.filters.mel(sr=RATE, n_fft=1024, n_mels=64, fmin=50, fmax=8000).T
        state["module.audio_branch.logmel_extractor.melW"] = torch.from_numpy(mel)

    with pytest.raises(NrtError, match="mel filters"):
        laion_pt.load_model(_edited(unfused[1], tmp_path, halve_band))


class _Payload:
    pass


def test_only_tensors_and_numpy_scalars_are_unpickled(unfused, tmp_path: Path) -> None:
    checkpoint = torch.load(unfused[1], weights_only=False)
    checkpoint["hook"] = _Payload()
    torch.save(checkpoint, tmp_path / "630k-best.pt")
    with pytest.raises(NrtError, match="cannot be read as a laion-clap checkpoint"):
        laion_pt.read_checkpoint(tmp_path / "630k-best.pt")


def test_numpy_learning_rates_pickled_by_numpy_1_are_read(unfused, tmp_path: Path) -> None:
    """The published files were written under numpy 1, which names its scalar numpy.core.multiarray.scalar."""
    with zipfile.ZipFile(unfused[1]) as source, zipfile.ZipFile(tmp_path / "630k-best.pt", "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("/data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(name, data)
    state = laion_pt.read_checkpoint(tmp_path / "630k-best.pt")
    assert "logit_scale_a" in state and not any(key.startswith("module.") for key in state)


def test_load_scorer_reads_a_pt_file(unfused, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, path = unfused
    monkeypatch.setattr(laion_pt, "ROBERTA_TOKENIZER", str(tokenizer_dir))  # as if it were in the hub cache
    check_scorer(path)
    scorer = load_scorer(path)
    assert isinstance(scorer, ClapScorer)
    expected = _laion_text(model, scorer.tokenizer, PROMPTS[:1])
    torch.testing.assert_close(scorer.embed_text(PROMPTS[:1]), expected, atol=ATOL, rtol=0)
    assert "630k-audioset-best.pt" in describe_clap(path)


def test_missing_file_and_missing_tokenizer_fail_in_one_line(
    unfused, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError, match="lukewys/laion_clap"):
        check_scorer(tmp_path / "630k-best.pt")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="FacebookAI/roberta-base") as caught:
        check_scorer(unfused[1])
    assert "\n" not in str(caught.value)
