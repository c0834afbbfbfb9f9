"""Clients that need no polling: long-poll, subtitles and the official OpenAI client, on the
real stack (Redis, a Celery worker with the real engine, the API under gunicorn)."""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import openai
import pytest
import redis
import srt
import webvtt

from asr_service.jobs import ErrorType
from asr_service.waiters import Waiters
from tests import samples
from tests.harness import eventually
from tests.integration.conftest import LONG_S, ApiServer, report
from tests.integration.flow import submit, wait_for

FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def spoken(client, worker, tmp_path_factory) -> tuple[Path, dict]:
    """A 20 s recording and its job through the async API: what every other client must get."""
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    path.write_bytes(samples.encode("wav", seconds=20.0))
    body = wait_for(client, submit(client, path.read_bytes()).get_json()["task_id"])
    assert body["status"] == "succeeded" and body["result"]["text"], body
    return path, body


def test_long_poll_answers_as_the_job_ends(client, worker):
    task_id = submit(client, samples.encode("wav", seconds=LONG_S)).get_json()["task_id"]
    asked = time.time()
    body = client.get(f"/api/v1/asr/result/{task_id}?wait=60").get_json()
    answered = time.time()

    assert body["status"] == "succeeded", body
    finished = datetime.fromisoformat(body["finished_at"]).timestamp()
    report("long_poll", held_s=round(answered - asked, 3),
           answered_after_end_ms=round((answered - finished) * 1000, 1))
    assert finished - asked > 0.2, "the request should have been held while the job ran"
    assert answered - finished < 0.25, "a waiter must be woken by the end, not by a poll"


def test_long_poll_gives_up_after_wait_and_deleted_jobs_answer_404(lane):
    idle = lane()  # a queue no worker consumes: the job stays queued
    task_id = submit(idle.client, samples.encode("wav")).get_json()["task_id"]
    asked = time.monotonic()
    body = idle.client.get(f"/api/v1/asr/result/{task_id}?wait=1").get_json()
    assert body["status"] == "queued" and 0.9 < time.monotonic() - asked < 5

    too_long = idle.client.get(f"/api/v1/asr/result/{task_id}?wait=61")
    assert too_long.status_code == 422 and "wait" in too_long.get_json()["errors"]

    answers: list = []
    waiter = threading.Thread(target=lambda: answers.append(
        idle.client.get(f"/api/v1/asr/result/{task_id}?wait=30")))
    asked = time.monotonic()
    waiter.start()
    waiters = idle.client.application.extensions["asr"].jobs.waiters
    eventually(lambda: task_id in waiters._waiting, 10,  # it read the job and waits on its end
               message="the long-poll never started waiting")
    assert idle.client.delete(f"/api/v1/asr/task/{task_id}").status_code == 204
    waiter.join(10)
    assert answers[0].status_code == 404 and time.monotonic() - asked < 3


@pytest.mark.slow  # 1,000 sockets and measurement windows
def test_thousand_waiters_cost_no_polling(lane, settings, tmp_path):
    idle = lane()
    server = ApiServer(idle.settings, tmp_path)
    server.start()
    try:
        task_id = submit(idle.client, samples.encode("wav")).get_json()["task_id"]
        r = redis.Redis.from_url(settings.redis_url)
        quiet = _calmest(r, server)
        waiters = [_open_long_poll(server, task_id) for _ in range(1000)]
        eventually(lambda: _commands_and_cpu(r, server, seconds=0.5)[0] < 20, 30,
                   message="the waiters never settled")  # each read the job once on arrival
        waiting = _calmest(r, server)

        services = idle.client.application.extensions["asr"]
        lifecycle, job = services.jobs.lifecycle, services.store.get(task_id)
        ended = time.monotonic()
        lifecycle.fail(task_id, job.celery_id, ErrorType.INTERNAL, "ended by the test")
        answers = [_read_answer(sock) for sock in waiters]
        all_answered_s = time.monotonic() - ended
    finally:
        server.stop()

    report("long_poll_waiters", waiters=len(waiters), redis_cmds_per_s_quiet=quiet[0],
           redis_cmds_per_s_waiting=waiting[0], api_cpu_s_per_s_quiet=quiet[1],
           api_cpu_s_per_s_waiting=waiting[1], all_answered_s=round(all_answered_s, 3))
    wrong = [a[:300] for a in answers if not (a.startswith(b"HTTP/1.1 200") and b'"failed"' in a)]
    assert not wrong, (len(wrong), wrong[:3])
    # The waiting clients add no Redis commands (one subscription per process) and no CPU.
    assert waiting[0] - quiet[0] < 10, (quiet, waiting)
    assert waiting[1] < 0.05, (quiet, waiting)


