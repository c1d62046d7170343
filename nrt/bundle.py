"""The bundle: what a fit leaves behind, in a directory readable without nrt.

::

    bundle.json               written last; the index of everything else
    embeddings.safetensors    e_tgt, e_opt (and their token masks where the backbone has them);
                              a second sequence (AudioLDM 2's T5 one) as e_tgt_1, e_opt_1 and
                              its masks e_tgt_mask_1, e_opt_mask_1
    unet_lora.safetensors     peft state dict of the LoRA adapter   (method "lora")
    unet.safetensors          the whole fine-tuned UNet             (method "full")
    input.flac                the input exactly as given (input.wav with float samples when
                              the input had more than 24 bits, which FLAC cannot hold)

The input as the backbone saw it is recomputed from ``input.*`` through the backbone's
front end, which is deterministic. Weights are safetensors only: nothing is unpickled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .audio import AudioClip, load_audio, samples_sha256, write_audio
from .backbones.base import BackboneInfo, Condition
from .errors import BundleError
from .files import replace_dir
from .fit import FitResult
from .inputs import EDIT_TYPES

FORMAT = "nrt-bundle"
FORMAT_VERSION = 1
UNET_FILES = {"lora": "unet_lora.safetensors", "full": "unet.safetensors"}
FLAC_SUBTYPES = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24"}


@dataclass
class Bundle:
    """A loaded bundle: the two embeddings, the UNet weights, the input and the metadata."""

    path: Path
    meta: dict[str, Any]
    e_tgt: Condition
    e_opt: Condition
    unet_state: dict[str, torch.Tensor]
    input: AudioClip

    @property
    def method(self) -> str:
        return self.meta["method"]["name"]

    @property
    def lora(self) -> dict[str, Any] | None:
        return self.meta["method"].get("lora")

    @property
    def mask(self) -> list[tuple[float, float]] | None:
        mask = self.meta.get("mask")
        return None if mask is None else [tuple(r) for r in mask]

    @property
    def prompt(self) -> str:
        return self.meta["target_prompt"]


def save_bundle(
    path: str | os.PathLike,
    result: FitResult,
    backbone: BackboneInfo,
    clip: AudioClip,
    *,
    target_prompt: str,
    edit_type: str = "addition",
    mask: list[tuple[float, float]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle atomically: everything goes to a staging directory that is swapped into place."""
    path = check_target(path, edit_type, overwrite)

    def write(staging: Path) -> None:
        files = _write_payload(staging, result, clip)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backbone": {"kind": backbone.kind, "model_id": backbone.model_id, "revision": backbone.revision},
            "method": {
                "name": result.config.method,
                "lora": result.config.lora if result.config.method == "lora" else None,
            },
            "fit": result.config.to_dict(),
            "target_prompt": target_prompt,
            "edit_type": edit_type,
            "mask": None if mask is None else [list(r) for r in mask],
            "input": {
                "file": files["input"],
                "sample_rate": clip.sample_rate,
                "channels": clip.channels,
                "num_frames": clip.num_frames,
                "subtype": clip.subtype,
                "format": clip.format,
                "sha256": samples_sha256(clip.samples),
            },
            "losses": result.losses,
            "fit_seconds": round(result.seconds, 3),
            "files": sorted(files.values()),
            "nrt_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        # the index goes last: a directory without bundle.json is not a bundle
        (staging / "bundle.json").write_text(json.dumps(meta, indent=2))
        for file in staging.iterdir():
            os.chmod(file, 0o644)

    return replace_dir(path, write)


def check_target(path: str | os.PathLike, edit_type: str, overwrite: bool = False) -> Path:
    """``path`` as a Path if a bundle of ``edit_type`` may be written there; checked before any fit."""
    path = Path(path)
    if edit_type not in EDIT_TYPES:
        raise ValueError(f"edit_type must be one of {', '.join(EDIT_TYPES)}, got {edit_type!r}")
    if path.exists() and not overwrite:
        raise BundleError(f"{path} exists already; remove it or pass overwrite=True")
    return path


