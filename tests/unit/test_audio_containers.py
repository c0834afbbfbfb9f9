"""Only audio containers: bodies that would make FFmpeg open sockets or files are refused, fast,
with one answer; the audio containers outside libsndfile still decode."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from asr_service import audio
from asr_service.audio import AV_FORMATS, NOT_AUDIO, decode, probe
from asr_service.errors import AudioInvalid
from tests import samples

# Old code: the SDP body held each call ~10-20 s (RTP sockets waiting for packets).
FAST_S = 5.0

HOSTILE = {
    "sdp": samples.sdp_session(41234),
    "ffconcat-existing-media": samples.ffconcat("secret.wav"),
    "ffconcat-missing-file": samples.ffconcat("nope.wav"),
    "ffconcat-non-media-file": samples.ffconcat("notes.txt"),
    "ffconcat-data-uri": samples.ffconcat("data:audio/wav;base64,UklGRg=="),
    "ffconcat-subfile": samples.ffconcat("subfile,,start,0,end,0,,:secret.wav"),
    "ffconcat-file-url": samples.ffconcat("file:secret.wav"),
    "ffconcat-tee": samples.ffconcat("tee:secret.wav"),
    "hls": samples.hls_playlist("secret.wav"),
    "dash": samples.dash_manifest("secret.wav"),
    "png-image2pipe": samples.png_image(100),
}
ACTIONS: dict[str, Callable[[bytes], object]] = {"probe": probe,
                                                 "decode": lambda data: decode(data, 60)}


@pytest.fixture
def server_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a media file and a non-media file, as the API's may."""
    (tmp_path / "secret.wav").write_bytes(samples.encode("wav", 1.0))
    (tmp_path / "notes.txt").write_text("not media\n" * 50)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("action", ACTIONS, ids=list(ACTIONS))
@pytest.mark.parametrize("name", HOSTILE, ids=list(HOSTILE))
def test_hostile_containers_are_refused_fast_with_one_answer(server_cwd: Path, name: str,
                                                             action: str) -> None:
    began = time.monotonic()
    with pytest.raises(AudioInvalid) as refused:
        ACTIONS[action](HOSTILE[name])
    took = time.monotonic() - began

    # The same text whether the named file exists, is media, or is missing: no oracle.
    assert str(refused.value) == NOT_AUDIO
    assert took < FAST_S, f"{name}: {took:.1f} s"


def test_a_nested_open_is_refused_even_by_a_demuxer_that_opens_files(server_cwd: Path) -> None:
    # The protocol list holds on its own: were concat ever allowed, it could still read nothing.
    options = {**audio._AV_OPTIONS, "format_whitelist": "concat"}
    with pytest.raises(av.FFmpegError):
        av.open(io.BytesIO(samples.ffconcat("secret.wav")), options=options)


def test_the_timeout_cuts_a_demuxer_that_waits() -> None:
    # PyAV's timeout reaches FFmpeg's interrupt callback for a Python file object too: were a
    # waiting demuxer ever allowed, an open and each read would end after the timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1] & ~1  # RTP takes an even port, RTCP the next one
    options = {"format_whitelist": "sdp", "protocol_whitelist": "rtp,udp"}
    began = time.monotonic()
    with av.open(io.BytesIO(samples.sdp_session(port)), options=options, timeout=0.5) as c:
        with pytest.raises(av.FFmpegError):
            next(c.decode(audio=0))
    assert time.monotonic() - began < FAST_S  # without a timeout: 10 s to open, 10 s to read


def test_every_allowed_demuxer_exists() -> None:
    for name in AV_FORMATS:
        assert av.format.ContainerFormat(name, "r").name.split(",")[0] == name


@pytest.mark.parametrize(
    ("container", "codec", "name"),
    [("adts", "aac", "aac"), ("wv", "wavpack", "wv"), ("caf", "pcm_s16le", "caf"),
     ("aiff", "pcm_s16be", "aiff"), ("au", "pcm_s16be", "au"), ("w64", "pcm_s16le", "w64")],
)
def test_other_audio_containers_still_probe_and_decode(container: str, codec: str,
                                                       name: str) -> None:
    data = samples.av_bytes(samples.signal(2.0), container, codec)

    info = probe(data)

    assert info.format == name
    assert info.duration_s == pytest.approx(2.0, abs=0.2)
    assert len(decode(data, 60)) / audio.TARGET_RATE == pytest.approx(2.0, abs=0.2)
