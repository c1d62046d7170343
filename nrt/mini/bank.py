"""A bank of rendered training scenes, and the batches drawn from it.

Rendering is cheap but not free, and a GPU step wants hundreds of clips, so the training
scripts render ``n`` scenes of the train split once, across processes, and draw batches from
memory. A batch depends only on (seed, step): indices and caption wordings come from a
generator seeded by both, so a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .scenes import CLIP_SECONDS, SAMPLE_RATE, Scene, scene_for

logger = logging.getLogger(__name__)

CAPTION_VARIANTS = 8  # wordings drawn per scene; the generator's templates repeat beyond a few
CHUNK = 256


def _render_chunk(args: tuple[int, int, float, Callable | None]) -> tuple[np.ndarray, np.ndarray | None]:
    start, stop, duration, featurize = args
    waves = np.stack([scene_for("train", i, duration).render(SAMPLE_RATE) for i in range(start, stop)])
    features = featurize(waves) if featurize is not None else None
    return (np.round(waves * 32767).astype(np.int16), features)


@dataclass
class Batch:
    waves: torch.Tensor  # [B, T] float32
    captions: list[str]
    indices: np.ndarray
    features: torch.Tensor | None = None


class SceneBank:
    """The first ``n`` scenes of the train split, rendered at 16 kHz and kept as int16."""

    def __init__(
        self,
        n: int,
        duration: float = CLIP_SECONDS,
        workers: int | None = None,
        featurize: Callable[[np.ndarray], np.ndarray] | None = None,
        progress: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError(f"a scene bank needs at least one scene, got n={n}")
        self.duration = duration
        self.scenes: list[Scene] = [scene_for("train", i, duration) for i in range(n)]
        workers = workers or min(32, os.cpu_count() or 1)
        jobs = [(s, min(n, s + CHUNK), duration, featurize) for s in range(0, n, CHUNK)]
        waves: list[np.ndarray] = []
        features: list[np.ndarray | None] = []
        bar = tqdm(total=n, desc="rendering scenes", disable=None if progress else True, dynamic_ncols=True)
        with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for w, f in (pool.map if pool else map)(_render_chunk, jobs):
                waves.append(w)
                features.append(f)
                bar.update(len(w))
        bar.close()
        self.waves = torch.from_numpy(np.concatenate(waves))
        self.features = (
            torch.from_numpy(np.concatenate([f for f in features if f is not None])) if featurize is not None else None
        )
        logger.info("rendered %d scenes (%.1f MB)", n, self.waves.numel() * 2 / 1e6)

    def __len__(self) -> int:
        return len(self.scenes)

    def batch(self, step: int, size: int, seed: int = 0, caption_dropout: float = 0.0) -> Batch:
        """Batch ``step``: random scenes, each with a random wording (or ``""`` with ``caption_dropout``)."""
        rng = np.random.default_rng([seed, step])
        indices = rng.integers(0, len(self), size)
        captions = [self.scenes[i].caption(int(rng.integers(CAPTION_VARIANTS))) for i in indices]
        if caption_dropout > 0:
            drop = rng.random(size) < caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop)]
        index = torch.from_numpy(indices)
        waves = self.waves[index.to(self.waves.device)].float() / 32767
        features = None
        if self.features is not None:
            features = self.features[index.to(self.features.device)].float()
        return Batch(waves=waves, captions=captions, indices=indices, features=features)
