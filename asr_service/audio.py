"""Probe, decode and resample uploads; knows nothing of Flask or Celery."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import soxr

from asr_service import offhub
from asr_service.errors import AudioInvalid, AudioTooLong, ProbeBusy

TARGET_RATE = 16_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
_PROBE_SECONDS = 0.5
# Samples (all channels together) decoded at a time: 1 MiB of float32 whatever the header says.
_BLOCK_SAMPLES = 1 << 18
# The FFmpeg demuxers an upload may be read with: audio containers (mov and matroska also carry
# mp4 and webm) that read nothing but the upload's own bytes. Left to detect the format from the
# content, FFmpeg picks among ~350 demuxers, among them sdp (listens on the UDP ports the body
# names), concat, hls and dash (open the files and URLs the body lists).
AV_FORMATS = ("wav", "w64", "flac", "ogg", "mp3", "mov", "matroska", "aiff", "au", "caf", "aac",
              "asf", "amr", "amrnb", "amrwb", "ac3", "eac3", "wv")
_AV_OPTIONS = {
    "format_whitelist": ",".join(AV_FORMATS),
    # Every nested open (a file, a URL, data:, subfile:) is checked against this list, and no
    # protocol is called "none": a demuxer can read nothing beyond the upload.
    "protocol_whitelist": "none",
}
# Per open and per packet read. The bytes are in memory, so only a demuxer waiting on something
# else (it cannot, above) would take this long; it bounds a mistake in the lists above.
_AV_TIMEOUT_S = 5.0
# One answer for every body FFmpeg refuses: a demuxer's own error (its strerror) would tell a
# missing server file from an existing one.
NOT_AUDIO = ("not a recognised audio file (supported: WAV, FLAC, Ogg/Opus, MP3, M4A/MP4, "
             "WebM/Matroska, AIFF, AU, CAF, AAC, WMA, AMR, AC-3, WavPack)")
# soundfile serialises every open behind one class-level threading.Lock. Under gunicorn's gevent
# worker it is imported after threading was patched, so that lock is gevent's, while probes run
# in OS threads (offhub.call): give it an OS lock. soundfile is pinned, so the attribute stays.
sf.SoundFile._sf_error_lock = offhub.os_lock()
# How long a submit waits for probe() (~0.5 s of audio is decoded): past it the upload is
# refused, whatever the C call goes on doing.
PROBE_TIMEOUT_S = 10.0


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


def probe_off_hub(data: bytes, timeout_s: float = PROBE_TIMEOUT_S) -> AudioInfo:
    """probe(), in an OS thread when gevent runs the process (a C call would stall every
    greenlet). Past timeout_s a 503 to try again: with the demuxer and protocol allow-lists
    nothing hostile can make FFmpeg wait, so an overrun means an overloaded process, not a bad
    file (a valid upload must never hear that it is not audio)."""
    try:
        return offhub.call(probe, data, timeout_s=timeout_s)
    except TimeoutError:
        raise ProbeBusy(f"the upload was not read within {timeout_s:g} s: this API process is "
                        "overloaded; nothing was stored, try again after Retry-After "
                        "seconds") from None


def decode(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode to float32 mono at 16 kHz in blocks: a lying header costs no more than the output."""
    if not data:
        raise AudioInvalid("the uploaded file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return _decode_soundfile(f, max_seconds)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _decode_av(data, max_seconds)


def _check_shape(rate: int, channels: int) -> None:
    if rate > MAX_SAMPLE_RATE:
        raise AudioInvalid(f"the sample rate is {rate} Hz; the limit is {MAX_SAMPLE_RATE} Hz")
    if channels > MAX_CHANNELS:
        raise AudioInvalid(f"the file has {channels} channels; the limit is {MAX_CHANNELS}")


class _Output:
    """A float32 buffer that 16 kHz blocks are appended to; grows only if a header lied."""

    def __init__(self, expected: int) -> None:
        self.samples = np.empty(max(expected, 1), dtype=np.float32)  # untouched pages cost no RSS
        self.size = 0

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        if end > len(self.samples):
            grown = np.empty(max(end, len(self.samples) * 3 // 2), dtype=np.float32)
            grown[:self.size] = self.samples[:self.size]
            self.samples = grown
        self.samples[self.size:end] = block
        self.size = end

    def result(self) -> np.ndarray:
        return self.samples[:self.size]


def _decode_soundfile(f: sf.SoundFile, max_seconds: float) -> np.ndarray:
    rate = f.samplerate
    _check_shape(rate, f.channels)
    limit = int(max_seconds * rate)  # more input frames than this is too long
    claimed = min(max(f.frames, 0), limit + 1)
    out = _Output(math.ceil(claimed * TARGET_RATE / rate) + 1)
    stream = None if rate == TARGET_RATE else soxr.ResampleStream(rate, TARGET_RATE, 1,
                                                                  dtype="float32")
    total = 0
    for block in _read_blocks(f, max(1, _BLOCK_SAMPLES // f.channels)):
        total += len(block)
        if total > limit:
            raise AudioTooLong(f"the recording is longer than the {max_seconds:g} s limit")
        mono = block.mean(axis=1, dtype=np.float32)
        out.append(stream.resample_chunk(mono) if stream else mono)
    if stream and total:
        out.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return out.result()


def _read_blocks(f: sf.SoundFile, frames: int) -> Iterator[np.ndarray]:
    """Float32 blocks (one reused buffer) of up to `frames` frames, up to the header's count."""
    # Not SoundFile.read: it seeks after every call, and libsndfile turns that seek into an
    # mpg123 seek that garbles the next MP3 frame. soundfile is pinned, so its cffi handles stay.
    block = np.empty((frames, f.channels), dtype=np.float32)
    pointer = sf._ffi.cast("float *", block.ctypes.data)
    remaining = f.frames
    while remaining > 0:
        got = sf._snd.sf_readf_float(f._file, pointer, min(frames, remaining))
        sf._error_check(f._errorcode)
        if got <= 0:
            return
        remaining -= got
        yield block[:got]


def _probe_soundfile(data: bytes) -> AudioInfo:
    with sf.SoundFile(io.BytesIO(data)) as f:
        _check_shape(f.samplerate, f.channels)  # before reading: the probe read is 0.5 s of it
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
        container = av.open(io.BytesIO(data), mode="r", options=dict(_AV_OPTIONS),
                            timeout=_AV_TIMEOUT_S)
    except (av.FFmpegError, ValueError, IndexError):
        raise AudioInvalid(NOT_AUDIO) from None
    if not container.streams.audio:
        container.close()
        raise AudioInvalid("the file has no audio stream")
    return container, container.streams.audio[0]


def _probe_av(data: bytes) -> AudioInfo:
    container, stream = _open_av(data)
    with container:
        _check_shape(stream.codec_context.sample_rate or 0, stream.codec_context.channels or 0)
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
    limit = int(max_seconds * TARGET_RATE)
    with container:
        _check_shape(stream.codec_context.sample_rate or 0, stream.codec_context.channels or 0)
        declared = min(_declared_duration(container, stream), max_seconds)
        out = _Output(int(declared * TARGET_RATE) + TARGET_RATE)
        try:
            for frame in container.decode(stream):
                for chunk in resampler.resample(frame):
                    out.append(chunk.to_ndarray().reshape(-1))
                if out.size > limit:
                    raise AudioTooLong(f"the recording is longer than the {max_seconds:g} s limit")
            for chunk in resampler.resample(None):
                out.append(chunk.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as exc:
            raise AudioInvalid(f"the audio stream could not be decoded ({_reason(exc)})") from None
    return out.result()


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)[:200] or type(exc).__name__
