import numpy as np
import pytest

from nrt.errors import InputError
from nrt.masks import (
    composite,
    find_silence_gaps,
    format_mask,
    merge_ranges,
    parse_mask,
    ranges_to_latent_mask,
    ranges_to_sample_mask,
    resolve_mask,
    validate_ranges,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1.5-3", [(1.5, 3.0)]),
        ("0-.5", [(0.0, 0.5)]),
        (" 0.2 - 2.2 ; 6-8 ", [(0.2, 2.2), (6.0, 8.0)]),
        ("6-8;0.2-2.2;", [(6.0, 8.0), (0.2, 2.2)]),
        ("1e-3-2", [(0.001, 2.0)]),
    ],
)
def test_parse_mask_accepts(text, expected):
    assert parse_mask(text) == expected


@pytest.mark.parametrize(
    "text, named",
    [
        ("", "''"),
        (" ; ", "' ; '"),
        ("abc", "'abc'"),
        ("1.5", "'1.5'"),
        ("1-", "'1-'"),
        ("1-2-3", "'1-2-3'"),
        ("1,5-3", "'1,5-3'"),
        ("nan-2", "'nan-2'"),
        ("3-1", "'3-1'"),
        ("2-2", "'2-2'"),
        ("-1-2", "'-1-2'"),
        ("1-2;x", "'x'"),
    ],
)
def test_parse_mask_refuses(text, named):
    with pytest.raises(InputError) as info:
        parse_mask(text)
    assert named in str(info.value)


@pytest.mark.parametrize("ranges", [[(1.5, 3.0)], [(0.0, 0.1 + 0.2), (4.0, 5.125)], [(1e-05, 123.456789)]])
def test_format_mask_is_the_inverse_of_parse(ranges):
    text = format_mask(ranges)
    assert parse_mask(text) == ranges


def test_format_mask_reads_plainly():
    assert format_mask([(1.5, 3.0), (4.0, 5.0)]) == "1.5-3;4-5"


def test_merge_ranges_sorts_and_merges():
    ranges = [(3.0, 4.0), (1.0, 2.0), (1.5, 2.5), (4.0, 5.0), (7.0, 8.0)]
    assert merge_ranges(ranges) == [(1.0, 2.5), (3.0, 5.0), (7.0, 8.0)]
    assert merge_ranges([]) == []


def test_validate_ranges_clips_to_the_clip():
    assert validate_ranges([(8.0, 12.0), (1.0, 2.0), (1.5, 3.0)], duration=10.0) == [(1.0, 3.0), (8.0, 10.0)]


@pytest.mark.parametrize("ranges, words", [([(10.0, 11.0)], ["10-11", "past the end"]), ([(3.0, 2.0)], ["3-2"])])
def test_validate_ranges_refuses(ranges, words):
    with pytest.raises(InputError) as info:
        validate_ranges(ranges, duration=10.0)
    for word in words:
        assert word in str(info.value)


def _clip_with_gaps(rate: int = 16000, channels: int = 2) -> np.ndarray:
    """3 s of noise, zero in 1.0-1.5 s and in 2.5-2.6 s."""
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, (3 * rate, channels)).astype(np.float32)
    samples[int(1.0 * rate) : int(1.5 * rate)] = 0.0
    samples[int(2.5 * rate) : int(2.6 * rate)] = 0.0
    return samples


def test_find_silence_gaps_finds_the_long_gap_only():
    gaps = find_silence_gaps(_clip_with_gaps(), 16000, min_gap=0.25)
    assert len(gaps) == 1
    (start, end), = gaps
    assert start == pytest.approx(1.0, abs=1e-3)
    assert end == pytest.approx(1.5, abs=1e-3)
    assert len(find_silence_gaps(_clip_with_gaps(), 16000, min_gap=0.1)) == 2


def test_find_silence_gaps_threshold_and_channels():
    samples = _clip_with_gaps()
    dithered = samples.copy()
    dithered[16000:24000] = 0.4 / 32768  # below one 16-bit step: still silence
    assert find_silence_gaps(dithered, 16000) == find_silence_gaps(samples, 16000)
    audible = samples.copy()
    audible[16000:24000] = 2.0 / 32768
    assert find_silence_gaps(audible, 16000) == []
    one_channel = samples.copy()
    one_channel[16000:24000, 1] = 0.1  # silent on the left only: not a gap
    assert find_silence_gaps(one_channel, 16000) == []
    assert find_silence_gaps(samples[:, 0], 16000) == find_silence_gaps(samples, 16000)


def test_silence_gaps_map_back_to_exactly_the_silent_samples():
    samples = _clip_with_gaps(rate=22050, channels=1)
    gaps = find_silence_gaps(samples, 22050, min_gap=0.05)
    mask = ranges_to_sample_mask(gaps, len(samples), 22050)
    np.testing.assert_array_equal(mask, samples[:, 0] == 0.0)