def _open_long_poll(server: ApiServer, task_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.settings.api_port), timeout=30)
    sock.sendall(f"GET /api/v1/asr/result/{task_id}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Connection: close\r\n\r\n".encode())
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    with sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _calmest(r: redis.Redis, server: ApiServer, windows: int = 3) -> tuple[float, float]:
    """The calmest of a few 1.5 s windows: the workers' periodic sweep (a burst of commands
    every ~10 s) lands in one window at most, while 1,000 polling waiters would fill them all."""
    return min(_commands_and_cpu(r, server, seconds=1.5) for _ in range(windows))


def _commands_and_cpu(r: redis.Redis, server: ApiServer, seconds: float) -> tuple[float, float]:
    """Redis commands per second, and the API processes' CPU seconds per second."""
    def totals() -> tuple[int, float]:
        cpu = 0.0
        for process in server.processes():
            times = process.cpu_times()
            cpu += times.user + times.system
        return int(r.info("stats")["total_commands_processed"]), cpu

    before = totals()
    time.sleep(seconds)  # the measurement window itself
    after = totals()
    return (round((after[0] - before[0] - 1) / seconds, 1),
            round((after[1] - before[1]) / seconds, 4))


def test_subtitles_and_text_from_the_async_api(client, spoken):
    _, body = spoken
    task_id, text = body["task_id"], body["result"]["text"]

    txt = client.get(f"/api/v1/asr/result/{task_id}?format=txt")
    assert txt.status_code == 200 and txt.content_type.startswith("text/plain")
    assert txt.get_data(as_text=True) == text + "\n"

    subtitles = client.get(f"/api/v1/asr/result/{task_id}?format=srt")
    assert subtitles.status_code == 200
    cues = list(srt.parse(subtitles.get_data(as_text=True)))
    assert cues and _words(" ".join(c.content for c in cues)) == _words(text)
    assert all(c.end > c.start for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:], strict=False))
    assert cues[-1].end.total_seconds() <= body["result"]["duration_s"] + 0.01

    vtt = client.get(f"/api/v1/asr/result/{task_id}?format=vtt")
    assert vtt.content_type.startswith("text/vtt")
    captions = webvtt.from_string(vtt.get_data(as_text=True))
    assert _words(" ".join(c.text for c in captions)) == _words(text)
    assert len(captions) == len(cues)


def test_formats_of_an_unfinished_job_are_a_409(lane):
    idle = lane()
    task_id = submit(idle.client, samples.encode("wav")).get_json()["task_id"]
    answer = idle.client.get(f"/api/v1/asr/result/{task_id}?format=srt")
    assert answer.status_code == 409 and "queued" in answer.get_json()["detail"]
    idle.client.delete(f"/api/v1/asr/task/{task_id}")  # leaves no queued job to later tests


@pytest.fixture(scope="module")
def openai_client(api_server, worker) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_server.url}/v1", api_key="not-checked-here",
                         max_retries=0, timeout=60)


@pytest.mark.parametrize("response_format", FORMATS)
def test_openai_client_gets_the_same_text(openai_client, spoken, response_format):
    path, body = spoken
    text = body["result"]["text"]
    with path.open("rb") as audio:
        out = openai_client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format=response_format)

    if response_format == "json":
        assert out.text == text and out.usage.seconds == 20
    elif response_format == "text":
        assert out.strip() == text
    elif response_format == "srt":
        assert _words(" ".join(c.content for c in srt.parse(out))) == _words(text)
    elif response_format == "vtt":
        assert _words(" ".join(c.text for c in webvtt.from_string(out))) == _words(text)
    else:
        assert out.text == text and out.duration == pytest.approx(20.0, abs=0.05)
        assert [s.text for s in out.segments] == [s["text"] for s in body["result"]["segments"]]
        assert out.segments[0].start == body["result"]["segments"][0]["start"]


