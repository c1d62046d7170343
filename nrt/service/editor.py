"""The editor deployment: one base model per replica, the registry's bundles multiplexed on it.

A replica loads the backbone once. Each clip id is a multiplexed model (``serve.multiplexed``):
Serve routes a clip's requests to a replica that holds it and evicts the least recently used
clip past ``max_clips_per_replica``. What a clip holds on the device: its embeddings, its
input as the backbone sees it and, for LoRA, the adapter weights (attached to the shared base
UNet only while that clip edits) or, for a full fine-tune, its own UNet copy, which is why a
full bundle counts as one model like any other. Eviction frees all of it.

The adapter on the base UNet is state shared by every clip of the replica, so a replica runs
one edit at a time (``max_ongoing_requests=1`` and one worker thread); Serve queues the rest
at the caller up to ``max_queued_requests``, past which the ingress answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..audio import encode_audio
from ..backbones.base import Backbone
from ..bundle import Bundle, load_bundle
from ..edit import PreparedBundle
from ..errors import BundleError, InputError
from ..finetune import fitted_unet
from ..runtime import free_accelerator, use_assigned_cpus
from ..settings import SampleConfig, check_etas, check_seed
from ..storage import Storage, fetch_dir
from .settings import ServiceSettings

if TYPE_CHECKING:
    from ..scoring import ReferenceScorer

logger = logging.getLogger(__name__)

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac"}


@dataclass(frozen=True)
class EditJob:
    """One edit as the ingress resolved it: the registry's bundle and every setting filled in."""

    bundle: str
    eta: float
    steps: int
    guidance: float
    scheduler: str
    seed: int
    start: str = SampleConfig.start
    t_start: float = SampleConfig.t_start
    keep_db: float = SampleConfig.keep_db
    format: str = "wav"
    subtype: str = "PCM_16"
    scores: bool = False

    def check(self) -> SampleConfig:
        check_etas([self.eta])
        check_seed(self.seed)
        if self.format not in MEDIA_TYPES:
            raise InputError(f"format must be one of {', '.join(MEDIA_TYPES)}, got {self.format!r}")
        return SampleConfig(
            steps=self.steps,
            guidance=self.guidance,
            scheduler=self.scheduler,
            start=self.start,
            t_start=self.t_start,
            keep_db=self.keep_db,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoadedClip(PreparedBundle):
    """A bundle made ready to edit on one backbone: everything but the adapter is placed once."""

    def __init__(self, backbone: Backbone, rel: str, bundle: Bundle) -> None:
        super().__init__(backbone, bundle)
        self.rel = rel
        self._stack = contextlib.ExitStack()
        self.own_unet: torch.nn.Module | None = None
        if bundle.method == "full":
            self.own_unet = self._stack.enter_context(fitted_unet(backbone, "full", bundle.unet_state))
            bundle.unet_state = {}  # now inside own_unet; the CPU copy is not needed again
        else:
            bundle.unet_state = {k: v.to(backbone.device) for k, v in bundle.unet_state.items()}
        self.reference: ReferenceScorer | None = None  # made on the first request that asks for scores

    def close(self) -> None:
        self._stack.close()
        self.own_unet = None
        self.bundle.unet_state = {}
        self.inpaint = self.reference = None


class ClipSlot:
    """What Serve's multiplexer holds per clip id: the clip's current bundle, loaded on first use.

    The registry may name a newer bundle for the clip (a sweep re-ran it) while the slot is
    cached; the slot then swaps it in, so a cached clip id never serves a stale bundle.
    """

    def __init__(self, clip_id: str, owner: EditorCore) -> None:
        self.clip_id = clip_id
        self.owner = owner
        self.loaded: LoadedClip | None = None
        self.closed = False

    def __del__(self) -> None:  # Serve calls it on eviction (and so may the collector, later)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.owner.unload(self)


class EditorCore:
    """The editing itself, free of Serve: the deployment wraps it, tests may use it directly."""

    def __init__(self, settings: ServiceSettings, device: str | None = None) -> None:
        from ..backbones import load_backbone

        self.settings = settings
        self.storage = Storage(settings.storage)
        self.backbone = load_backbone(settings.model, device=device or settings.device, dtype=settings.dtype)
        self.lock = threading.RLock()
        self._attached: tuple[LoadedClip, contextlib.ExitStack, torch.nn.Module] | None = None
        self._scorer = None
        logger.info("editor ready: %s on %s", settings.model, self.backbone.device)

    # -- the adapter on the shared base -----------------------------------------------------
    def _unet_for(self, clip: LoadedClip) -> torch.nn.Module:
        if clip.own_unet is not None:
            return clip.own_unet
        if self._attached is not None and self._attached[0] is clip:
            return self._attached[2]
        self._detach()
        stack = contextlib.ExitStack()
        unet = stack.enter_context(fitted_unet(self.backbone, "lora", clip.bundle.unet_state, clip.bundle.lora))
        self._attached = (clip, stack, unet)
        return unet

    def _detach(self) -> None:
        if self._attached is not None:
            _, stack, _ = self._attached
            self._attached = None
            stack.close()

    # -- loading and unloading --------------------------------------------------------------
    def _load(self, slot: ClipSlot, rel: str) -> LoadedClip:
        if slot.loaded is not None and slot.loaded.rel == rel:
            return slot.loaded
        self._drop(slot)
        started = time.perf_counter()
        path = fetch_dir(self.storage, rel, "bundle.json")
        bundle = load_bundle(path, self.backbone.info)  # refuses a bundle of another model
        if bundle.method == "full":
            self._detach()  # a full fine-tune copies the base UNet, which must be bare
        slot.loaded = LoadedClip(self.backbone, rel, bundle)
        logger.info("loaded %s (%s) in %.2f s", slot.clip_id, rel, time.perf_counter() - started)
        return slot.loaded

    def _drop(self, slot: ClipSlot) -> None:
        loaded, slot.loaded = slot.loaded, None
        if loaded is None:
            return
        if self._attached is not None and self._attached[0] is loaded:
            self._detach()
        loaded.close()
        free_accelerator()

    def unload(self, slot: ClipSlot) -> None:
        with self.lock:
            self._drop(slot)
        logger.info("unloaded %s", slot.clip_id)

    # -- one edit ---------------------------------------------------------------------------
    def scorer(self):
        if self._scorer is None:
            from ..scoring import load_scorer

            self._scorer = load_scorer(
                self.settings.clap,
                device=self.backbone.device,
                band_limit_rate=self.backbone.sample_rate,
                progress=False,
            )
        return self._scorer

    def edit(self, slot: ClipSlot, job: EditJob) -> dict[str, Any]:
        """Run one edit; return the encoded audio, what it was made with, and its scores when asked."""
        config = job.check()
        with self.lock:
            started = time.perf_counter()
            clip = self._load(slot, job.bundle)
            unet = self._unet_for(clip)
            audio = clip.edit([job.eta], config, job.seed, unet)[0]
            seconds = time.perf_counter() - started
            scores = None
            if job.scores:
                if clip.reference is None:
                    from ..scoring import ReferenceScorer

                    b = clip.bundle
                    clip.reference = ReferenceScorer(
                        self.scorer(), b.input.samples, b.input.sample_rate, b.prompt, b.mask
                    )
                row = clip.reference.score([audio], clip.rate)[0]
                scores = {k: row[k] for k in ("text", "audio", "sum", "text_filled") if k in row}
        return {
            "audio": without_peak_chunk(encode_audio(audio, clip.rate, job.format, job.subtype)),
            "media_type": MEDIA_TYPES[job.format],
            "sample_rate": clip.rate,
            "frames": int(audio.shape[0]),
            "channels": int(audio.shape[1]),
            "seconds": round(seconds, 4),
            "scores": scores,
            "clap": self.settings.clap if scores is not None else None,
        }


def without_peak_chunk(data: bytes) -> bytes:
    """A WAV without libsndfile's PEAK chunk, which float files carry with the time they were
    written: without it, the same edit is the same bytes whenever it is made."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    chunks, at = [], 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        end = min(len(data), at + 8 + size + (size & 1))
        if data[at : at + 4] != b"PEAK":
            chunks.append(data[at:end])
        at = end
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def error_reply(exc: Exception) -> dict[str, Any]:
    """An edit's expected failure, as the ingress turns it into JSON."""
    if isinstance(exc, BundleError):
        return {"status": 409, "error": "conflict", "detail": str(exc)}
    return {"status": 422, "error": "invalid_request", "detail": str(exc)}


class Editor:
    """The Serve deployment around :class:`EditorCore` (see the module's docstring)."""

    def __init__(self, settings: ServiceSettings) -> None:
        from ray import serve

        use_assigned_cpus()
        self.core = EditorCore(settings)
        # one thread runs every edit, so the event loop stays free for health checks
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nrt-edit")

        async def clip_slot(clip_id: str) -> ClipSlot:
            return ClipSlot(clip_id, self.core)

        self._slot = serve.multiplexed(max_num_models_per_replica=settings.max_clips_per_replica)(clip_slot)

    async def edit(self, job: dict[str, Any]) -> dict[str, Any]:
        from ray import serve

        slot = await self._slot(serve.get_multiplexed_model_id())
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, self.core.edit, slot, EditJob(**job))
        except (InputError, BundleError) as exc:
            return error_reply(exc)
