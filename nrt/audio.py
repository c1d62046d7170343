"""Audio in and out: reading what the user gives, shaping it for a backbone, writing results.

A clip is kept exactly as read (rate, channels, samples) so that an edit can be written back at
the input's rate and length, and inpainting can keep the context sample for sample. Backbones
see a mono waveform at their own rate (:func:`prepare_for_model`); their output is brought back
to the input's shape by :func:`restore_from_model`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from nrt.errors import InputError
from nrt.files import atomic_file
from nrt.inputs import MAX_SECONDS, MIN_SECONDS

logger = logging.getLogger(__name__)

AudioSource = str | os.PathLike | bytes | BinaryIO

# Output containers, keyed by file extension. Reading accepts whatever libsndfile reads.
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
DEFAULT_SUBTYPES = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}
# Subtypes that store floats keep values beyond [-1, 1]; every other one is clipped first,
# because libsndfile would otherwise be free to wrap an overflowing integer sample around.
FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
RESAMPLE_QUALITY = "VHQ"


@dataclass
class AudioClip:
    """A clip exactly as read: ``samples`` is float32 ``[frames, channels]``, never downmixed."""

    samples: np.ndarray
    sample_rate: int
    subtype: str
    format: str

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise ValueError(f"AudioClip.samples must be [frames, channels], got shape {self.samples.shape}")
        if self.sample_rate <= 0:
            raise ValueError(f"AudioClip.sample_rate must be positive, got {self.sample_rate}")

    @property
    def num_frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<audio bytes>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<audio stream>"


def _open_source(source: AudioSource, name: str) -> str | BinaryIO:
    """Return something ``sf.SoundFile`` can open, refusing missing or empty inputs first."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name}: no such file")
        if not path.is_file():
            raise InputError(f"{name}: not a file")
        if path.stat().st_size == 0:
            raise InputError(f"{name}: the file is empty (0 bytes)")
        return str(path)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InputError(f"{name}: empty (0 bytes)")
        return io.BytesIO(bytes(source))
    # libsndfile needs to seek; read a stream that cannot (a socket, a pipe) into memory.
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        return source
    data = source.read()
    if not data:
        raise InputError(f"{name}: empty (0 bytes)")
    return io.BytesIO(data)


