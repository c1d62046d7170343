"""Microsoft CLAP checkpoints read by nrt (nrt/msclap.py), against msclap's own model classes.

msclap's ``CLAP`` is built small from its own classes: its HTSAT with two narrow stages on the
real 256-pixel image (2023) or its CNN14 with narrow blocks (2022), and the text tower from a
small GPT-2 or BERT config where msclap would download one. Its state dict is saved in the
published layout (``{"model": state_dict}``) with a JSON beside it that tells nrt the small
architecture, read through nrt, and compared embedding for embedding. msclap's wrapper
(``CLAPWrapper``, which imports torchaudio) is not imported: its few lines of preprocessing
(tiling short clips, the GPT-2 prompt suffix and padding) are repeated here as ``_reference_*``.

msclap is installed with ``--no-deps`` (it pins numpy<2 and transformers<5 and needs torchaudio);
its package ``__init__``, which imports the wrapper, is bypassed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrt import msclap
from nrt.clap import tiny_corpus, window_starts
from nrt.errors import InputError, ModelNotFoundError, NrtError
from nrt.scoring import check_scorer, describe_clap, load_scorer

RATE = 44_100
# float32 through two implementations of the same network, on L2-normalised embeddings: the
# largest difference measured is 1.0e-7 (2023) and 1.8e-7 (2022) for audio, torchlibrosa's STFT
# as a convolution against torch.stft included, and 0 for text (the same transformers modules).
# The bound leaves room for other BLAS builds.
ATOL = 1e-5
PROMPTS = [
    "a dog barks in the distance",
    "rain falls on a roof while thunder rumbles far away!",
    "piano",
    "wow!! a bell",
]
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # msclap's HTSAT, not nrt


def _msclap_modules() -> types.SimpleNamespace:
    """msclap's ``models.clap``, ``.audio`` and ``.htsat``, imported past the package ``__init__``."""
    spec = importlib.util.find_spec("msclap")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("torchlibrosa") is None:
        pytest.skip("msclap is not installed: pip install --no-deps msclap==1.3.4 torchlibrosa==0.1.0")
    package = types.ModuleType("msclap")
    package.__path__ = list(spec.submodule_search_locations)
    saved = {name: module for name, module in sys.modules.items() if name == "msclap" or name.startswith("msclap.")}
    sys.modules["msclap"] = package
    try:
        return types.SimpleNamespace(
            clap=importlib.import_module("msclap.models.clap"),
            audio=importlib.import_module("msclap.models.audio"),
            htsat=importlib.import_module("msclap.models.htsat"),
        )
    finally:
        for name in [n for n in sys.modules if n == "msclap" or n.startswith("msclap.")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def ms() -> types.SimpleNamespace:
    return _msclap_modules()


# Tokenizers, written like the hub's


def _gpt2_bytes() -> list[str]:
    """GPT-2's byte alphabet in GPT-2's order, so that ``"!"`` is id 0 as in the real vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def write_gpt2_tokenizer(directory: Path) -> int:
    from transformers import GPT2Tokenizer

    vocab = {c: i for i, c in enumerate(_gpt2_bytes())}
    merges = [("Ġ", "a"), ("d", "o"), ("Ġ", "do"), ("Ġdo", "g"), ("!", "!"), ("i", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


def write_bert_tokenizer(directory: Path) -> int:
    from transformers import BertTokenizer

    words = sorted({w.strip(".,").lower() for caption in tiny_corpus() for w in caption.split()})
    letters = list("abcdefghijklmnopqrstuvwxyz!.,")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters), *words]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))})
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


# msclap's model, built small and saved in the published layout


def _randomise(model: torch.nn.Module, seed: int, window: int) -> None:
    """Weights away from their initial values, and batch norms fitted to noise clips, so that
    the small random towers still tell clips apart."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()  # msclap's towers augment, crop and drop out in training mode
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_extractor." not in name:  # the front end's DFT kernels and mel filters stay exact
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the one batch below
            norm.train()
        model.audio_encoder(torch.from_numpy(_clip(window / RATE, 10))[None])
        for norm in norms:
            norm.eval()


TINY_GPT2 = {"n_positions": 128, "n_embd": 32, "n_layer": 2, "n_head": 2}


def _gpt2_config(vocab_size: int) -> dict[str, int]:
    end = vocab_size - 1  # <|endoftext|>, last as in GPT-2's vocabulary
    return {**TINY_GPT2, "vocab_size": vocab_size, "bos_token_id": end, "eos_token_id": end}


TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
}
# Three stages on a 32x32 grid of patches: the last (8x8) is one window, unshifted, as in HTSAT-tiny.
TINY_HTSAT = {"patch_size": 8, "embed_dim": 8, "depths": [2, 2, 2], "num_heads": [1, 2, 4], "window_size": 8}
TINY_CNN14 = {"channels": [4, 8, 8, 16, 16, 32], "embed_dim": 16}
PROJECTION = 24


