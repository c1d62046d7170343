"""Regenerate the example clips (synthetic, so they can ship with the repository).

    python examples/make_examples.py
"""

from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).parent


def beeps_over_rain(rate: int = 22050, seconds: float = 2.5, seed: int = 0) -> np.ndarray:
    """Three 880 Hz beeps over filtered noise, in stereo (the noise differs per channel)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    beeps = np.zeros_like(t)
    for onset in (0.3, 1.0, 1.7):
        on = (t >= onset) & (t < onset + 0.25)
        beeps[on] = np.sin(2 * np.pi * 880 * t[on]) * np.hanning(on.sum())
    channels = []
    for _ in range(2):
        noise = np.convolve(rng.standard_normal(len(t)), np.ones(8) / 8, mode="same")
        channels.append(0.4 * beeps + 0.15 * noise)
    return np.stack(channels, axis=1)


def with_gap(clip: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    """The clip with [start, end) blanked to digital silence, as in the paper's inpainting inputs."""
    gapped = clip.copy()
    gapped[int(start * rate) : int(end * rate)] = 0.0
    return gapped


def main() -> None:
    rate = 22050
    clip = beeps_over_rain(rate)
    sf.write(HERE / "beeps.wav", clip, rate, subtype="PCM_16")
    sf.write(HERE / "beeps-gap.wav", with_gap(clip, rate, 0.9, 1.5), rate, subtype="PCM_16")


if __name__ == "__main__":
    main()
