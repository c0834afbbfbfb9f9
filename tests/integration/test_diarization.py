"""Who spoke when, through the whole service: a real worker, real Redis, the real speaker
encoder weights (`make models`), on espeak-ng conversations whose turns are known (RTTM)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import srt
import webvtt
from flask.testing import FlaskClient

from tests import samples
from tests.conversations import Turn, read_rttm, write
from tests.integration.conftest import report
from tests.integration.flow import submit, wait_for


@pytest.fixture(scope="module")
def talks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short conversations (4 turns): two voices, three voices, one voice."""
    folder = tmp_path_factory.mktemp("talks")
    return {"two": write(folder, "two", 1, 2, turns=4),
            "three": write(folder, "three", 103, 3, turns=5),
            "one": write(folder, "one", 201, 1, turns=3)}


def diarized(client: FlaskClient, wav: Path, **fields: str) -> dict:
    body = wait_for(client, submit(client, wav.read_bytes(), wav.name, diarize="true",
                                   **fields).get_json()["task_id"])
    assert body["status"] == "succeeded", body
    assert body["diarization"] == {k: int(v) for k, v in fields.items()}
    return body["result"]


def speaker_of_turns(result: dict, turns: list[Turn]) -> list[str | None]:
    """The speaker the service gave most of each reference turn (None: no segment there)."""
    found = []
    for turn in turns:
        overlap: dict[str, float] = {}
        for s in result["segments"]:
            shared = min(turn.end, s["end"]) - max(turn.start, s["start"])
            if shared > 0:
                overlap[s["speaker"]] = overlap.get(s["speaker"], 0) + shared
        found.append(max(overlap, key=overlap.__getitem__) if overlap else None)
    return found


@pytest.mark.parametrize("name, voices", [("two", 2), ("three", 3), ("one", 1)])
def test_each_voice_is_one_speaker(client, worker, talks, name, voices):
    result = diarized(client, talks[name])
    truth = [t.speaker for t in read_rttm(talks[name].with_suffix(".rttm"))]
    found = speaker_of_turns(result, read_rttm(talks[name].with_suffix(".rttm")))

    report("diarization", clip=name, speakers=result["speakers"], turns=found,
           diarization_s=result["diarization_s"])
    assert result["speakers"] == [f"Speaker {i + 1}" for i in range(voices)]
    assert len(set(zip(truth, found, strict=True))) == voices, (truth, found)
    assert all(s["speaker"] in result["speakers"] for s in result["segments"])


def test_a_known_count_is_kept_even_against_the_voices(client, worker, talks):
    assert diarized(client, talks["two"], num_speakers="1")["speakers"] == ["Speaker 1"]
    assert len(diarized(client, talks["one"], min_speakers="2")["speakers"]) == 2


def test_silence_has_no_speakers(client, worker, tmp_path):
    silence = tmp_path / "silence.wav"
    silence.write_bytes(samples.wav_bytes(samples.signal(3.0) * 0.0))

    result = diarized(client, silence)

    assert result["speakers"] == [] and result["segments"] == []


def test_subtitles_and_text_follow_the_speakers(client, worker, talks):
    task = submit(client, talks["two"].read_bytes(), "two.wav", diarize="true").get_json()
    wait_for(client, task["task_id"])
    url = f"/api/v1/asr/result/{task['task_id']}"

    subtitles = list(srt.parse(client.get(url + "?format=srt").get_data(as_text=True)))
    captions = webvtt.from_string(client.get(url + "?format=vtt").get_data(as_text=True))
    text = client.get(url + "?format=txt").get_data(as_text=True)

    assert {s.content.split("] ")[0] for s in subtitles} == {"[Speaker 1", "[Speaker 2"}
    assert {c.voice for c in captions} == {"Speaker 1", "Speaker 2"}
    assert [line.split(":")[0] for line in text.splitlines()][:2] == ["Speaker 1", "Speaker 2"]


def test_openai_diarized_json(client, worker, talks):
    body = client.post("/v1/audio/transcriptions", content_type="multipart/form-data", data={
        "file": (io.BytesIO(talks["two"].read_bytes()), "two.wav"), "model": "whisper-1",
        "response_format": "diarized_json"}).get_json()

    assert body["task"] == "transcribe" and body["usage"]["type"] == "duration"
    assert {s["speaker"] for s in body["segments"]} == {"A", "B"}
    assert body["segments"][0]["speaker"] == "A"


def test_stats_and_metrics_count_diarized_audio(client, worker, talks):
    before = client.get("/api/v1/stats").get_json()["diarized_audio_seconds_total"]
    plain = wait_for(client, submit(client, talks["one"].read_bytes()).get_json()["task_id"])
    result = diarized(client, talks["one"])

    after = client.get("/api/v1/stats").get_json()["diarized_audio_seconds_total"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "speakers" not in plain["result"]
    assert after == pytest.approx(before + result["duration_s"], abs=0.01)
    assert f"asr_diarized_audio_seconds {after}" in metrics or \
        "asr_diarized_audio_seconds " in metrics


@pytest.mark.slow
def test_faster_whisper_words_get_speakers(lane, talks, model_assets):
    group = lane(asr_engine="faster-whisper", asr_model=str(model_assets["whisper"]),
                 asr_vad_model="")
    group.worker()
    result = diarized(group.client, talks["two"])
    found = speaker_of_turns(result, read_rttm(talks["two"].with_suffix(".rttm")))

    assert result["speakers"] == ["Speaker 1", "Speaker 2"]
    assert len(set(found)) == 2
    assert result["words"] and all(w["speaker"] in result["speakers"] for w in result["words"])