def _small_htsat(wrapper: torch.nn.Module, htsat: types.ModuleType, *args: object) -> None:
    """``HTSATWrapper.__init__`` with the sizes above: msclap's wrapper ignores its arguments."""
    torch.nn.Module.__init__(wrapper)
    stride = (TINY_HTSAT["patch_size"],) * 2
    wrapper.htsat = htsat.HTSAT_Swin_Transformer(config=htsat.config, num_classes=3, patch_stride=stride, **TINY_HTSAT)


def build_reference(ms: types.SimpleNamespace, version: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """msclap's ``CLAP`` of one release, small: its classes, with the sizes above."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    if version == "2023":
        text = GPT2Model(GPT2Config(**_gpt2_config(vocab_size)))
        audio = {"audioenc_name": "HTSAT", "fmax": 8000, "out_emb": 32}  # HTSAT ignores the rates given
    else:
        text = BertModel(BertConfig(vocab_size=vocab_size, **TINY_BERT))
        audio = {"audioenc_name": "Cnn14", "fmax": 14000, "out_emb": TINY_CNN14["embed_dim"]}
    narrow = dict(zip([1, 64, 128, 256, 512, 1024, 2048], [1, *TINY_CNN14["channels"]]))
    narrow_init = ms.audio.ConvBlock.__init__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ms.clap, "AutoModel", types.SimpleNamespace(from_pretrained=lambda name: text))
        mp.setattr(ms.htsat.HTSATWrapper, "__init__", functools.partialmethod(_small_htsat, ms.htsat))
        mp.setattr(
            ms.audio.ConvBlock,
            "__init__",
            lambda block, in_channels, out_channels: narrow_init(block, narrow[in_channels], narrow[out_channels]),
        )
        torch.manual_seed(seed)
        model = ms.clap.CLAP(
            sample_rate=RATE,
            window_size=1024,
            hop_size=320,
            mel_bins=64,
            fmin=50,
            classes_num=3,
            text_model="gpt2" if version == "2023" else "bert-base-uncased",
            transformer_embed_dim=32,
            d_proj=PROJECTION,
            **audio,
        )
    if version == "2022":  # CNN14's fc1 has its input width written in
        model.audio_encoder.base.fc1 = torch.nn.Linear(TINY_CNN14["channels"][-1], TINY_CNN14["embed_dim"])
    _randomise(model, seed, round(RATE * (7 if version == "2023" else 5)))
    return model.eval()


def write_checkpoint(directory: Path, version: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` as ``CLAP_tiny_<version>.pth`` with the JSON that names its small architecture."""
    path = directory / f"CLAP_tiny_{version}.pth"
    torch.save({"model": state}, path)
    vocab = int(json.loads((directory / "vocab_size.json").read_text()))
    audio, text = (TINY_HTSAT, _gpt2_config(vocab)) if version == "2023" else (TINY_CNN14, TINY_BERT)
    config = {
        "version": version,
        "audio": audio,
        "text": {**text, "vocab_size": vocab},
        "projection_dim": PROJECTION,
        "tokenizer": "tokenizer",
    }
    path.with_suffix(".json").write_text(json.dumps(config))
    return path


class Release:
    """One release built small: msclap's model, the file it was saved to and nrt's scorer on it."""

    def __init__(self, ms: types.SimpleNamespace, version: str, directory: Path) -> None:
        writer = write_gpt2_tokenizer if version == "2023" else write_bert_tokenizer
        vocab = writer(directory / "tokenizer")
        (directory / "vocab_size.json").write_text(str(vocab))
        self.version = version
        self.reference = build_reference(ms, version, vocab)
        self.state = self.reference.state_dict()
        self.path = write_checkpoint(directory, version, self.state)
        self.scorer = msclap.MsClapScorer.from_pretrained(self.path)
        self.window = self.scorer.window_samples


@pytest.fixture(scope="module")
def v2023(ms, tmp_path_factory) -> Release:
    return Release(ms, "2023", tmp_path_factory.mktemp("msclap-2023"))


@pytest.fixture(scope="module")
def v2022(ms, tmp_path_factory) -> Release:
    return Release(ms, "2022", tmp_path_factory.mktemp("msclap-2022"))


# msclap's wrapper, repeated


def _reference_audio(release: Release, clips: list[np.ndarray]) -> torch.Tensor:
    """``CLAPWrapper.get_audio_embeddings`` on clips no longer than the window: tiled, then embedded."""
    n = release.window
    batch = torch.stack([torch.from_numpy(c).repeat(math.ceil(n / len(c)))[:n] for c in clips])
    with torch.no_grad():
        return F.normalize(release.reference.audio_encoder(batch)[0], dim=-1)


def _reference_text(release: Release, prompts: list[str]) -> torch.Tensor:
    """``CLAPWrapper.get_text_embeddings``: each prompt tokenized alone, padded to ``text_len``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(release.path.parent / "tokenizer")
    gpt = release.version == "2023"
    if gpt:
        tokenizer.add_special_tokens({"pad_token": "!"})
    keys = ["input_ids", "attention_mask"] if gpt else ["input_ids", "token_type_ids", "attention_mask"]
    rows = []
    for prompt in prompts:
        text = prompt + " <|endoftext|>" if gpt else prompt
        tokens = tokenizer(text, add_special_tokens=True, max_length=77 if gpt else 100, padding="max_length")
        rows.append(tokens)
    batch = {k: torch.tensor([row[k] for row in rows]) for k in keys}
    with torch.no_grad():
        return F.normalize(release.reference.caption_encoder(batch), dim=-1)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


# Parity


@pytest.mark.parametrize("name", ["v2023", "v2022"])
def test_audio_matches_msclap(name, request):
    release: Release = request.getfixturevalue(name)
    clips = [_clip(release.window / RATE, 1), _clip(2.5, 2)]  # exactly one window; a short clip msclap tiles
    ours = release.scorer.embed_audio(clips, RATE)
    theirs = _reference_audio(release, clips)
    assert ours.shape == (2, PROJECTION)
    assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()
    assert float(ours[0] @ ours[1]) < 0.999  # the clips are told apart


def test_long_clip_is_the_mean_of_fixed_windows(v2023):
    clip = _clip(12.0, 3)
    starts = window_starts(len(clip), v2023.window)
    assert starts == [0, len(clip) - v2023.window]
    windows = _reference_audio(v2023, [clip[s : s + v2023.window] for s in starts])
    expected = F.normalize(windows.sum(dim=0, keepdim=True), dim=-1)
    assert torch.allclose(v2023.scorer.embed_audio([clip], RATE), expected, atol=ATOL)


@pytest.mark.parametrize("name", ["v2023", "v2022"])
def test_text_matches_msclap(name, request):
    release: Release = request.getfixturevalue(name)
    ours = release.scorer.embed_text(PROMPTS)
    theirs = _reference_text(release, PROMPTS)
    assert ours.shape == (len(PROMPTS), PROJECTION)
    assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()


def test_embeddings_are_deterministic(v2023):
    clip = _clip(9.0, 4)  # over the window: msclap itself would crop it at random
    state = np.random.get_state()
    first = v2023.scorer.embed_audio([clip], RATE)
    assert torch.equal(first, v2023.scorer.embed_audio([clip], RATE))
    assert torch.equal(v2023.scorer.embed_text(PROMPTS[:1]), v2023.scorer.embed_text(PROMPTS[:1]))
    assert np.array_equal(np.random.get_state()[1], state[1])


# Strict loading


def _load(release: Release, state: dict[str, torch.Tensor]) -> None:
    config = msclap.config_for(release.path)
    msclap.load_state(msclap.MsClap(config), state, source="test")


def test_missing_key_is_named(v2023):
    state = dict(v2023.state)
    del state["audio_encoder.projection.linear1.weight"]
    with pytest.raises(NrtError, match=r"missing 1 weights: audio_encoder\.projection\.linear1\.weight"):
        _load(v2023, state)


def test_unexpected_key_is_named(v2022):
    state = {**v2022.state, "audio_encoder.base.conv_block7.conv1.weight": torch.zeros(1)}
    with pytest.raises(NrtError, match=r"1 unexpected keys: audio_encoder\.base\.conv_block7\.conv1\.weight"):
        _load(v2022, state)


def test_shapes_and_derived_tensors_are_checked(v2023):
    key = "audio_encoder.base.htsat.layers.0.blocks.1.attn_mask"
    with pytest.raises(NrtError, match=f"{key} differs"):
        _load(v2023, {**v2023.state, key: torch.zeros_like(v2023.state[key])})
    key = "caption_encoder.projection.linear2.weight"
    with pytest.raises(NrtError, match=f"shapes differ: {key}"):
        _load(v2023, {**v2023.state, key: torch.zeros(3, 3)})
    key = "audio_encoder.base.htsat.spectrogram_extractor.stft.conv_real.weight"
    with pytest.raises(NrtError, match="STFT"):
        _load(v2023, {**v2023.state, key: v2023.state[key].flip(-1)})


def test_buffers_of_older_transformers_are_accepted(v2022):
    """The published 2022 file was saved by a transformers that kept BERT's position ids."""
    state = {**v2022.state, "caption_encoder.base.embeddings.position_ids": torch.arange(128)[None]}
    _load(v2022, state)
    with pytest.raises(NrtError, match="position_ids differs"):
        _load(v2022, {**state, "caption_encoder.base.embeddings.position_ids": torch.zeros(1, 128, dtype=torch.long)})


def test_only_tensors_are_read(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(NrtError, match="cannot read msclap checkpoint"):
        msclap.read_state(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(NrtError, match="not an msclap checkpoint"):
        msclap.read_state(path)


# Through nrt's scorer entry points


def test_load_scorer_on_a_pth(v2023):
    check_scorer(str(v2023.path))
    scorer = load_scorer(str(v2023.path))
    assert isinstance(scorer, msclap.MsClapScorer)
    clip = _clip(3.0, 6)
    scores = scorer.score_one(clip, 22_050, clip, 22_050, PROMPTS[0])
    assert scores.audio == pytest.approx(1.0, abs=1e-6)
    assert -1 <= scores.text <= 1
    assert "local file" in describe_clap(str(v2023.path))


def test_config_round_trip_and_checks():
    for config in msclap.PUBLISHED.values():
        assert msclap.MsClapConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert msclap.PUBLISHED["2023"].window_samples == 308_700  # msclap's 7 s at 44.1 kHz: 965 frames
    with pytest.raises(InputError, match="unknown msclap config fields"):
        msclap.MsClapConfig.from_dict({"version": "2023", "duration": 7})
    with pytest.raises(InputError, match="bad msclap config"):
        msclap.MsClapConfig.from_dict({"version": "2023", "audio": {"depth": 3}})
    with pytest.raises(InputError, match="frames"):  # 7 s do not fit a 128-pixel image
        msclap.MsClapConfig.from_dict({"version": "2023", "audio": {"spec_size": 128}})
    with pytest.raises(InputError, match="Htsat audio tower"):
        dataclasses.replace(msclap.PUBLISHED["2023"], audio=msclap.Cnn14Config())


def test_descriptions():
    assert "comparable with the paper's Table 1" in describe_clap("msclap-2023")
    assert "Not comparable" not in describe_clap("msclap-2023")
    assert "compare with care" in describe_clap("msclap-2022")


def test_hub_names_fail_clearly_when_not_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    if not constants.is_offline_mode():
        pytest.skip("needs HF_HUB_OFFLINE=1, or it would ask the hub")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download microsoft/msclap CLAP_weights_2023.pth"):
        check_scorer("msclap-2023")
    with pytest.raises(ModelNotFoundError, match="tokenizer 'google-bert/bert-base-uncased'"):
        msclap.tokenizer_dir(msclap.PUBLISHED["2022"].tokenizer)
