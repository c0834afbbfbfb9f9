"""Live transcription through the real stack: the official `openai` client's realtime
connection to gunicorn, sessions run by a real Celery worker with the real engine, Redis
Streams between them; bad input answered with errors that harm no other session."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import soundfile as sf
from openai import OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from asr_service import redis_conn
from asr_service.api.live_session import FIRST_CLAIM_S, TAKEOVER_AFTER_S, Live, Relay
from asr_service.celery_config import create_celery
from asr_service.keys import Keys
from asr_service.live.relay import LiveStore
from asr_service.settings import Settings
from tests.conversations import VOICES, speak
from tests.harness import eventually
from tests.integration.conftest import ApiServer, Worker, report

RATE = 16_000
CHUNK_S = 0.1
# openai's realtime client calls websockets' connect() outside a `with` (websockets 17.1
# deprecated that, and pytest makes warnings errors): the client's doing, not ours.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"),
    pytest.mark.slow,  # the module starts its own worker (with the streaming model) and API
]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two utterances with pauses: 16 kHz int16."""
    def pause(s: float) -> np.ndarray:
        return np.zeros(int(s * RATE), dtype=np.float32)

    audio = np.concatenate([pause(0.4), speak("the meeting moved to thursday", VOICES[0]),
                            pause(1.0), speak("please send the notes after lunch", VOICES[2]),
                            pause(1.2)])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


@pytest.fixture(scope="module")
def live_api(settings: Settings, model_assets: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """gunicorn and a worker of two processes on a queue of their own (a live session holds a
    worker process while it lasts), two sessions per key, 2-pass: partials from the tiny
    streaming Paraformer, finals from the offline one. (The /live page's test runs the other
    way: partials re-decoded by the offline model.)"""
    live = replace(settings, queue_name=f"live-{uuid.uuid4().hex[:6]}", worker_count=2,
                   live_max_sessions_per_key=2, asr_online_model=str(model_assets["streaming"]))
    worker = Worker(live, live.queue_name)
    worker.start()
    server = ApiServer(live, tmp_path_factory.mktemp("live-api"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        worker.stop()


def session_update(rate: int = RATE, **input_audio: object) -> dict:
    return {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": rate},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
        **input_audio}}}


def offline_text(url: str, pcm: np.ndarray) -> str:
    """What the file path gives for the same samples."""
    wav = io.BytesIO()
    sf.write(wav, pcm, RATE, format="WAV", subtype="PCM_16")  # int16 in: the very samples
    answer = requests.post(f"{url}/api/v1/asr/submit?wait=60", timeout=90,
                           files={"audio": ("seg.wav", wav.getvalue())})
    assert answer.status_code in (200, 202), answer.text
    body = answer.json()
    task = body.get("task_id")
    for _ in range(300):
        if body.get("status") in ("succeeded", "failed"):
            break
        time.sleep(0.1)
        body = requests.get(f"{url}/api/v1/asr/result/{task}", timeout=10).json()
    assert body["status"] == "succeeded", body
    return body["result"]["text"]


def test_the_openai_realtime_client_gets_partials_and_finals_equal_to_the_file_path(
        live_api: ApiServer, speech: np.ndarray) -> None:
    client = OpenAI(base_url=f"{live_api.url}/v1", api_key="unused-without-api-keys")
    events: list[tuple[float, object]] = []

    def running_jobs() -> int:
        return requests.get(f"{live_api.url}/api/v1/dashboard", timeout=10).json()["active_tasks"]

    eventually(lambda: running_jobs() == 0, 60, message="a job of an earlier test still runs")
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = conn.recv()
        assert created.type == "session.created", created
        conn.session.update(session=session_update())
        assert conn.recv().type == "session.updated"
        step = int(CHUNK_S * RATE)
        began = time.monotonic()
        for at in range(0, len(speech), step):
            conn.input_audio_buffer.append(
                audio=base64.b64encode(speech[at:at + step].tobytes()).decode())
            time.sleep(CHUNK_S / 4)  # 4x real time, within LIVE_BUFFER_S
        sent_s = time.monotonic() - began
        deadline = time.monotonic() + 60
        while sum(e.type.endswith("transcription.completed") for _, e in events) < 2:
            assert time.monotonic() < deadline, [e.type for _, e in events]
            event = conn.recv()
            assert event.type != "error", event
            events.append((time.monotonic() - began, event))
        assert running_jobs() == 0, "a live session is not a running job"

    kinds = [e.type for _, e in events]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed",
                 "conversation.item.input_audio_transcription.completed"):
        assert kinds.count(kind) == 2, (kind, kinds)
    finals = [e for _, e in events if e.type.endswith("transcription.completed")]
    assert [f.item_id for f in finals] == ["item_0000", "item_0001"]
    deltas = [e for _, e in events if e.type.endswith("transcription.delta")]
    # A final is the engine's text for that utterance's samples alone: as the file path gives.
    for final in finals:
        extra = final.model_extra or {}
        segment = speech[extra["start_ms"] * RATE // 1000:extra["end_ms"] * RATE // 1000]
        assert final.transcript == offline_text(live_api.url, segment), final
    metrics = requests.get(f"{live_api.url}/metrics", timeout=10).text
    counts = {kind: float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith(
        f"asr_live_{kind}_latency_seconds_count"))) for kind in ("partial", "final")}
    assert counts["partial"] >= len(deltas) and counts["final"] >= 2, counts
    report("live_openai_client", events=len(events), deltas=len(deltas), sent_s=round(sent_s, 2),
           finals=[f.transcript for f in finals], latency_counts=counts)


