import hashlib

import numpy as np
import pytest
import soundfile as sf

from nrt.audio import (
    AudioClip,
    encode_audio,
    load_audio,
    prepare_for_model,
    resample,
    restore_from_model,
    sha256_of_file,
    to_mono,
    write_audio,
)
from nrt.errors import InputError


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0, frames: int | None = None) -> np.ndarray:
    """A sine per channel (a different pitch on each), float32 [frames, channels], peak 0.5."""
    n = frames if frames is not None else int(round(seconds * rate))
    t = np.arange(n) / rate
    waves = [0.5 * np.sin(2 * np.pi * freq * (1 + 0.25 * c) * t) for c in range(channels)]
    return np.stack(waves, axis=1).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# Largest error of a float -> integer -> float round trip, per subtype.
QUANTUM = {"PCM_16": 2.0**-15, "PCM_24": 2.0**-23, "PCM_32": 1e-7, "FLOAT": 0.0}


@pytest.mark.parametrize(
    "ext, subtype, rate, channels, frames",
    [
        (".wav", "PCM_16", 8000, 1, 12345),
        (".wav", "PCM_24", 22050, 2, 22050),
        (".wav", "PCM_32", 44100, 6, 24691),
        (".wav", "FLOAT", 48000, 2, 24001),
        (".flac", "PCM_16", 44100, 2, 24691),
        (".flac", "PCM_24", 48000, 6, 24000),
    ],
)
def test_lossless_round_trip(tmp_path, ext, subtype, rate, channels, frames):
    samples = tone(0, rate, channels, frames=frames)
    path = write_audio(tmp_path / f"clip{ext}", samples, rate, subtype=subtype)

    clip = load_audio(path)

    assert clip.samples.dtype == np.float32
    assert clip.samples.shape == (frames, channels)
    assert (clip.sample_rate, clip.subtype, clip.num_frames, clip.channels) == (rate, subtype, frames, channels)
    assert clip.format == ext[1:].upper()
    assert clip.duration == pytest.approx(frames / rate)
    assert np.max(np.abs(clip.samples - samples)) <= QUANTUM[subtype]


def test_default_subtype_is_pcm16(tmp_path):
    samples = tone(1.0, 16000)
    for ext in (".wav", ".flac"):
        assert load_audio(write_audio(tmp_path / f"a{ext}", samples, 16000)).subtype == "PCM_16"


@pytest.mark.parametrize("rate, channels", [(22050, 1), (48000, 2)])
def test_ogg_round_trip(tmp_path, rate, channels):
    samples = tone(0, rate, channels, frames=24691)
    clip = load_audio(write_audio(tmp_path / "clip.ogg", samples, rate))
    assert (clip.format, clip.subtype, clip.sample_rate) == ("OGG", "VORBIS", rate)
    assert clip.samples.shape == (24691, channels)
    assert correlation(clip.samples, samples) > 0.99


def test_reads_mp3(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    path = tmp_path / "clip.mp3"
    sf.write(path, tone(1.0, 44100, 2), 44100, format="MP3")
    clip = load_audio(path)
    assert (clip.format, clip.sample_rate, clip.channels) == ("MP3", 44100, 2)
    assert clip.duration == pytest.approx(1.0, abs=0.1)


def test_reads_bytes_and_file_objects(tmp_path):
    samples = tone(1.0, 16000, 2)
    path = write_audio(tmp_path / "a.flac", samples, 16000)
    from_path = load_audio(path)
    with open(path, "rb") as f:
        from_file = load_audio(f)
    from_bytes = load_audio(path.read_bytes())
    np.testing.assert_array_equal(from_file.samples, from_path.samples)
    np.testing.assert_array_equal(from_bytes.samples, from_path.samples)


def _write_raw(path, data, rate=16000, subtype="PCM_16"):
    sf.write(path, data, rate, subtype=subtype)
    return path


def _bad_inputs(tmp_path):
    """Each bad input with the words its error must contain."""
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (16000, 1)).astype(np.float32)
    nan = noise.copy()
    nan[100] = np.nan
    inf = noise.copy()
    inf[200] = np.inf
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + np.random.default_rng(1).bytes(4000))
    empty_bytes = tmp_path / "zero-bytes.wav"
    empty_bytes.write_bytes(b"")
    return {
        "missing": (tmp_path / "nope.wav", ["no such file"]),
        "corrupt": (corrupt, ["not a readable audio file"]),
        "empty file": (empty_bytes, ["empty", "0 bytes"]),
        "no frames": (_write_raw(tmp_path / "no-frames.wav", np.zeros((0, 1))), ["empty", "0 frames"]),
        "too short": (_write_raw(tmp_path / "short.wav", noise[:3200]), ["too short", "0.200 s", "0.5 s"]),
        "too long": (
            _write_raw(tmp_path / "long.wav", np.tile(noise, (31, 1)), rate=8000),
            ["too long", "62.00 s", "30 s", "max_seconds", "--max-seconds"],
        ),
        "silent": (_write_raw(tmp_path / "silent.wav", np.zeros((16000, 2))), ["silent"]),
        "nan": (_write_raw(tmp_path / "nan.wav", nan, subtype="FLOAT"), ["non-finite", "NaN"]),
        "inf": (_write_raw(tmp_path / "inf.wav", inf, subtype="FLOAT"), ["non-finite", "inf"]),
    }


@pytest.mark.parametrize(
    "case", ["missing", "corrupt", "empty file", "no frames", "too short", "too long", "silent", "nan", "inf"]
)
def test_bad_inputs_are_refused_with_a_clear_message(tmp_path, case):
    path, words = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    for word in words:
        assert word in message