def test_sample_mask_dilates_to_whole_samples():
    mask = ranges_to_sample_mask([(0.5, 1.0)], 2000, 1000)
    assert mask.dtype == bool and mask.shape == (2000,)
    assert np.flatnonzero(mask).tolist() == list(range(500, 1000))
    inner = ranges_to_sample_mask([(0.5004, 0.9996)], 2000, 1000)
    np.testing.assert_array_equal(inner, mask)
    assert ranges_to_sample_mask([(1.5, 9.0)], 2000, 1000).sum() == 500


def test_latent_mask_covers_every_touched_frame():
    fps = 25.0
    exact = ranges_to_latent_mask([(2.0, 4.0)], 250, fps)
    assert isinstance(exact, np.ndarray) and exact.dtype == np.bool_ and exact.shape == (250,)
    assert np.flatnonzero(exact).tolist() == list(range(50, 100))
    assert np.array_equal(ranges_to_latent_mask([(2.01, 3.99)], 250, fps), exact)
    assert np.flatnonzero(ranges_to_latent_mask([(2.05, 2.06)], 250, fps)).tolist() == [51]
    # 0.1 + 0.2 seconds at 10 fps is 3.0000000000000004 frames: no spurious frame 3.
    assert np.flatnonzero(ranges_to_latent_mask([(0.0, 0.1 + 0.2)], 10, 10.0)).tolist() == [0, 1, 2]
    assert ranges_to_latent_mask([(9.0, 20.0)], 250, fps).sum() == 25


def _pair(rate: int = 16000, channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    original = rng.uniform(-0.5, 0.5, (2 * rate, channels)).astype(np.float32)
    generated = rng.uniform(-0.5, 0.5, (2 * rate, channels)).astype(np.float32)
    return original, generated


def test_composite_keeps_the_outside_bit_identical():
    rate = 16000
    original, generated = _pair(rate)
    ranges = [(0.5, 1.0), (1.2, 1.3)]
    out = composite(original, generated, ranges, rate, crossfade=0.01)

    inside = ranges_to_sample_mask(ranges, len(original), rate)
    np.testing.assert_array_equal(out[~inside], original[~inside])
    fade = int(0.01 * rate)
    middle = slice(int(0.5 * rate) + fade, int(1.0 * rate) - fade)
    np.testing.assert_array_equal(out[middle], generated[middle])
    assert out.dtype == original.dtype and out.shape == original.shape


def test_composite_crossfade_lies_inside_the_range():
    rate = 1000
    original = np.zeros((2000, 1), dtype=np.float32)
    generated = np.ones((2000, 1), dtype=np.float32)
    out = composite(original, generated, [(0.5, 1.0)], rate, crossfade=0.02)[:, 0]
    fade_in, fade_out = out[500:520], out[980:1000]
    assert np.all(out[:500] == 0) and np.all(out[1000:] == 0)
    assert np.all(np.diff(fade_in) > 0) and 0 < fade_in[0] < 0.1 and 0.9 < fade_in[-1] < 1
    np.testing.assert_allclose(fade_out, fade_in[::-1], atol=1e-6)
    assert np.all(out[520:980] == 1)


def test_composite_no_fade_at_the_clip_edges_and_none_when_zero():
    rate = 1000
    original, generated = _pair(rate, channels=1)
    out = composite(original, generated, [(0.0, 0.3), (1.9, 2.5)], rate, crossfade=0.05)
    np.testing.assert_array_equal(out[:250], generated[:250])
    np.testing.assert_array_equal(out[1950:], generated[1950:])
    hard = composite(original[:, 0], generated[:, 0], [(0.5, 1.0)], rate, crossfade=0.0)
    np.testing.assert_array_equal(hard[500:1000], generated[500:1000, 0])
    np.testing.assert_array_equal(hard[:500], original[:500, 0])


def test_composite_refuses_mismatched_shapes():
    original, generated = _pair()
    with pytest.raises(ValueError, match="shape"):
        composite(original, generated[:-1], [(0.5, 1.0)], 16000)


def test_resolve_mask_checks_given_ranges_or_finds_the_gaps(caplog):
    samples = _clip_with_gaps()
    assert resolve_mask("addition", None, samples, 16000, hint="with --mask START-END") is None
    given = resolve_mask("inpainting", [(2.5, 9.0), (0.1, 0.3), (0.2, 0.4)], samples, 16000, hint="-")
    assert given == validate_ranges([(0.1, 0.4), (2.5, 9.0)], len(samples) / 16000)
    with caplog.at_level("INFO", logger="nrt.masks"):
        gaps = resolve_mask("inpainting", [], samples, 16000, hint="-", name="clip-7")
    assert gaps == find_silence_gaps(samples, 16000)
    assert "clip-7: inpainting the silent gaps" in caplog.text


def test_resolve_mask_without_a_gap_says_how_to_give_one():
    audible = np.full((16000, 1), 0.1, dtype=np.float32)
    with pytest.raises(InputError, match=r"no silent gap of 0.25 s or more to inpaint; give the region in a mask column"):
        resolve_mask("inpainting", None, audible, 16000, hint="in a mask column")
    with pytest.raises(InputError, match="starts past the end of the clip"):
        resolve_mask("inpainting", [(2.0, 3.0)], audible, 16000, hint="-")
