"""nrt-mini's codec: the patch latent is exactly invertible, Griffin-Lim keeps the mel."""

import numpy as np
import pytest
import torch

from nrt.backbones.mel import MelFrontEnd, StftConfig
from nrt.backbones.patch import GriffinLimVocoder, PatchAutoencoder

STFT = StftConfig(filter_length=1024, hop_length=320, win_length=1024, n_mel_channels=32)


def _tones(seconds: float = 1.0, rate: int = 16000) -> torch.Tensor:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < 0.5) + 0.3 * np.sin(2 * np.pi * 1800 * t) * (t >= 0.5)
    return torch.from_numpy(wave).float().unsqueeze(0)


def test_patches_round_trip_exactly():
    codec = PatchAutoencoder(n_mels=32, patch=4)
    codec.mean.copy_(torch.linspace(-8, -2, 32))
    codec.std.fill_(2.5)
    mel = torch.randn(2, 1, 64, 32) * 3 - 5
    latent = codec.encode_mel(mel)
    assert latent.shape == (2, 16, 16, 8)
    torch.testing.assert_close(codec.decode_latent(latent), mel, rtol=0, atol=1e-5)
    # a patch's 16 values land in one latent position: locality is kept
    marked = torch.zeros(1, 1, 64, 32)
    marked[0, 0, 4:8, 8:12] = 1.0
    hit = PatchAutoencoder(n_mels=32, patch=4).encode_mel(marked).abs().sum(dim=1)[0] > 0
    assert hit.nonzero().tolist() == [[1, 2]]


@pytest.mark.parametrize("frames, mels", [(62, 32), (64, 30)])
def test_patches_refuse_shapes_that_do_not_fold(frames, mels):
    with pytest.raises(ValueError, match="does not fold"):
        PatchAutoencoder(n_mels=32).encode_mel(torch.zeros(1, 1, frames, mels))


def test_griffin_lim_keeps_the_mel():
    front = MelFrontEnd(STFT)
    wave = _tones()
    mel = front(wave)
    rebuilt = GriffinLimVocoder(STFT, n_iter=32)(mel)
    assert rebuilt.shape[-1] == (mel.shape[1] - 1) * STFT.hop_length
    again = front(rebuilt[..., : wave.shape[-1]])
    error = (again - mel[:, : again.shape[1]]).abs().mean()
    noise_error = (front(torch.randn_like(wave) * 0.1) - mel).abs().mean()
    assert error < 0.5, error  # log-mel units (natural log)
    assert error < noise_error / 5
    # the two tones stay where they were: the loudest bin of each half matches the input's
    for half in (slice(5, 20), slice(30, 45)):
        assert again[0, half].mean(0).argmax() == mel[0, half].mean(0).argmax()


def test_griffin_lim_is_deterministic():
    mel = MelFrontEnd(STFT)(_tones(0.5))
    vocoder = GriffinLimVocoder(STFT, n_iter=8)
    assert torch.equal(vocoder(mel), vocoder(mel))
