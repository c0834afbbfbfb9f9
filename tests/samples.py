"""Test recordings made in code (a tone-and-noise signal in any container), and broken ones."""

from __future__ import annotations

import io
import random
import struct
import wave
from typing import Any

import av
import numpy as np
import soundfile as sf

RATE = 16_000


def signal(seconds: float, rate: int = RATE, seed: int = 7) -> np.ndarray:
    """Speech-like float32 signal: bursts of harmonics and noise separated by pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.2 * np.sin(2 * np.pi * 360 * t)
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(np.float32)
    noisy = voiced + 0.05 * rng.standard_normal(len(t))
    return (noisy * envelope).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    """Encode samples as a WAV file."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def silent_wav(data_bytes: int, channels: int = 1, rate: int = RATE) -> bytes:
    """A 16-bit PCM WAV of `data_bytes` of silence (header 44 bytes), built without numpy so a
    60 MB one costs the test 60 MB."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(data_bytes))
    return out.getvalue()


def soundfile_bytes(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """Encode with libsndfile: FLAC, OGG (vorbis/opus) or MP3."""
    subtype = {"OGG": "VORBIS", "OPUS": "OPUS", "MP3": "MPEG_LAYER_III", "FLAC": "PCM_16"}[fmt]
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="OGG" if fmt == "OPUS" else fmt, subtype=subtype)
    return buf.getvalue()


def av_bytes(samples: np.ndarray, container: str, codec: str, rate: int = RATE) -> bytes:
    """Encode with FFmpeg (PyAV): m4a/aac, webm/opus and the like."""
    buf = io.BytesIO()
    out_rate = 48_000 if codec == "libopus" else rate
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        fmt = stream.codec_context.format
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=out_rate)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def encode(fmt: str, seconds: float = 3.0) -> bytes:
    """A recording of the test signal in one of: wav, flac, ogg, opus, mp3, m4a, webm."""
    samples = signal(seconds)
    if fmt == "wav":
        return wav_bytes(samples)
    if fmt in ("flac", "ogg", "opus", "mp3"):
        return soundfile_bytes(samples, fmt.upper())
    if fmt == "m4a":
        return av_bytes(samples, "ipod", "aac")
    if fmt == "webm":
        return av_bytes(samples, "webm", "libopus")
    raise ValueError(fmt)


# Hostile and broken input: every test that feeds the service bad bytes takes them from here.

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def noise(size: int, seed: int = 1) -> bytes:
    """Random bytes: no container, no codec."""
    return np.random.default_rng(seed).bytes(size)


def text_file(lines: int = 20) -> bytes:
    """A text file, as someone might name it recording.wav."""
    return b"hello, this is a text file someone named recording.wav\n" * lines


def png_image(padding: int) -> bytes:
    """A PNG signature and `padding` zero bytes: an image, not a recording."""
    return PNG_SIGNATURE + bytes(padding)


def truncated(fmt: str, seconds: float, keep: int) -> bytes:
    """The first `keep` bytes of a recording, as an interrupted transfer leaves it."""
    return encode(fmt, seconds)[:keep]


def lying_wav(claimed_s: float, real_s: float) -> bytes:
    """A WAV whose data chunk says claimed_s while real_s of samples follow."""
    data = bytearray(encode("wav", real_s))
    at = data.index(b"data")
    data[at + 4: at + 8] = struct.pack("<I", int(claimed_s * RATE * 2))
    return bytes(data)


def corrupt_m4a() -> bytes:
    """Probes fine (its first frames decode) but cannot be decoded in full: the job fails."""
    data = bytearray(encode("m4a", 10.0))
    third = len(data) // 3
    data[third: 2 * third] = b"\x5a" * third
    return bytes(data)


# Bodies that ask FFmpeg's auto-detection for a demuxer that reaches outside the upload.

def sdp_session(port: int = 41234) -> bytes:
    """An SDP description: the sdp demuxer would listen for RTP on UDP `port` (and port + 1)."""
    return (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % port)


def ffconcat(*paths: str) -> bytes:
    """An ffconcat script: the concat demuxer would read these paths (relative to its cwd)."""
    return b"ffconcat version 1.0\n" + b"".join(b"file '%s'\n" % p.encode() for p in paths)


def hls_playlist(uri: str) -> bytes:
    """An HLS playlist: the hls demuxer would open `uri` as its one segment."""
    return (b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            b"#EXTINF:10.0,\n%s\n#EXT-X-ENDLIST\n" % uri.encode())


def dash_manifest(uri: str) -> bytes:
    """A DASH manifest: the dash demuxer would open `uri` as its one representation."""
    return (b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            b'mediaPresentationDuration="PT1S" minBufferTime="PT1S" '
            b'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet '
            b'mimeType="audio/wav"><Representation id="1" bandwidth="1"><BaseURL>%s</BaseURL>'
            b'</Representation></AdaptationSet></Period></MPD>\n' % uri.encode())


# Transcripts, for the output formats.

def whisper_shaped(seconds: float, seed: int = 7, shuffle: bool = False) -> dict[str, Any]:
    """A faster-whisper-like result: 5 s segments of 12 timed words (2.4 words/s)."""
    rng = random.Random(seed)
    segments, words, t = [], [], 0.0
    while t < seconds:
        said = [{"word": f" w{rng.randint(0, 999)}", "start": round(t + k * 0.4, 3),
                 "end": round(t + k * 0.4 + 0.3, 3)} for k in range(12)]
        words += said
        segments.append({"start": t, "end": t + 5,
                         "text": "".join(w["word"] for w in said).strip()})
        t += 5
    if shuffle:
        rng.shuffle(words)
    return {"text": " ".join(s["text"] for s in segments), "segments": segments, "words": words,
            "language": "en", "duration_s": t}