def raw(url: str, path: str = "/v1/realtime?intent=transcription", waits: tuple = (429, 503),
        **kwargs: object):
    """A plain WebSocket client; waits out a refusal (`waits`) while the server still counts a
    session a previous test closed (the API frees it once its socket ended, a worker's
    heartbeat says so within ~2 s)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return ws_connect(url.replace("http", "ws") + path, open_timeout=10, **kwargs)
        except InvalidStatus as exc:
            if exc.response.status_code not in waits or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def recv_json(ws, timeout: float = 10) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def test_bad_input_gets_error_events_and_the_session_goes_on(
        live_api: ApiServer, speech: np.ndarray) -> None:
    with raw(live_api.url, max_size=None) as ws:
        assert recv_json(ws)["type"] == "session.created"
        chunk = base64.b64encode(speech[:1600].tobytes()).decode()
        answers = {}
        for name, message in [
                ("audio before session.update",
                 json.dumps({"type": "input_audio_buffer.append", "audio": chunk})),
                ("binary junk", b"\x00\xff" * 100),
                ("json garbage", "{not json"),
                ("unknown type", json.dumps({"type": "response.create"})),
                ("wrong rate", json.dumps({"type": "session.update",
                                           "session": session_update(rate=44_100)}))]:
            ws.send(message)
            answers[name] = recv_json(ws)
        assert all(a["type"] == "error" for a in answers.values()), answers
        assert answers["audio before session.update"]["error"]["code"] == "session_not_configured"
        ws.send(json.dumps({"type": "session.update", "session": session_update()}))
        assert recv_json(ws)["type"] == "session.updated"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%not base64"}))
        assert recv_json(ws)["error"]["code"] == "invalid_audio"
        step = int(CHUNK_S * RATE)
        for at in range(0, len(speech), step):
            chunk = base64.b64encode(speech[at:at + step].tobytes()).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        finals = []
        deadline = time.monotonic() + 60
        while len(finals) < 2:
            assert time.monotonic() < deadline
            event = recv_json(ws, timeout=60)
            assert event["type"] != "error", event
            if event["type"].endswith("transcription.completed"):
                finals.append(event)
        assert [f["item_id"] for f in finals] == ["item_0000", "item_0001"]


def test_a_frame_over_the_limit_closes_only_its_own_session(live_api: ApiServer) -> None:
    with raw(live_api.url, max_size=None) as other, raw(live_api.url, max_size=None) as ws:
        assert recv_json(other)["type"] == recv_json(ws)["type"] == "session.created"
        ws.send("x" * ((1 << 20) + 1))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(5):
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        other.send(json.dumps({"type": "session.update", "session": session_update()}))
        assert recv_json(other)["type"] == "session.updated"


def test_refusals_happen_at_the_handshake(live_api: ApiServer) -> None:
    plain = requests.get(f"{live_api.url}/v1/realtime", timeout=10)
    assert plain.status_code == 426, plain.text  # the route only matches an upgrade
    assert plain.headers["Upgrade"] == "websocket"
    with pytest.raises(InvalidStatus) as refused:  # an upgrade where no WebSocket lives
        raw(live_api.url, "/api/v1/health", waits=())
    assert refused.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as refused:
        raw(live_api.url, "/v1/realtime?intent=conversation")
    assert refused.value.response.status_code == 400
    limit = live_api.settings.live_max_sessions_per_key
    opened = [raw(live_api.url) for _ in range(limit)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            raw(live_api.url, waits=())
        assert refused.value.response.status_code == 429
    finally:
        for ws in opened:
            ws.close()
    # Closed sessions free their places at once.
    with raw(live_api.url) as ws:
        assert recv_json(ws)["type"] == "session.created"


def stream_striking(ws, speech: np.ndarray, strike) -> tuple[list, float | None]:
    """Stream `speech` in real time, 100 ms a message, then read until both finals are in.
    `strike(events)` runs after each message until it returns the moment it struck."""
    ws.send(json.dumps({"type": "session.update", "session": session_update()}))
    assert recv_json(ws)["type"] == "session.updated"
    step, events, struck = int(CHUNK_S * RATE), [], None
    began = time.monotonic()
    for at in range(0, len(speech), step):
        chunk = base64.b64encode(speech[at:at + step].tobytes()).decode()
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        while True:  # what arrived meanwhile
            try:
                events.append((time.monotonic(), json.loads(ws.recv(timeout=0))))
            except TimeoutError:
                break
        if struck is None:
            struck = strike([e for _, e in events])
        time.sleep(max(0.0, began + (at + step) / RATE - time.monotonic()))  # real time
    deadline = time.monotonic() + 60
    while sum(e["type"].endswith("completed") for _, e in events) < 2:
        assert time.monotonic() < deadline, [e["type"] for _, e in events]
        events.append((time.monotonic(), recv_json(ws, timeout=60)))
    return events, struck


def live_events(url: str, event: str) -> float:
    """asr_live_session_events_total{event} in /metrics (0 before the first)."""
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    prefix = f'asr_live_session_events_total{{event="{event}"}}'
    return next((float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith(prefix)), 0.0)


def assert_resumed_without_losing_a_final(url: str, events: list, struck: float | None,
                                          speech: np.ndarray, event: str,
                                          counted_before: float) -> float:
    """Both finals once each, the second equal to the file path's text, no error, and the
    `event` counted; returns the seconds from the strike to the next event."""
    assert struck is not None, "no final before the end of the audio"
    assert all(e["type"] != "error" for _, e in events), events
    finals = [e for _, e in events if e["type"].endswith("completed")]
    assert [f["item_id"] for f in finals] == ["item_0000", "item_0001"]  # none lost or repeated
    after = [t for t, e in events if t > struck]
    resumed_s = after[0] - struck if after else None
    assert resumed_s is not None and resumed_s < 10, resumed_s
    segment = speech[finals[1]["start_ms"] * RATE // 1000:finals[1]["end_ms"] * RATE // 1000]
    assert finals[1]["transcript"] == offline_text(url, segment)
    assert live_events(url, event) >= counted_before + 1  # this session's, not an earlier one
    return resumed_s


def test_a_session_whose_worker_process_is_killed_goes_on_without_losing_a_final(
        live_api: ApiServer, speech: np.ndarray) -> None:
    client = redis_conn.client(live_api.settings)

    def kill(events: list) -> float | None:  # the process that runs the session, mid-session
        if not any(e["type"].endswith("completed") for e in events):
            return None
        os.kill(int(client.hget(f"asr:live:{session_id}", "pid")), signal.SIGKILL)
        return time.monotonic()

    before = live_events(live_api.url, "taken_over")
    with raw(live_api.url, max_size=None) as ws:
        session_id = recv_json(ws)["session"]["id"]
        events, killed = stream_striking(ws, speech, kill)
    resumed_s = assert_resumed_without_losing_a_final(live_api.url, events, killed, speech,
                                                      "taken_over", before)
    report("live_takeover", first_event_after_kill_s=round(resumed_s, 2))


def test_a_session_whose_task_no_worker_claims_is_sent_again_before_it_is_given_up(
        settings: Settings) -> None:
    """A worker that died with the task's message before it claimed the session (the chaos
    soak found one closed with no_worker after 20 s while the other host's worker was free):
    the API sends the task again every TAKEOVER_AFTER_S, as it does for a claimed session."""
    queue, client = f"lost-{uuid.uuid4().hex[:6]}", redis_conn.client(settings)
    store = LiveStore(client, Keys())
    session = Live(id=f"sess_{uuid.uuid4().hex[:20]}", owner="lost", queue=queue, model="m",
                   store=store)
    assert store.open(session.id, "lost", 0, {"model": "m", "queue": queue})
    resent = store.figures().get("resent", 0)
    relay = Relay(None, session, create_celery(settings), 60, 30, 30)
    forwarder = threading.Thread(target=relay._forward, daemon=True)
    began = time.monotonic()
    forwarder.start()
    try:  # nobody consumes `queue`: the message the relay sends stays in its list
        eventually(lambda: client.llen(queue) >= 1, TAKEOVER_AFTER_S + 5)
        sent_again_s = time.monotonic() - began
    finally:
        relay.closed.set()
        forwarder.join(5)
        store.close(session.id, "lost")
        client.delete(queue)
    assert TAKEOVER_AFTER_S <= sent_again_s < FIRST_CLAIM_S, sent_again_s
    assert store.figures().get("resent", 0) == resent + 1


def test_a_session_whose_worker_shuts_down_moves_to_another_worker_at_once(
        live_api: ApiServer, speech: np.ndarray, tmp_path: Path) -> None:
    """A deploy or a scale-in (SIGTERM to the worker) must neither hold the worker for as long
    as the client talks nor cost the session a final."""
    group = replace(live_api.settings, queue_name=f"deploy-{uuid.uuid4().hex[:6]}",
                    worker_count=1)
    workers = [Worker(group, f"deploy{i}") for i in range(2)]
    server = ApiServer(group, tmp_path)
    client, stopped = redis_conn.client(group), []
    try:
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        server.start()

        def deploy(events: list) -> float | None:  # SIGTERM the worker that runs the session
            if not any(e["type"].endswith("completed") for e in events):
                return None
            child = psutil.Process(int(client.hget(f"asr:live:{session_id}", "pid")))
            stopped.append(next(w for w in workers if w.proc and w.proc.pid == child.ppid()))
            os.kill(child.ppid(), signal.SIGTERM)
            return time.monotonic()

        before = live_events(server.url, "handed_over")
        with raw(server.url, max_size=None) as ws:
            session_id = recv_json(ws)["session"]["id"]
            events, termed = stream_striking(ws, speech, deploy)
            assert termed is not None and stopped[0].proc is not None
            stopped[0].proc.wait(timeout=20)  # it exits while the session is still open
            exited_s = time.monotonic() - termed
        resumed_s = assert_resumed_without_losing_a_final(server.url, events, termed, speech,
                                                          "handed_over", before)
    finally:
        server.stop()
        for worker in workers:
            worker.stop()
    report("live_handover", first_event_after_sigterm_s=round(resumed_s, 2),
           worker_exited_s=round(exited_s, 2))


def funasr_stream(ws, pcm: np.ndarray, mode: str = "2pass", name: str = "demo",
                  realtime: float = 4.0) -> list[dict]:
    """What FunASR's funasr_wss_client.py does for one recording: the JSON config, 600 ms of
    binary PCM per message (chunk_size [5, 10, 5], chunk_interval 10), `is_speaking: false`,
    then every message until the one with is_end."""
    ws.send(json.dumps({"mode": mode, "chunk_size": [5, 10, 5], "chunk_interval": 10,
                        "encoder_chunk_look_back": 4, "decoder_chunk_look_back": 0,
                        "audio_fs": RATE, "wav_name": name, "wav_format": "pcm",
                        "is_speaking": True, "hotwords": "", "itn": True}))
    stride = int(60 * 10 / 10 / 1000 * RATE)  # samples per message, as the client computes
    messages = []
    for at in range(0, len(pcm), stride):
        ws.send(pcm[at:at + stride].tobytes())
        time.sleep(stride / RATE / realtime)
        while True:
            try:
                messages.append(json.loads(ws.recv(timeout=0)))
            except TimeoutError:
                break
    ws.send(json.dumps({"is_speaking": False, "is_end": True}))
    while not (messages and messages[-1].get("is_end")):
        messages.append(json.loads(ws.recv(timeout=60)))
    return messages


def test_a_funasr_client_gets_2pass_partials_and_finals_on_the_root_path(
        live_api: ApiServer, speech: np.ndarray) -> None:
    # FunASR's clients dial ws://host:port with no path.
    with raw(live_api.url, "/", max_size=None) as ws:
        first = funasr_stream(ws, speech, name="meeting")
        second = funasr_stream(ws, speech[: len(speech) // 2], mode="offline", name="half")
    online = [m for m in first if m["mode"] == "2pass-online"]
    finals = [m for m in first if m["mode"] == "2pass-offline" and m["text"]]
    assert online and all(not m["is_final"] and m["wav_name"] == "meeting" for m in online)
    assert len(finals) == 2, first
    for final in finals:
        start_ms, end_ms = json.loads(final["timestamp"])[0]
        segment = speech[start_ms * RATE // 1000:end_ms * RATE // 1000]
        assert final["text"] == offline_text(live_api.url, segment)
    assert first[-1]["is_final"] and first[-1]["is_end"]
    # The same socket, another recording, offline mode: finals only, no partials.
    assert {m["mode"] for m in second} == {"offline"}
    assert [m["wav_name"] for m in second] == ["half"] * len(second)
    assert second[-1]["is_end"] and any(m["text"] for m in second)


BAD_FUNASR_INPUT = [
    (b"\x00\x01" * 800, "config_first"),  # audio before the config
    ("{not json", "invalid_json"),
    (json.dumps({"mode": "4pass"}), "invalid_config"),
    (json.dumps({"mode": "2pass", "wav_format": "mp3"}), "invalid_config"),
]


def test_bad_funasr_input_closes_only_its_own_socket_with_the_reason(
        live_api: ApiServer, speech: np.ndarray) -> None:
    with raw(live_api.url, "/funasr", max_size=None) as other:
        for bad, reason in BAD_FUNASR_INPUT:
            with raw(live_api.url, "/funasr", max_size=None) as ws:
                ws.send(bad)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None, bad
            assert closed.value.rcvd.reason.startswith(reason), (bad, closed.value.rcvd)
        # The session that sent nothing wrong, open all along, still transcribes.
        answers = funasr_stream(other, speech[: len(speech) // 2], mode="offline")
    assert answers[-1]["is_end"] and any(m["text"] for m in answers)


@pytest.fixture(scope="module")
def strict_api(live_api: ApiServer, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ApiServer]:
    """A second API on the same queue and workers, with a 2 s idle limit and a 3 s buffer."""
    server = ApiServer(replace(live_api.settings, live_idle_s=2, live_buffer_s=3),
                       tmp_path_factory.mktemp("strict-api"))
    server.start()
    yield server
    server.stop()


def test_a_client_far_ahead_of_real_time_or_silent_is_told_and_closed_alone(
        strict_api: ApiServer, speech: np.ndarray) -> None:
    with raw(strict_api.url, max_size=None) as bystander, raw(strict_api.url, max_size=None) as ws:
        for socket in (bystander, ws):
            assert recv_json(socket)["type"] == "session.created"
            socket.send(json.dumps({"type": "session.update", "session": session_update()}))
            assert recv_json(socket)["type"] == "session.updated"
        chunk = base64.b64encode(speech[:RATE].tobytes()).decode()
        for _ in range(5):  # 5 s of audio at once: 2 s past the 3 s buffer
            bystander.send(json.dumps({"type": "input_audio_buffer.clear"}))  # keeps it awake
            try:
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            except ConnectionClosed:  # the server was quick: closed after the 4th second
                break
        events = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                events.append(recv_json(ws))
        errors = [e["error"]["code"] for e in events if e["type"] == "error"]
        assert errors == ["input_audio_buffer_overflow"], (events, closed.value)
        assert recv_json(bystander)["type"] == "input_audio_buffer.cleared"  # unharmed
        # Then the bystander says nothing: closed after its 2 s idle limit, with the reason.
        seen = []
        with pytest.raises(ConnectionClosed):
            while True:
                seen.append(recv_json(bystander, timeout=10))
        assert seen[-1]["type"] == "error" and seen[-1]["error"]["code"] == "idle_timeout"


def test_a_model_without_a_worker_with_room_is_refused_at_the_handshake(
        live_api: ApiServer, tmp_path: Path) -> None:
    server = ApiServer(replace(live_api.settings, queue_name=f"empty-{uuid.uuid4().hex[:6]}"),
                       tmp_path)
    server.start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            raw(server.url, waits=())
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "5"
    finally:
        server.stop()
