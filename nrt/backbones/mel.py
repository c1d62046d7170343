"""Where the waveform becomes a log-mel spectrogram: TANGO's and AudioLDM's front end.

The same numbers as the Tacotron-style STFT those models were trained with: a periodic
Hann window, reflect padding of half a window on each side, the magnitude (not the power)
spectrum, Slaney mel filters from librosa, and ``log(clamp(x, 1e-5))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import scipy.signal
import torch


@dataclass(frozen=True)
class StftConfig:
    """The keys of TANGO's ``stft_config.json``."""

    filter_length: int = 1024
    hop_length: int = 160
    win_length: int = 1024
    n_mel_channels: int = 64
    sampling_rate: int = 16000
    mel_fmin: float = 0.0
    mel_fmax: float = 8000.0

    def __post_init__(self) -> None:
        if self.win_length > self.filter_length:
            raise ValueError(f"win_length ({self.win_length}) must not exceed filter_length ({self.filter_length})")
        if not 0 <= self.mel_fmin < self.mel_fmax <= self.sampling_rate / 2:
            raise ValueError(
                f"mel band {self.mel_fmin}-{self.mel_fmax} Hz must lie within 0-{self.sampling_rate / 2} Hz"
            )

    @classmethod
    def from_dict(cls, data: dict) -> StftConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class MelFrontEnd(torch.nn.Module):
    """Waveforms ``[B, T]`` in [-1, 1] to log-mel ``[B, frames, n_mels]``, frames = T // hop + 1."""

    mel_basis: torch.Tensor
    window: torch.Tensor

    def __init__(self, config: StftConfig) -> None:
        super().__init__()
        self.config = config
        mel_basis = librosa.filters.mel(
            sr=config.sampling_rate,
            n_fft=config.filter_length,
            n_mels=config.n_mel_channels,
            fmin=config.mel_fmin,
            fmax=config.mel_fmax,
        )
        window = torch.hann_window(config.win_length, periodic=True)
        self.register_buffer("mel_basis", torch.from_numpy(mel_basis).float(), persistent=False)
        self.register_buffer("window", window, persistent=False)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        spec = torch.stft(
            wave.float().clamp(-1, 1),
            n_fft=cfg.filter_length,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        mel = torch.matmul(self.mel_basis, spec.abs())
        return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2)


def tacotron_stft_buffers(config: StftConfig) -> dict[str, torch.Tensor]:
    """The tensors of a ``pytorch_model_stft.bin`` (the original TacotronSTFT's state dict).

    nrt computes its mel with ``torch.stft``; these buffers are written for layout fidelity
    and compared on load, so that a checkpoint whose front end differs is noticed.
    """
    n_fft = config.filter_length
    basis = np.fft.fft(np.eye(n_fft))
    cutoff = n_fft // 2 + 1
    basis = np.vstack([np.real(basis[:cutoff]), np.imag(basis[:cutoff])])
    inverse = np.linalg.pinv(n_fft / config.hop_length * basis).T
    window = scipy.signal.get_window("hann", config.win_length, fftbins=True)
    window = librosa.util.pad_center(window, size=n_fft)
    forward = torch.from_numpy(basis[:, None, :] * window).float()
    inverse = torch.from_numpy(inverse[:, None, :] * window).float()
    mel = librosa.filters.mel(
        sr=config.sampling_rate, n_fft=n_fft, n_mels=config.n_mel_channels, fmin=config.mel_fmin, fmax=config.mel_fmax
    )
    return {
        "mel_basis": torch.from_numpy(mel).float(),
        "stft_fn.forward_basis": forward,
        "stft_fn.inverse_basis": inverse,
    }
