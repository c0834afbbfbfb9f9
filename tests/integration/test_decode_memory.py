"""A small upload that claims hours of many-channel audio cannot make a worker balloon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from flask.testing import FlaskClient

from asr_service.api.problems import PROBLEM_JSON
from asr_service.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, TARGET_RATE
from tests.harness import report
from tests.integration.conftest import ROOT
from tests.integration.flow import submit
from tests.samples import wav_bytes

pytestmark = pytest.mark.slow  # a 4-hour recording decoded in a fresh interpreter

# Runs in a fresh interpreter, so the peak RSS (VmHWM) it reports belongs to this decode alone.
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from asr_service.audio import decode

def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))

with open(sys.argv[2], "rb") as upload:
    data = upload.read()
before = peak_mb()
samples = decode(data, float(sys.argv[3]))
print(json.dumps({"before_mb": round(before, 1), "after_mb": round(peak_mb(), 1),
                  "samples": len(samples), "upload_mb": round(len(data) / 2**20, 2)}))
"""


def silent_flac(path: Path, seconds: int, rate: int, channels: int) -> Path:
    """Digital silence as FLAC: hours of audio in a few MB, written 10 s at a time."""
    block = np.zeros((10 * rate, channels), np.int16)
    with sf.SoundFile(path, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        for _ in range(seconds // 10):
            out.write(block)
    return path


def decode_in_child(path: Path, max_seconds: float) -> dict[str, Any]:
    """Decode the file in a new Python process; its peak RSS before and after the decode."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(path), str(max_seconds)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["added_mb"] = round(figures["after_mb"] - figures["before_mb"], 1)
    return figures


def test_flac_bomb_adds_less_than_100_mb(tmp_path: Path) -> None:
    bomb = silent_flac(tmp_path / "bomb.flac", 600, 192_000, 8)  # ~1 MB, 3.7 GB as float32

    figures = decode_in_child(bomb, max_seconds=600)

    report("decode-memory", file="10 min 8 ch 192 kHz FLAC", **figures)
    assert figures["upload_mb"] < 2
    assert figures["samples"] == 600 * TARGET_RATE
    assert figures["added_mb"] < 100  # the 16 kHz mono output alone is 37 MB


def test_four_hour_stereo_flac_peaks_under_1_2_gb(tmp_path: Path) -> None:
    long = silent_flac(tmp_path / "long.flac", 4 * 3600, 48_000, 2)

    figures = decode_in_child(long, max_seconds=4 * 3600)

    report("decode-memory", file="4 h stereo 48 kHz FLAC", **figures)
    assert figures["samples"] == 4 * 3600 * TARGET_RATE
    assert figures["after_mb"] < 1200  # the output is 879 MB; a whole-file decode needs ~9.7 GB


def silent_wav(rate: int, channels: int) -> bytes:
    """0.1 s of silence in a WAV with any rate and channel count."""
    return wav_bytes(np.zeros((rate // 10, channels), np.float32), rate)


@pytest.mark.parametrize(("rate", "channels", "limit"), [
    (768_000, 1, f"{MAX_SAMPLE_RATE} Hz"), (16_000, 64, f"limit is {MAX_CHANNELS}")])
def test_absurd_rate_or_channels_upload_is_422(client: FlaskClient, rate: int, channels: int,
                                                limit: str) -> None:
    before = client.get("/api/v1/asr/history").get_json()["total"]

    response = submit(client, silent_wav(rate, channels), "absurd.wav")

    assert response.status_code == 422, response.get_json()
    assert response.content_type == PROBLEM_JSON
    body = response.get_json()
    assert body["type"] == "/problems/audio-invalid" and limit in body["detail"]
    assert client.get("/api/v1/asr/history").get_json()["total"] == before
