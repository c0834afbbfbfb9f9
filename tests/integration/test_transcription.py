"""Submit -> poll -> succeeded through the real API, Redis, worker and FunASR engine."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests import samples
from tests.integration.flow import submit, wait_for


@pytest.fixture(scope="module")
def direct_model(model_assets: dict[str, Path]):
    """The same model, called directly: what the service must reproduce."""
    from funasr import AutoModel

    return AutoModel(model=str(model_assets["asr"]), vad_model=str(model_assets["vad"]),
                     disable_update=True, disable_pbar=True, ncpu=1)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "m4a"])
def test_transcript_equals_direct_generate(fmt, client, worker, direct_model, tmp_path):
    data = samples.encode(fmt, seconds=5.0)
    response = submit(client, data, filename=f"clip.{fmt}")
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["task_id"]
    assert response.headers["Location"].endswith(f"/api/v1/asr/result/{task_id}")

    body = wait_for(client, task_id)

    assert body["status"] == "succeeded", body
    if fmt == "m4a":  # FunASR's own loader cannot read AAC: give it the same decoded samples
        from asr_service.audio import decode

        direct_input = decode(data, 600)
    else:
        path = tmp_path / f"clip.{fmt}"
        path.write_bytes(data)
        direct_input = str(path)
    expected = direct_model.generate(input=direct_input)[0]["text"]
    result = body["result"]
    assert result["text"] == expected
    assert expected, "the tiny model should say something on 5 s of signal"
    assert result["duration_s"] == pytest.approx(5.0, abs=0.2)  # AAC pads its frames
    assert result["rtf"] > 0 and body["rtf"] > 0
    assert all(0 <= s["start"] <= s["end"] <= 5.1 for s in result["segments"])
    assert body["worker"].startswith("test-worker@") and body["attempts"] == 1


@pytest.mark.parametrize("fmt", ["flac", "ogg", "opus", "webm"])
def test_other_formats_succeed(fmt, client, worker):
    body = wait_for(client, submit(client, samples.encode(fmt), f"c.{fmt}").get_json()["task_id"])
    assert body["status"] == "succeeded", body
    assert body["result"]["duration_s"] == pytest.approx(3.0, abs=0.2)


def test_stereo_44k_is_resampled_to_16k_mono(client, worker):
    stereo = np.stack([samples.signal(2.0, rate=44_100)] * 2, axis=1)
    buf = io.BytesIO()
    sf.write(buf, stereo, 44_100, format="WAV")
    body = wait_for(client, submit(client, buf.getvalue()).get_json()["task_id"])
    assert body["status"] == "succeeded", body
    assert body["result"]["duration_s"] == pytest.approx(2.0, abs=0.01)


def test_silence_succeeds_with_empty_text(client, worker):
    body = wait_for(client, submit(client, samples.wav_bytes(np.zeros(32_000, np.float32)))
                    .get_json()["task_id"])
    assert body["status"] == "succeeded", body
    assert body["result"]["text"] == "" and body["result"]["segments"] == []


def test_language_and_hotwords_reach_the_job(client, worker):
    response = submit(client, samples.encode("wav", 1.0), language="en",
                      hotwords="alpha，bravo charlie")
    body = wait_for(client, response.get_json()["task_id"])
    assert body["status"] == "succeeded", body
    assert body["language"] == "en" and body["hotwords"] == ["alpha", "bravo", "charlie"]
    assert body["result"]["language"] == "en"