def _write_payload(directory: Path, result: FitResult, clip: AudioClip) -> dict[str, str]:
    tensors = {**_embedding_tensors("e_tgt", result.e_tgt), **_embedding_tensors("e_opt", result.e_opt)}
    save_file(
        {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, directory / "embeddings.safetensors"
    )
    unet_file = UNET_FILES[result.config.method]
    save_file({k: v.contiguous() for k, v in result.unet_state.items()}, directory / unet_file)
    if clip.subtype in FLAC_SUBTYPES:
        input_file = "input.flac"
        write_audio(directory / input_file, clip.samples, clip.sample_rate, subtype=clip.subtype)
    else:
        input_file = "input.wav"
        write_audio(directory / input_file, clip.samples, clip.sample_rate, subtype="FLOAT")
    return {"embeddings": "embeddings.safetensors", "unet": unet_file, "input": input_file}


def _embedding_tensors(name: str, condition: Condition) -> dict[str, torch.Tensor]:
    """``name``, ``name_mask`` and the second sequence's ``name_1``, ``name_mask_1``, where present."""
    fields = {
        name: condition.embeds,
        f"{name}_mask": condition.mask,
        f"{name}_1": condition.embeds_1,
        f"{name}_mask_1": condition.mask_1,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _embedding_condition(name: str, tensors: dict[str, torch.Tensor]) -> Condition:
    return Condition(
        tensors[name], tensors.get(f"{name}_mask"), tensors.get(f"{name}_1"), tensors.get(f"{name}_mask_1")
    )


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``bundle.json`` of a bundle, checked for format and completeness."""
    path = Path(path)
    index = path / "bundle.json"
    if not index.exists():
        raise BundleError(f"{path} is not a bundle (no bundle.json): was the fit interrupted?")
    try:
        meta = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{index} is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path} is not an nrt bundle (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format {version}, newer than this nrt reads ({FORMAT_VERSION}); upgrade nrt"
        )
    missing = [f for f in meta.get("files", []) if not (path / f).exists()]
    if missing:
        raise BundleError(f"{path} is incomplete: missing {', '.join(missing)}")
    return meta


def check_backbone(meta: dict[str, Any], backbone: BackboneInfo, path: Path | str = "bundle") -> None:
    """Refuse a bundle fitted on another model: its embeddings and UNet delta mean nothing here."""
    made = meta["backbone"]
    same_kind = made["kind"] == backbone.kind
    same_weights = made.get("revision") is None or backbone.revision is None or made["revision"] == backbone.revision
    if not (same_kind and same_weights):
        raise BundleError(
            f"{path} was fitted on {made['kind']} model {made['model_id']!r} (revision {made.get('revision')}), "
            f"but the loaded model is {backbone.kind} {backbone.model_id!r} (revision {backbone.revision}); "
            f"load that model with --model {made['model_id']}"
        )


def load_bundle(path: str | os.PathLike, backbone: BackboneInfo | None = None) -> Bundle:
    """Read a bundle; with ``backbone``, refuse one that was fitted on a different model."""
    path = Path(path)
    meta = read_meta(path)
    if backbone is not None:
        check_backbone(meta, backbone, path)
    embeds = load_file(path / "embeddings.safetensors")
    e_tgt = _embedding_condition("e_tgt", embeds)
    e_opt = _embedding_condition("e_opt", embeds)
    unet_state = load_file(path / UNET_FILES[meta["method"]["name"]])
    clip = load_audio(path / meta["input"]["file"], max_seconds=float("inf"), min_seconds=0.0)
    if samples_sha256(clip.samples) != meta["input"]["sha256"]:
        raise BundleError(f"{path}: the stored input does not match the hash in bundle.json")
    return Bundle(path, meta, e_tgt, e_opt, unet_state, clip)