def load_audio(source: AudioSource, *, max_seconds: float = MAX_SECONDS, min_seconds: float = MIN_SECONDS) -> AudioClip:
    """Read a clip with every channel, at its own rate, as float32 ``[frames, channels]``.

    Accepts a path, the file's bytes, or a binary file object, in any format libsndfile reads
    (wav, flac, ogg, mp3, …). Raises :class:`InputError`, naming the file and the problem, for
    a missing, unreadable, empty, too short, too long, all-silent or non-finite input. The
    length is checked from the header before the samples are decoded, and no more than
    ``max_seconds`` is ever decoded.
    """
    name = _describe(source)
    if not min_seconds >= 0:
        raise InputError(f"min_seconds must be >= 0, but is {min_seconds}")
    if not max_seconds > min_seconds:
        raise InputError(f"max_seconds must be greater than min_seconds ({min_seconds}), but is {max_seconds}")

    # 1. Open and read the header.
    opened = _open_source(source, name)
    try:
        handle = sf.SoundFile(opened)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise InputError(f"{name}: not a readable audio file ({_libsndfile_reason(exc)})") from exc

    with handle:
        rate = int(handle.samplerate)
        if rate <= 0:
            raise InputError(f"{name}: the header gives an invalid sample rate ({rate})")
        max_frames = int(max_seconds * rate) if math.isfinite(max_seconds) else None

        # 2. Refuse a long file from its header alone, without decoding it.
        header_frames = int(handle.frames)
        if max_frames is not None and header_frames > max_frames:
            raise InputError(_too_long(name, header_frames / rate, max_seconds))

        # 3. Decode, never past the limit (a header may understate the length).
        try:
            to_read = -1 if max_frames is None else max_frames + 1
            samples = handle.read(frames=to_read, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise InputError(f"{name}: the audio data could not be decoded ({_libsndfile_reason(exc)})") from exc
        clip = AudioClip(np.ascontiguousarray(samples), rate, str(handle.subtype), str(handle.format))

    # 4. Check what was decoded.
    if clip.num_frames == 0:
        raise InputError(f"{name}: the audio is empty (0 frames)")
    if max_frames is not None and clip.num_frames > max_frames:
        raise InputError(_too_long(name, None, max_seconds))
    if clip.duration < min_seconds:
        raise InputError(
            f"{name}: the audio is too short ({clip.duration:.3f} s); at least {min_seconds:g} s is needed"
        )
    if not np.isfinite(clip.samples).all():
        bad = int(np.count_nonzero(~np.isfinite(clip.samples)))
        raise InputError(f"{name}: the audio holds {bad} non-finite samples (NaN or inf)")
    if not np.any(clip.samples):
        raise InputError(f"{name}: the audio is silent (every sample is exactly 0)")

    logger.debug(
        "read %s: %d frames, %d channels, %d Hz, %s %s",
        name,
        clip.num_frames,
        clip.channels,
        rate,
        clip.format,
        clip.subtype,
    )
    return clip


def _too_long(name: str, seconds: float | None, max_seconds: float) -> str:
    length = f" ({seconds:.2f} s)" if seconds is not None else ""
    return (
        f"{name}: the audio is too long{length}; the limit is {max_seconds:g} s "
        "(raise it with the max_seconds option, or --max-seconds on the command line)"
    )


def _libsndfile_reason(exc: Exception) -> str:
    # soundfile's message repeats the (possibly long) file name before the reason.
    message = str(exc)
    return message.rsplit(": ", 1)[-1] if ": " in message else message


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Downmix ``[frames, channels]`` to ``[frames]`` by the mean over channels."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise ValueError(f"expected [frames] or [frames, channels], got shape {samples.shape}")
    return samples.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``[frames]`` or ``[frames, channels]`` with soxr; the identity when rates are equal."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if from_rate == to_rate or wave.shape[0] == 0:
        return wave
    return soxr.resample(wave, from_rate, to_rate, quality=RESAMPLE_QUALITY)


def prepare_for_model(clip: AudioClip, rate: int) -> np.ndarray:
    """The clip as a backbone sees it: mono, at ``rate``, float32 ``[n]``."""
    return resample(to_mono(clip.samples), clip.sample_rate, rate)


def fit_length(wave: np.ndarray, num_frames: int) -> np.ndarray:
    """Trim or zero-pad the first axis of ``wave`` to exactly ``num_frames``."""
    if wave.shape[0] >= num_frames:
        return wave[:num_frames]
    pad = [(0, num_frames - wave.shape[0])] + [(0, 0)] * (wave.ndim - 1)
    return np.pad(wave, pad)


def restore_from_model(wave: np.ndarray, model_rate: int, clip: AudioClip) -> np.ndarray:
    """Bring a backbone's mono output back to the input's rate, length and channels.

    Returns float32 ``[clip.num_frames, clip.channels]``: resampled to ``clip.sample_rate``,
    trimmed or zero-padded to the input's frame count, and the mono signal copied to every channel.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2 and wave.shape[1] == 1:
        wave = wave[:, 0]
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform [n], got shape {wave.shape}")
    mono = fit_length(resample(wave, model_rate, clip.sample_rate), clip.num_frames)
    return np.ascontiguousarray(np.repeat(mono[:, None], clip.channels, axis=1))


def _format_of(name: str) -> str:
    """The libsndfile format for a file extension or format name (``.wav``, ``flac``, …)."""
    key = name.lower()
    if not key.startswith("."):
        key = "." + key
    if key not in WRITE_FORMATS:
        raise InputError(f"cannot write {name!r} audio; use one of {', '.join(WRITE_FORMATS)}")
    return WRITE_FORMATS[key]


def _write(target: str | BinaryIO, samples: np.ndarray, sample_rate: int, fmt: str, subtype: str | None) -> None:
    """The one place that encodes: checks, clips for integer subtypes, and writes."""
    subtype = (subtype or DEFAULT_SUBTYPES[fmt]).upper()
    if not sf.check_format(fmt, subtype):
        accepted = ", ".join(sorted(sf.available_subtypes(fmt)))
        raise InputError(f"subtype {subtype!r} cannot be written as {fmt}; accepted: {accepted}")
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError(f"expected samples [frames] or [frames, channels], got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("refusing to write audio with non-finite samples (NaN or inf)")
    if subtype not in FLOAT_SUBTYPES:
        data = np.clip(data, -1.0, 1.0)
    sf.write(target, data, int(sample_rate), subtype=subtype, format=fmt)


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``samples`` ([frames, channels] or [frames]) atomically; the format follows the extension.

    ``.wav``, ``.flac`` (PCM_16 unless ``subtype`` says otherwise) and ``.ogg`` (Vorbis). The
    file is written under a temporary name in the same directory and renamed into place, so a
    reader never sees a partial file and a failed write leaves nothing behind.
    """
    path = Path(path)
    fmt = _format_of(path.suffix)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the directory {path.parent} does not exist")
    return atomic_file(path, lambda tmp: _write(tmp, samples, sample_rate, fmt, subtype))


def encode_audio(samples: np.ndarray, sample_rate: int, format: str = "wav", subtype: str | None = None) -> bytes:
    """Encode ``samples`` to the bytes of a ``wav``, ``flac`` or ``ogg`` file, in memory."""
    buffer = io.BytesIO()
    _write(buffer, samples, sample_rate, _format_of(format), subtype)
    return buffer.getvalue()


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def samples_sha256(samples: np.ndarray) -> str:
    """Hash of the decoded input samples (float32, frames x channels), independent of the container."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()
