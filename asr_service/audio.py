"""Probe, decode and resample uploads; knows nothing of Flask or Celery."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import soxr

from asr_service.errors import AudioInvalid, AudioTooLong

TARGET_RATE = 16_000
_PROBE_SECONDS = 0.5


@dataclass(frozen=True)
class AudioInfo:
    """What the probe learned about an upload."""

    format: str
    codec: str
    duration_s: float
    sample_rate: int
    channels: int


def probe(data: bytes) -> AudioInfo:
    """Check that the bytes are decodable audio and read their duration, without a full decode."""
    if not data:
        raise AudioInvalid("the uploaded file is empty")
    try:
        return _probe_soundfile(data)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a format libsndfile reads (m4a, webm, ...): let FFmpeg try
    return _probe_av(data)


def decode(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode to float32 mono at 16 kHz; stops at max_seconds so a lying header cannot blow up."""
    if not data:
        raise AudioInvalid("the uploaded file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            limit = int(max_seconds * f.samplerate) + 1
            samples = f.read(frames=limit, dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _decode_av(data, max_seconds)
    if len(samples) >= limit:
        raise AudioTooLong(f"the recording is longer than the {max_seconds:g} s limit")
    mono = samples.mean(axis=1, dtype=np.float32)
    if rate != TARGET_RATE and len(mono):
        mono = soxr.resample(mono, rate, TARGET_RATE).astype(np.float32)
    return mono


def _probe_soundfile(data: bytes) -> AudioInfo:
    with sf.SoundFile(io.BytesIO(data)) as f:
        f.read(frames=int(_PROBE_SECONDS * f.samplerate), dtype="float32")
        return AudioInfo(
            format=f.format.lower(),
            codec=f.subtype.lower(),
            duration_s=f.frames / f.samplerate if f.frames > 0 else 0.0,
            sample_rate=f.samplerate,
            channels=f.channels,
        )


def _open_av(data: bytes) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise AudioInvalid(f"not a recognised audio file ({_reason(exc)})") from None
    if not container.streams.audio:
        container.close()
        raise AudioInvalid("the file has no audio stream")
    return container, container.streams.audio[0]


def _probe_av(data: bytes) -> AudioInfo:
    container, stream = _open_av(data)
    with container:
        decoded = 0.0
        try:
            for frame in container.decode(stream):
                decoded += frame.samples / (frame.sample_rate or 1)
                if decoded >= _PROBE_SECONDS:
                    break
        except (av.FFmpegError, ValueError) as exc:
            raise AudioInvalid(f"the audio stream could not be decoded ({_reason(exc)})") from None
        if decoded == 0.0 and not _declared_duration(container, stream):
            raise AudioInvalid("the file contains no decodable audio")
        codec = stream.codec_context
        return AudioInfo(
            format=container.format.name.split(",")[0],
            codec=codec.name,
            duration_s=_declared_duration(container, stream) or decoded,
            sample_rate=codec.sample_rate or 0,
            channels=codec.channels or 0,
        )


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return 0.0


def _decode_av(data: bytes, max_seconds: float) -> np.ndarray:
    container, stream = _open_av(data)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
    chunks: list[np.ndarray] = []
    total, limit = 0, int(max_seconds * TARGET_RATE)
    with container:
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += out.samples
                if total > limit:
                    raise AudioTooLong(f"the recording is longer than the {max_seconds:g} s limit")
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except (av.FFmpegError, ValueError) as exc:
            raise AudioInvalid(f"the audio stream could not be decoded ({_reason(exc)})") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)[:200] or type(exc).__name__