def test_openai_models_and_errors(openai_client, spoken, api_server, settings):
    served = [m.id for m in openai_client.models.list()]
    assert served == [Path(settings.asr_model).name]

    path, body = spoken
    with path.open("rb") as audio:  # a served model by its own name
        out = openai_client.audio.transcriptions.create(model=served[0], file=audio)
    assert out.text == body["result"]["text"]

    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.audio.transcriptions.create(model="gpt-4o-transcribe",
                                                  file=("a.wav", path.read_bytes()))
    assert missing.value.code == "model_not_found" and served[0] in missing.value.message

    with pytest.raises(openai.BadRequestError) as bad:
        openai_client.audio.transcriptions.create(model="whisper-1",
                                                  file=("a.wav", samples.text_file()))
    assert bad.value.code == "audio_invalid"
    assert bad.value.body["type"] == "invalid_request_error"


def test_openai_job_is_in_history_and_a_slow_one_answers_504(lane):
    idle = lane(sync_timeout_s=1)  # no worker: the job cannot finish in time
    answer = idle.client.post("/v1/audio/transcriptions", data={
        "file": (io.BytesIO(samples.encode("wav")), "clip.wav"), "model": "whisper-1"},
        content_type="multipart/form-data")
    error = answer.get_json()["error"]
    assert answer.status_code == 504 and error["type"] == "timeout", error
    task_id = error["task_id"]
    assert answer.headers["Location"].endswith(f"/api/v1/asr/result/{task_id}")
    history = idle.client.get("/api/v1/asr/history").get_json()
    assert history["items"][0]["task_id"] == task_id
    idle.client.delete(f"/api/v1/asr/task/{task_id}")


def test_openai_bearer_key(make_client, spoken):
    keyed = make_client(api_keys="k1")
    path, body = spoken
    answer = keyed.post("/v1/audio/transcriptions", data={
        "file": (path.open("rb"), "clip.wav"), "model": "whisper-1"},
        content_type="multipart/form-data")
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "invalid_api_key"
    answer = keyed.post("/v1/audio/transcriptions", data={
        "file": (path.open("rb"), "clip.wav"), "model": "whisper-1",
        "response_format": "text"}, content_type="multipart/form-data",
        headers={"Authorization": "Bearer k1"})
    assert answer.status_code == 200 and answer.get_data(as_text=True).strip() == \
        body["result"]["text"]


def test_the_subscriber_ends_when_nobody_waits_and_comes_back_for_the_next_waiter(redis_server):
    """An API process that serves no long-poll holds no subscription; one that did lets it go
    after Waiters.IDLE_S and subscribes again for the next waiter, which still hears the end."""
    client = redis.Redis.from_url(redis_server.url)
    channel = f"test-finished-{time.monotonic_ns()}"
    waiters = Waiters(lambda: redis.Redis.from_url(redis_server.url), channel)
    waiters.IDLE_S = 0.5
    ended: set[str] = set()

    def wait_and_end(job_id: str) -> None:
        answers: list[bool] = []
        waiting = threading.Thread(target=lambda: answers.append(
            waiters.wait(job_id, 10, lambda: job_id in ended)))
        waiting.start()
        eventually(lambda: client.pubsub_numsub(channel)[0][1] == 1, 5,
                   message="the waiter's process never subscribed")
        ended.add(job_id)
        client.publish(channel, f"{job_id} succeeded")
        waiting.join(10)
        assert answers == [True]

    assert not waiters.listening
    wait_and_end("first")
    assert waiters.listening
    eventually(lambda: not waiters.listening, 10, message="the idle subscriber never ended")
    assert client.pubsub_numsub(channel)[0][1] == 0
    wait_and_end("second")
