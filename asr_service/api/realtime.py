"""Live transcription over WebSocket in OpenAI's Realtime protocol (`intent=transcription`).

The API only relays (live/relay.py): client audio into the session's input stream, the
worker's events back as OpenAI server events. Admission happens before the upgrade, so a
refused client gets an HTTP problem at the handshake: no worker for the model (503), too many
sessions for its key (429). After it, bad input gets an `error` event and the session goes on;
a frame over MAX_FRAME_BYTES, a client far ahead of real time, one that stops reading or
sends nothing for LIVE_IDLE_S is sent an error and closed. No other session is touched.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from flask import Blueprint, current_app, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from asr_service import redis_conn
from asr_service.api import access, services
from asr_service.api.problems import problem
from asr_service.dispatch import send_live
from asr_service.errors import ModelNotFound
from asr_service.live.relay import LiveStore

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20
"""Largest WebSocket message (base64 of ~0.5 MiB of PCM, ~11 s at 24 kHz); a bigger one closes
the socket (1009)."""
RATES = (16_000, 24_000)
TAKEOVER_AFTER_S = 4.0
"""A session no worker process holds for this long (its host died with it) is sent again."""
FIRST_CLAIM_S = 20.0
"""A session no worker claims within this is ended with an error (every worker is busy)."""
SEND_TIMEOUT_S = 10.0
"""A client that reads nothing for this long (its socket buffer full) is closed."""

bp = Blueprint("live", __name__)
sock = Sock()


@dataclass
class Live:
    """One open session, as the API side sees it."""

    id: str
    owner: str
    queue: str
    model: str
    store: LiveStore
    configured: bool = False
    rate: int = 24_000
    config: dict[str, Any] = field(default_factory=dict)
    sent_samples: int = 0
    first_audio: float | None = None
    resampler: Any = None
    started: set[str] = field(default_factory=set)
    spoken: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    previous_item: str | None = None


def _live_store() -> LiveStore:
    """One Redis pool for live sessions per app: their blocking reads never take a connection
    the REST endpoints wait for."""
    ext = current_app.extensions
    if "asr_live" not in ext:
        s = services().settings
        client = redis_conn.client(s, socket_timeout=5, socket_connect_timeout=2,
                                   socket_keepalive=True)
        ext["asr_live"] = LiveStore(client, services().store.keys)
    return ext["asr_live"]


@bp.before_request
def admit() -> Any:
    """Refuse before the upgrade (a plain request never gets here: 400 from the router): a wrong
    intent, an unknown model, no worker
    with room, or too many sessions for this key. An admitted session is registered in g."""
    intent = request.args.get("intent", "transcription")
    if intent != "transcription":
        return problem(400, "Bad Request", "only transcription sessions are served: connect "
                       "with ?intent=transcription", slug="invalid_request_error")
    jobs, settings = services().jobs, services().settings
    requested = request.args.get("model")
    try:
        served = requested if requested and requested in jobs.models() else None
        queue = jobs.queue_for(served)
    except ModelNotFound as exc:
        return problem(404, "Not Found", str(exc), slug="model_not_found")
    owner, store = access.owner_id() or "anonymous", _live_store()
    session = Live(id=f"sess_{uuid.uuid4().hex[:20]}", owner=owner, queue=queue,
                   model=served or settings.model_id, store=store)
    if not store.open(session.id, owner, settings.live_max_sessions_per_key,
                      {"model": session.model, "queue": queue}):
        store.count("refused_limit")
        limit = settings.live_max_sessions_per_key
        return problem(429, "Too Many Requests", f"this key has {limit} live sessions open "
                       "(LIVE_MAX_SESSIONS_PER_KEY)", slug="rate_limit_exceeded",
                       headers={"Retry-After": "5"})
    ready = [w for w in services().cluster.workers() if w.queue == queue and w.engines_ready]
    if not ready or sum(max(0, w.concurrency - w.active) for w in ready) <= 0:
        store.close(session.id, owner)
        store.count("refused_no_worker")
        return problem(503, "Service Unavailable", "no worker has room for a live session of "
                       "this model now; try again later", slug="no-live-capacity",
                       headers={"Retry-After": "5"})
    g.live = session
    return None


@bp.teardown_request
def _release(_: BaseException | None) -> None:
    session: Live | None = g.pop("live", None)
    if session is not None:
        try:
            session.store.close(session.id, session.owner)
        except Exception as exc:  # Redis away: the session's keys expire on their own
            log.warning("live session not closed in Redis: %s", exc)


@sock.route("/v1/realtime", bp=bp)
def realtime(ws: Any) -> None:
    """An OpenAI Realtime transcription session (see the module docstring)."""
    session: Live = g.live
    settings = services().settings
    session.store.count("opened")
    send_live(services().celery, session.id, session.queue, settings.live_max_session_s)
    Relay(ws, session, services().celery, settings.live_max_session_s, settings.live_idle_s,
          settings.live_buffer_s).run()


class Relay:
    """Client messages into the session, the worker's events out, until either side ends."""

    def __init__(self, ws: Any, session: Live, celery: Any, max_s: int, idle_s: int,
                 buffer_s: int) -> None:
        self.ws, self.session, self.celery = ws, session, celery
        self.max_s, self.idle_s, self.buffer_s = max_s, idle_s, buffer_s
        self.closed = threading.Event()
        self._send_lock = threading.Lock()

    def run(self) -> None:
        s = self.session
        self.send({"type": "session.created", "session": self._session_object()})
        forwarder = threading.Thread(target=self._forward, name=f"live-{s.id}", daemon=True)
        forwarder.start()
        began = heard = time.monotonic()
        try:
            while not self.closed.is_set():
                now = time.monotonic()
                if now - began > self.max_s:
                    self.fail("session_expired", f"the session reached LIVE_MAX_SESSION_S "
                              f"({self.max_s} s)", close=True)
                    break
                if now - heard > self.idle_s:
                    self.fail("idle_timeout", f"nothing was sent for {self.idle_s} s "
                              "(LIVE_IDLE_S)", close=True)
                    break
                message = self.ws.receive(timeout=1)
                if message is None:
                    continue
                heard = time.monotonic()
                s.store.touch(s.id, s.owner)
                self.handle(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()  # the forwarder ends within its 1 s read; the session is closed
            # in Redis by the request's teardown, without waiting for it

    # --- client -> worker ---

    def handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return self.fail("invalid_request_error", "binary frames are not part of this "
                             "protocol: send JSON events, audio base64 in "
                             "input_audio_buffer.append")
        try:
            event = json.loads(message)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            return self.fail("invalid_json", "each message must be a JSON object with a 'type'")
        handler = {"session.update": self.update, "transcription_session.update": self.update,
                   "input_audio_buffer.append": self.append,
                   "input_audio_buffer.commit": self.commit,
                   "input_audio_buffer.clear": self.clear}.get(kind)
        if handler is None:
            return self.fail("invalid_request_error", f"unknown or unsupported event type "
                             f"'{kind}' in a transcription session", event.get("event_id"))
        handler(event)

    def update(self, event: dict) -> None:
        s = self.session
        try:
            config, rate = parse_session(event.get("session") or {}, s.config, s.rate)
        except ValueError as exc:
            return self.fail("invalid_request_error", str(exc), event.get("event_id"))
        if s.resampler is not None and rate != s.rate and s.sent_samples:
            return self.fail("invalid_request_error", "the input rate cannot change once audio "
                             "was sent", event.get("event_id"))
        s.config, s.rate, s.configured = config, rate, True
        s.resampler = None if rate == 16_000 else soxr.ResampleStream(rate, 16_000, 1,
                                                                        dtype="float32")
        s.store.configure(s.id, config)
        s.store.send_control(s.id, {"type": "config", "config": config})
        self.send({"type": "session.updated", "session": self._session_object()})

    def append(self, event: dict) -> None:
        s = self.session
        if not s.configured:
            return self.fail("session_not_configured", "send session.update (type "
                             "'transcription') before audio", event.get("event_id"))
        try:
            pcm = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return self.fail("invalid_audio", "'audio' must be base64 of 16-bit PCM",
                             event.get("event_id"))
        if len(pcm) % 2:
            return self.fail("invalid_audio", "16-bit PCM has an even number of bytes",
                             event.get("event_id"))
        now = time.monotonic()
        s.first_audio = s.first_audio or now
        if s.resampler is not None:  # to 16 kHz PCM16; 16 kHz input goes through untouched
            samples = s.resampler.resample_chunk(
                np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0)
            pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
        count = len(pcm) // 2
        ahead = (s.sent_samples + count) / 16_000 - (now - s.first_audio)
        if ahead > self.buffer_s:
            return self.fail("input_audio_buffer_overflow", f"audio arrives more than "
                             f"{self.buffer_s} s ahead of real time (LIVE_BUFFER_S); stream at "
                             "real time, or send files to /v1/audio/transcriptions", close=True)
        s.store.send_audio(s.id, pcm, s.sent_samples)
        s.sent_samples += count

    def commit(self, event: dict) -> None:
        self.session.store.send_control(self.session.id, {"type": "commit"})

    def clear(self, event: dict) -> None:
        self.session.store.send_control(self.session.id, {"type": "clear"})

    # --- worker -> client ---

    def _forward(self) -> None:
        s, after = self.session, "0"
        opened = unheld_since = time.monotonic()
        claimed = False
        while not self.closed.is_set():
            try:
                events = s.store.events(s.id, after, block_ms=1000)
                for entry_id, event in events:
                    after = entry_id
                    for out in self.translate(event):
                        self.send(out)
                _, held = s.store.progress(s.id)
            except ConnectionClosed:
                break
            except Exception as exc:  # Redis away: say so and keep trying
                log.warning("live relay: %s", exc, extra={"session": s.id})
                time.sleep(0.5)
                continue
            now = time.monotonic()
            claimed = claimed or held
            if held:
                unheld_since = now
            elif not claimed and now - opened > FIRST_CLAIM_S:
                self.fail("no_worker", "no worker took the session up; try again later",
                          close=True)
            elif claimed and now - unheld_since > TAKEOVER_AFTER_S:
                # Its worker died with it (a whole host): send it again; the lease fences.
                send_live(self.celery, s.id, s.queue, self.max_s)
                s.store.count("resent")
                unheld_since = now

    def translate(self, event: dict) -> list[dict]:
        """A worker event as OpenAI server events; a takeover's repeats are dropped."""
        s, kind, item = self.session, event.get("type"), event.get("item", "")
        if kind == "speech_started":
            if item in s.started:
                return []
            s.started.add(item)
            return [{"type": "input_audio_buffer.speech_started",
                     "audio_start_ms": event["start_ms"], "item_id": item}]
        if kind == "partial" and item not in s.finished:
            said, text = s.spoken.get(item, ""), event["text"]
            if len(text) <= len(said) or not text.startswith(said):
                return []
            s.spoken[item] = text
            return [{"type": "conversation.item.input_audio_transcription.delta",
                     "item_id": item, "content_index": 0, "delta": text[len(said):]}]
        if kind == "speech_stopped" and item not in s.finished:
            previous, s.previous_item = s.previous_item, item
            return [{"type": "input_audio_buffer.speech_stopped",
                     "audio_end_ms": event["end_ms"], "item_id": item},
                    {"type": "input_audio_buffer.committed", "item_id": item,
                     "previous_item_id": previous}]
        if kind == "final" and item not in s.finished:
            s.finished.add(item)
            return [{"type": "conversation.item.input_audio_transcription.completed",
                     "item_id": item, "content_index": 0, "transcript": event["text"],
                     "start_ms": event["start_ms"], "end_ms": event["end_ms"]}]
        if kind == "cleared":
            return [{"type": "input_audio_buffer.cleared"}]
        if kind == "error":
            return [_error(event.get("code", "server_error"), event.get("message", ""))]
        return []

    def send(self, event: dict) -> None:
        event.setdefault("event_id", f"event_{uuid.uuid4().hex[:20]}")
        with self._send_lock:
            with _send_deadline(SEND_TIMEOUT_S):
                self.ws.send(json.dumps(event))

    def fail(self, code: str, message: str, event_id: str | None = None,
             close: bool = False) -> None:
        try:
            self.send(_error(code, message, event_id))
        except Exception:
            close = True
        if close:
            self.closed.set()
            try:
                self.ws.close(reason=1008, message=code)
            except Exception:
                pass

    def _session_object(self) -> dict:
        s = self.session
        detection = s.config.get("turn_detection", "server_vad")
        return {"id": s.id, "object": "realtime.transcription_session", "type": "transcription",
                "audio": {"input": {
                    "format": {"type": "audio/pcm", "rate": s.rate},
                    "transcription": {"model": s.model, "language": s.config.get("language"),
                                      "prompt": " ".join(s.config.get("hotwords", []))},
                    "turn_detection": None if detection is None else {
                        "type": "server_vad", "prefix_padding_ms": s.config.get("padding_ms", 300),
                        "silence_duration_ms": s.config.get("silence_ms", 500)}}}}


def _error(code: str, message: str, event_id: str | None = None) -> dict:
    return {"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                       "message": message, "event_id": event_id}}


class _send_deadline:
    """gevent.Timeout around a send under gevent; nothing elsewhere (threads cannot be timed
    out, and the dev server is not where slow clients are met)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.timeout = seconds, None

    def __enter__(self) -> None:
        import sys

        monkey = sys.modules.get("gevent.monkey")
        if monkey is not None and monkey.is_module_patched("socket"):
            import gevent

            self.timeout = gevent.Timeout(self.seconds, ConnectionClosed(1008, "not reading"))
            self.timeout.start()

    def __exit__(self, *_: Any) -> None:
        if self.timeout is not None:
            self.timeout.cancel()


def parse_session(body: dict, current: dict, rate: int) -> tuple[dict, int]:
    """A session.update's `session` (GA shape `audio.input.*`, or the beta's flat
    `input_audio_format`/`input_audio_transcription`) -> (our config, input rate)."""
    if body.get("type") not in (None, "transcription"):
        raise ValueError("only sessions of type 'transcription' are served here")
    config = dict(current)
    audio_in = (body.get("audio") or {}).get("input") or {}
    fmt = audio_in.get("format", body.get("input_audio_format"))
    if isinstance(fmt, dict):
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            raise ValueError(f"input format {fmt.get('type')!r} is not served: use audio/pcm")
        rate = int(fmt.get("rate", rate))
    elif isinstance(fmt, str):
        if fmt != "pcm16":
            raise ValueError(f"input_audio_format {fmt!r} is not served: use pcm16")
        rate = 24_000
    if rate not in RATES:
        raise ValueError(f"input rate {rate} Hz is not served: use 24000 or 16000")
    transcription = audio_in.get("transcription", body.get("input_audio_transcription"))
    if isinstance(transcription, dict):
        if transcription.get("language"):
            config["language"] = str(transcription["language"])[:16]
        prompt = str(transcription.get("prompt") or "")[:1000]
        config["hotwords"] = [w for w in prompt.replace(",", " ").split() if w][:50]
    if "turn_detection" in audio_in or "turn_detection" in body:
        detection = audio_in.get("turn_detection", body.get("turn_detection"))
        if detection is None:
            config["turn_detection"] = None
        elif isinstance(detection, dict) and detection.get("type", "server_vad") == "server_vad":
            config["turn_detection"] = "server_vad"
            silence = int(detection.get("silence_duration_ms", config.get("silence_ms", 500)))
            padding = int(detection.get("prefix_padding_ms", config.get("padding_ms", 300)))
            if not 100 <= silence <= 10_000 or not 0 <= padding <= 2_000:
                raise ValueError("silence_duration_ms must be 100-10000, prefix_padding_ms 0-2000")
            config["silence_ms"], config["padding_ms"] = silence, padding
        else:
            raise ValueError("turn_detection must be null or {'type': 'server_vad', ...}")
    return config, rate


def init_app(app: Any) -> None:
    """The WebSocket routes (flask-sock on simple-websocket: a greenlet per socket under
    gunicorn's gevent worker)."""
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_FRAME_BYTES,
                                         "ping_interval": 25}
    sock.init_app(app)
    app.register_blueprint(bp)