def test_corrupt_and_empty_bytes_are_refused():
    with pytest.raises(InputError, match="not a readable audio file"):
        load_audio(b"this is not audio at all" * 50)
    with pytest.raises(InputError, match="empty"):
        load_audio(b"")


def test_max_seconds_raises_the_limit(tmp_path):
    path = write_audio(tmp_path / "long.wav", tone(31.0, 8000), 8000)
    with pytest.raises(InputError, match="too long"):
        load_audio(path)
    assert load_audio(path, max_seconds=40).duration == pytest.approx(31.0)


def test_too_long_is_refused_from_the_header(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "long.flac", tone(40.0, 8000), 8000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the samples of a file over the limit were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(InputError, match="too long"):
        load_audio(path)


def test_to_mono_is_the_mean_over_channels():
    samples = np.array([[1.0, 0.0, -1.0, 0.5], [0.25, 0.25, 0.25, 0.25]], dtype=np.float32)
    np.testing.assert_allclose(to_mono(samples), [0.125, 0.25])
    mono = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(to_mono(mono), mono)


def test_resample_keeps_a_tone():
    wave = tone(1.0, 48000, freq=1000.0)[:, 0]
    down = resample(wave, 48000, 16000)
    back = resample(down, 16000, 48000)
    assert down.shape == (16000,)
    assert back.shape == wave.shape and back.dtype == np.float32
    # Away from the edges, where the filter has no signal on one side.
    assert correlation(back[480:-480], wave[480:-480]) > 0.99


def test_resample_two_dimensional_and_identity():
    stereo = tone(0.5, 44100, 2)
    out = resample(stereo, 44100, 16000)
    assert out.shape == (8000, 2)
    assert correlation(out[:, 0], out[:, 1]) < 0.9  # channels stay apart
    same = resample(stereo, 44100, 44100)
    np.testing.assert_array_equal(same, stereo)


@pytest.mark.parametrize(
    "rate, channels, frames",
    [(8000, 1, 12345), (22050, 2, 22050), (44100, 2, 12345), (48000, 6, 48001), (16000, 1, 16000)],
)
def test_model_round_trip_restores_frames_and_channels(rate, channels, frames):
    clip = AudioClip(tone(0, rate, 1, frames=frames).repeat(channels, axis=1), rate, "PCM_16", "WAV")
    model_rate = 16000

    wave = prepare_for_model(clip, model_rate)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(wave.shape[0] - frames * model_rate / rate) <= 1

    restored = restore_from_model(wave, model_rate, clip)
    assert restored.shape == (frames, channels) and restored.dtype == np.float32
    assert correlation(restored[200:-200, -1], clip.samples[200:-200, -1]) > 0.99

    # A backbone may hand back a little more or less than it was given.
    for n in (wave.shape[0] - 37, wave.shape[0] + 53):
        assert restore_from_model(np.resize(wave, n), model_rate, clip).shape == (frames, channels)


def test_restore_pads_a_short_output_with_zeros():
    clip = AudioClip(tone(1.0, 16000), 16000, "PCM_16", "WAV")
    restored = restore_from_model(np.ones(10000, dtype=np.float32), 16000, clip)
    assert np.all(restored[:10000] == 1.0)
    assert np.all(restored[10000:] == 0.0)


def test_write_clips_integer_subtypes_only(tmp_path):
    loud = np.array([1.5, -1.5, 0.25] * 8000, dtype=np.float32)
    pcm = load_audio(write_audio(tmp_path / "pcm.wav", loud, 16000)).samples[:, 0]
    assert pcm.max() <= 1.0 and pcm.min() == -1.0
    assert pcm[0] == pytest.approx(1.0, abs=2.0**-15)
    floats = load_audio(write_audio(tmp_path / "float.wav", loud, 16000, subtype="FLOAT")).samples[:, 0]
    np.testing.assert_array_equal(floats, loud)


def test_unknown_extension_writes_nothing(tmp_path):
    with pytest.raises(InputError, match=r"\.mp4"):
        write_audio(tmp_path / "out.mp4", tone(1.0, 16000), 16000)
    assert list(tmp_path.iterdir()) == []


def test_missing_output_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_audio(tmp_path / "no" / "out.wav", tone(1.0, 16000), 16000)
    assert list(tmp_path.iterdir()) == []


def test_bad_subtype_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="VORBIS"):
        write_audio(tmp_path / "out.wav", tone(1.0, 16000), 16000, subtype="VORBIS")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = write_audio(tmp_path / "out.flac", tone(1.0, 16000), 16000)
    before = target.read_bytes()
    real_write = sf.write

    def write_then_fail(file, *args, **kwargs):
        real_write(file, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_audio(target, tone(2.0, 16000, freq=220.0), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.flac"]
    assert target.read_bytes() == before


def test_encode_audio_matches_the_written_file(tmp_path):
    samples = tone(0, 22050, 2, frames=12345)
    for fmt in ("wav", "flac"):
        data = encode_audio(samples, 22050, format=fmt)
        assert data == write_audio(tmp_path / f"a.{fmt}", samples, 22050).read_bytes()
        clip = load_audio(data)
        assert (clip.format, clip.sample_rate, clip.samples.shape) == (fmt.upper(), 22050, (12345, 2))
    with pytest.raises(InputError, match="mp3"):
        encode_audio(samples, 22050, format="mp3")


def test_sha256_of_file(tmp_path):
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert sha256_of_file(path) == hashlib.sha256(b"abc").hexdigest()
    big = np.random.default_rng(0).bytes(3 << 20)  # more than one read chunk
    path.write_bytes(big)
    assert sha256_of_file(path) == hashlib.sha256(big).hexdigest()
