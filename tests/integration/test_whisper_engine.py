"""Real words offline: faster-whisper (Whisper tiny.en from `make models`) recognises English
spoken by espeak-ng through the service exactly as a direct WhisperModel call does; and two
worker groups (FunASR and faster-whisper) serve their own models from one Redis."""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import jiwer
import pytest

from asr_service.audio import decode
from asr_service.engine.base import TranscribeOptions
from asr_service.engine.whisper_engine import decode_options, to_transcript
from tests import samples
from tests.integration.conftest import Worker, report
from tests.integration.flow import submit, wait_for

pytestmark = pytest.mark.slow  # faster-whisper workers and the bare engine on real speech

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send the quarterly report to the finance team by Friday.",
    "It is going to rain tomorrow, so bring an umbrella.",
    "The meeting has been moved to three o'clock in the afternoon.",
    "She sells sea shells by the sea shore.",
    "Our new service transcribes speech without an internet connection.",
]
WER_BOUND = 0.25  # measured: see the report line; tiny.en on espeak-ng's voice


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Each sentence as a WAV spoken by espeak-ng, made now."""
    folder = tmp_path_factory.mktemp("speech")
    wavs = []
    for i, sentence in enumerate(SENTENCES):
        path = folder / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), sentence],
                       check=True)
        wavs.append(path.read_bytes())
    return wavs


@pytest.fixture(scope="module")
def whisper_dir(model_assets: dict[str, Path]) -> Path:
    return model_assets["whisper"]


def test_service_recognises_speech_exactly_as_the_bare_engine(lane, spoken, whisper_dir):
    from faster_whisper import WhisperModel

    group = lane(asr_engine="faster-whisper", asr_model=str(whisper_dir), asr_vad_model="")
    group.worker()
    bare = WhisperModel(str(whisper_dir), device="cpu", compute_type="int8", cpu_threads=1,
                        local_files_only=True)

    service, direct = [], []
    for wav in spoken:
        body = wait_for(group.client, submit(group.client, wav).get_json()["task_id"])
        assert body["status"] == "succeeded", body
        service.append(body["result"]["text"])
        audio = decode(wav, 600)
        pieces, info = bare.transcribe(audio, **decode_options(TranscribeOptions(), vad=True))
        direct.append(to_transcript(list(pieces), info.language, "bare", audio.size).text)
        assert body["result"]["language"] == "en" and body["model"] == "whisper-tiny-en"
        assert body["result"]["words"], "faster-whisper gives word timestamps"

    reference = [_words(s) for s in SENTENCES]
    wer_service = jiwer.wer(reference, [_words(t) for t in service])
    wer_direct = jiwer.wer(reference, [_words(t) for t in direct])
    report("whisper_wer", sentences=len(SENTENCES), wer_service=round(wer_service, 4),
           wer_direct=round(wer_direct, 4), service=service)
    assert service == direct, "the service must change nothing"
    assert wer_service == wer_direct < WER_BOUND

    verbose = group.client.post("/v1/audio/transcriptions", data={
        "file": (io.BytesIO(spoken[0]), "s0.wav"), "model": "whisper-1",
        "response_format": "verbose_json", "timestamp_granularities[]": ["segment", "word"]},
        content_type="multipart/form-data").get_json()
    assert verbose["text"] == service[0] and verbose["language"] == "en"
    assert [w["word"] for w in verbose["words"]][:4] == ["The", "quick", "brown", "fox"]
    assert all(0 <= w["start"] <= w["end"] <= verbose["duration"] for w in verbose["words"])


def test_two_worker_groups_serve_their_own_models(lane, spoken, whisper_dir):
    api = lane()  # the default model: the tiny Paraformer, on the lane's queue
    paraformer = api.worker()
    whisper_settings = replace(api.settings, asr_engine="faster-whisper",
                               asr_model=str(whisper_dir), asr_vad_model="",
                               queue_name=api.settings.queue_name + "-whisper")
    whisper = Worker(whisper_settings, whisper_settings.queue_name)
    whisper.start()
    try:
        listed = api.client.get("/api/v1/models").get_json()
        assert {m["id"]: (m["queue"], m["workers"]) for m in listed["items"]} == {
            "tiny-paraformer": (api.settings.queue_name, 1),
            "whisper-tiny-en": (whisper_settings.queue_name, 1)}
        assert listed["default"] == "tiny-paraformer"

        by_whisper = submit(api.client, spoken[0], model="whisper-tiny-en").get_json()["task_id"]
        by_default = submit(api.client, spoken[0]).get_json()["task_id"]
        whisper_job, default_job = wait_for(api.client, by_whisper), wait_for(api.client,
                                                                               by_default)
        assert whisper_job["result"]["model"] == "whisper-tiny-en"
        assert "fox" in whisper_job["result"]["text"].lower()
        assert whisper_job["worker"].startswith(whisper_settings.queue_name)
        assert default_job["result"]["model"] == "tiny-paraformer"
        assert default_job["worker"].startswith(api.settings.queue_name + "-0@")

        unserved = submit(api.client, spoken[0], model="large-v3")
        assert unserved.status_code == 404
        assert "whisper-tiny-en" in unserved.get_json()["detail"]

        whisper.kill()  # one group gone: the other's queue keeps flowing
        after = wait_for(api.client, submit(api.client, samples.encode("wav")).get_json()
                         ["task_id"])
        assert after["status"] == "succeeded" and after["result"]["model"] == "tiny-paraformer"
    finally:
        whisper.stop()
    assert paraformer.proc is not None and paraformer.proc.poll() is None
