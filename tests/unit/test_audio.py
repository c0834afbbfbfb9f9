"""Probing and decoding uploads in every supported format, and refusing bad ones."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from asr_service.audio import TARGET_RATE, decode, probe
from asr_service.errors import AudioInvalid, AudioTooLong
from tests.samples import encode, noise, png_image, signal, text_file, truncated, wav_bytes

FORMATS = ["wav", "flac", "ogg", "opus", "mp3", "m4a", "webm"]
SECONDS = 3.0


@pytest.fixture(scope="module")
def recordings() -> dict[str, bytes]:
    """The 3 s test signal in each supported format, encoded once."""
    return {fmt: encode(fmt, SECONDS) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_probes_with_its_duration(recordings: dict[str, bytes], fmt: str) -> None:
    info = probe(recordings[fmt])

    assert info.duration_s == pytest.approx(SECONDS, abs=0.2)
    assert info.channels == 1
    assert info.sample_rate in (16_000, 48_000)


@pytest.mark.parametrize(
    ("fmt", "container", "codec"),
    [("wav", "wav", "pcm_16"), ("flac", "flac", "pcm_16"), ("ogg", "ogg", "vorbis"),
     ("opus", "ogg", "opus"), ("mp3", "mp3", "mpeg_layer_iii"), ("m4a", "mov", "aac"),
     ("webm", "matroska", "opus")],
)
def test_probe_names_container_and_codec(recordings: dict[str, bytes], fmt: str,
                                         container: str, codec: str) -> None:
    info = probe(recordings[fmt])

    assert (info.format, info.codec) == (container, codec)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_16k_mono_float32(recordings: dict[str, bytes],
                                                  fmt: str) -> None:
    samples = decode(recordings[fmt], max_seconds=60)

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert len(samples) / TARGET_RATE == pytest.approx(SECONDS, abs=0.2)
    assert 0.05 < float(np.sqrt(np.mean(samples**2))) < 0.5  # the signal, not silence


def test_lossless_wav_decodes_to_the_original_samples() -> None:
    original = signal(1.0)

    samples = decode(wav_bytes(original), max_seconds=60)

    np.testing.assert_allclose(samples, original, atol=1e-4)


def test_stereo_44k_is_resampled_to_16k_and_keeps_its_pitch() -> None:
    t = np.arange(int(2.0 * 44_100)) / 44_100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = wav_bytes(np.stack([tone, tone], axis=1), rate=44_100)

    info = probe(data)
    samples = decode(data, max_seconds=60)

    assert (info.sample_rate, info.channels) == (44_100, 2)
    assert info.duration_s == pytest.approx(2.0)
    assert len(samples) == 32_000
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * TARGET_RATE / len(samples)
    assert peak_hz == pytest.approx(440, abs=2)


def test_stereo_channels_are_averaged_to_mono() -> None:
    left = signal(1.0)
    right = np.zeros_like(left)

    samples = decode(wav_bytes(np.stack([left, right], axis=1)), max_seconds=60)

    np.testing.assert_allclose(samples, left / 2, atol=1e-4)


@pytest.mark.parametrize("action", [probe, lambda data: decode(data, 60)])
def test_empty_upload_is_invalid(action: Callable[[bytes], object]) -> None:
    with pytest.raises(AudioInvalid, match="empty"):
        action(b"")


@pytest.mark.parametrize(
    "data",
    [
        noise(4096),
        text_file(20),
        png_image(100),
        bytes(4096),
    ],
    ids=["random-bytes", "text-named-wav", "png-image", "zeros"],
)
def test_non_audio_is_invalid_for_probe_and_decode(data: bytes) -> None:
    with pytest.raises(AudioInvalid):
        probe(data)
    with pytest.raises(AudioInvalid):
        decode(data, 60)


def test_truncated_m4a_is_invalid() -> None:
    data = truncated("m4a", SECONDS, 9000)  # about half of it

    with pytest.raises(AudioInvalid):
        probe(data)
    with pytest.raises(AudioInvalid):
        decode(data, 60)


@pytest.mark.parametrize("fmt", ["wav", "flac", "m4a", "webm"])
def test_decode_past_max_seconds_is_too_long(recordings: dict[str, bytes], fmt: str) -> None:
    with pytest.raises(AudioTooLong, match="longer than the 2 s limit"):
        decode(recordings[fmt], max_seconds=2)


@pytest.mark.parametrize("fmt", ["wav", "webm"])
def test_decode_at_exactly_max_seconds_is_accepted(recordings: dict[str, bytes],
                                                   fmt: str) -> None:
    assert len(decode(recordings[fmt], max_seconds=SECONDS)) == SECONDS * TARGET_RATE


def test_zero_length_wav_probes_as_zero_seconds_and_decodes_to_nothing() -> None:
    data = wav_bytes(np.zeros(0, dtype=np.float32))

    assert probe(data).duration_s == 0.0
    assert len(decode(data, 60)) == 0
