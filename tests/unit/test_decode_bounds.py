"""Decoding in blocks: absurd headers are refused, and real recordings decode as before."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from asr_service.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, TARGET_RATE, decode, probe
from asr_service.errors import AudioInvalid, AudioTooLong
from tests.samples import signal, soundfile_bytes, wav_bytes

# Longer than one decode block at every rate tested (16 kHz mono: 2**18 frames, 16.4 s).
SECONDS = 20.0


def silent_wav(rate: int, channels: int, seconds: float = 0.1) -> bytes:
    """A short silent WAV with any rate and channel count libsndfile will write."""
    return wav_bytes(np.zeros((int(rate * seconds), channels), np.float32), rate)


def silent_mka(rate: int) -> bytes:
    """A silent PCM Matroska file: only FFmpeg reads it, so the PyAV probe path sees it."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def whole_file_decode(data: bytes) -> np.ndarray:
    """The decode this service used before blocks: all of it at the native rate, then soxr."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1, dtype=np.float32)
    return soxr.resample(mono, rate, TARGET_RATE) if rate != TARGET_RATE else mono


def recording(fmt: str, rate: int, channels: int) -> bytes:
    """The speech-like test signal, SECONDS long, in a libsndfile format."""
    left = signal(SECONDS, rate)
    samples = left if channels == 1 else np.stack([left, 0.5 * signal(SECONDS, rate, 3)], 1)
    return wav_bytes(samples, rate) if fmt == "WAV" else soundfile_bytes(samples, fmt, rate)


@pytest.mark.parametrize(("data", "limit"), [
    (silent_wav(768_000, 1), f"{MAX_SAMPLE_RATE} Hz"),
    (silent_wav(2_000_000, 2), f"{MAX_SAMPLE_RATE} Hz"),
    (soundfile_bytes(np.zeros(65_535, np.float32), "FLAC", 655_350), f"{MAX_SAMPLE_RATE} Hz"),
    (silent_mka(768_000), f"{MAX_SAMPLE_RATE} Hz"),
    (silent_wav(16_000, 64), f"limit is {MAX_CHANNELS}"),
    (silent_wav(16_000, MAX_CHANNELS + 1), f"limit is {MAX_CHANNELS}"),
], ids=["wav-768k", "wav-2M", "flac-655k", "mka-768k", "wav-64ch", "wav-33ch"])
def test_probe_refuses_absurd_rate_or_channels_naming_the_limit(data: bytes, limit: str) -> None:
    with pytest.raises(AudioInvalid, match=limit):
        probe(data)


def test_probe_refuses_a_crafted_header_before_reading_it() -> None:
    data = bytearray(silent_wav(16_000, 1024, seconds=0.01))
    at = data.index(b"data")
    data[at + 4: at + 8] = struct.pack("<I", 0xFFFF_FFF0)  # claims 4 GB of 1024-channel audio

    with pytest.raises(AudioInvalid, match="1024 channels"):
        probe(bytes(data))


def test_decode_refuses_absurd_rate_too() -> None:
    with pytest.raises(AudioInvalid, match=f"{MAX_SAMPLE_RATE} Hz"):
        decode(silent_wav(768_000, 1), max_seconds=60)


@pytest.mark.parametrize(("rate", "channels"), [(MAX_SAMPLE_RATE, MAX_CHANNELS),
                                                (192_000, 8)])
def test_probe_accepts_rates_and_channels_at_the_limit(rate: int, channels: int) -> None:
    info = probe(silent_wav(rate, channels))

    assert (info.sample_rate, info.channels) == (rate, channels)
    assert len(decode(silent_wav(rate, channels), max_seconds=60)) == TARGET_RATE // 10


# MP3 at 48 kHz stereo is garbled mid-file if the blocks come from SoundFile.read (it seeks).
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_block_decode_equals_whole_file_decode(fmt: str, rate: int, channels: int) -> None:
    data = recording(fmt, rate, channels)

    blocks, whole = decode(data, max_seconds=60), whole_file_decode(data)

    assert blocks.dtype == np.float32
    assert abs(len(blocks) - len(whole)) <= 1
    assert len(blocks) / TARGET_RATE == pytest.approx(SECONDS, abs=0.1)
    common = min(len(blocks), len(whole))
    np.testing.assert_allclose(blocks[:common], whole[:common], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_recording_longer_than_max_seconds_is_too_long(fmt: str) -> None:
    data = recording(fmt, 48_000, 2)

    with pytest.raises(AudioTooLong, match="15 s limit"):
        decode(data, max_seconds=15)


def test_recording_as_long_as_max_seconds_is_decoded() -> None:
    samples = decode(recording("FLAC", 44_100, 2), max_seconds=SECONDS)

    assert len(samples) == int(SECONDS * TARGET_RATE)
