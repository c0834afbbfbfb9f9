"""One live session as the API runs it: the relay both protocols share.

Client audio goes into the session's input stream (live/relay.py), resampled to RATE; the
worker's events come back from its output stream, translated by the protocol's subclass
(realtime.py: OpenAI's Realtime; funasr_ws.py: FunASR's runtime protocol). A session no worker
holds is sent again; a client far ahead of real time, one that stops reading or sends nothing
for LIVE_IDLE_S is told why and closed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from simple_websocket import ConnectionClosed

from asr_service import offhub
from asr_service.dispatch import send_live
from asr_service.figures import Latency, live_latencies
from asr_service.live.relay import LiveStore

log = logging.getLogger(__name__)

RATE = 16_000
"""What sessions run at: other input rates are resampled by the API."""
TAKEOVER_AFTER_S = 4.0
"""A session no worker process holds for this long (its host died with it, or with the task's
message before the claim) is sent again."""
FIRST_CLAIM_S = 20.0
"""A session no worker claims within this is ended with an error (every worker is busy)."""
TOUCH_EVERY_S = 10.0
"""How often an active session refreshes its keys' expiry (SESSION_TTL_S is 120 s)."""
SEND_TIMEOUT_S = 10.0
"""A client that reads nothing for this long (its socket buffer full) is closed."""
LINGER_S = 2.0
"""How long a socket the server closes waits for the client to close its side."""
RELAYED_KEPT = 600
"""When each recent audio message was relayed (60 s at 100 ms each): latencies count from it."""


@dataclass
class Live:
    """One open session, as the API side sees it."""

    id: str
    owner: str
    queue: str
    model: str
    store: LiveStore
    config: dict[str, Any] = field(default_factory=dict)
    rate: int = RATE
    resampler: Any = None
    sent_samples: int = 0
    """16 kHz samples relayed so far."""
    first_audio: float | None = None


class Relay:
    """Client messages into the session, the worker's events out, until either side ends.
    A protocol subclass says how to greet, read a message, translate an event and refuse."""

    def __init__(self, ws: Any, session: Live, celery: Any, max_s: int, idle_s: int,
                 buffer_s: int) -> None:
        self.ws, self.session, self.celery = ws, session, celery
        self.max_s, self.idle_s, self.buffer_s = max_s, idle_s, buffer_s
        self.closed = threading.Event()
        self._send_lock = threading.Lock()
        self.spoken: dict[str, str] = {}
        """Each open item's partial text as the client has it."""
        self.finished: set[str] = set()
        """Items whose final the client has (a takeover may publish one again)."""
        self.configured = False
        """Whether the client has set the session up (session.update, FunASR's config)."""
        self.latency: dict[str, Latency] = live_latencies(session.store.client,
                                                           session.store.keys)
        self._relayed: deque[tuple[int, float]] = deque(maxlen=RELAYED_KEPT)

    # --- what a protocol defines ---

    def greet(self) -> None:
        """What the client hears first."""

    def handle(self, message: str | bytes) -> None:
        raise NotImplementedError

    def translate(self, event: dict) -> list[dict]:
        """A worker event as the protocol's messages."""
        raise NotImplementedError

    def refuse(self, code: str, message: str, close: bool = False,
               event_id: str | None = None) -> None:
        """Tell the client what was wrong; with `close`, end the session."""
        raise NotImplementedError

    # --- shared ---

    def grown(self, item: str, text: str) -> str:
        """What a partial adds to what the client has of `item` ("" if nothing: a repeat after
        a takeover, or a finished item)."""
        said = self.spoken.get(item, "")
        if item in self.finished or len(text) <= len(said) or not text.startswith(said):
            return ""
        self.spoken[item] = text
        return text[len(said):]

    def finish(self, item: str) -> str | None:
        """Mark `item` final; the partial text the client had of it, or None when the client
        has its final already (a takeover's repeat)."""
        if item in self.finished:
            return None
        self.finished.add(item)
        return self.spoken.pop(item, "")

    def run(self) -> None:
        s = self.session
        self.greet()
        forwarder = threading.Thread(target=self._forward, name=f"live-{s.id}", daemon=True)
        forwarder.start()
        began = heard = touched = time.monotonic()
        try:
            while not self.closed.is_set():
                now = time.monotonic()
                if now - began > self.max_s:
                    self.refuse("session_expired", f"the session reached LIVE_MAX_SESSION_S "
                                f"({self.max_s} s)", close=True)
                    break
                if now - heard > self.idle_s:
                    self.refuse("idle_timeout", f"nothing was sent for {self.idle_s} s "
                                "(LIVE_IDLE_S)", close=True)
                    break
                message = self.ws.receive(timeout=1)
                if message is None:
                    continue
                heard = time.monotonic()
                if heard - touched > TOUCH_EVERY_S:
                    s.store.touch(s.id, s.owner)
                    touched = heard
                self.handle(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()  # the forwarder ends within its 1 s read; the session is closed
            # in Redis by the request's teardown, without waiting for it

    def configure(self, config: dict, rate: int) -> None:
        """New session settings and input rate (the worker applies them between utterances)."""
        s = self.session
        if not self.configured or rate != s.rate:
            s.resampler = None if rate == RATE else soxr.ResampleStream(rate, RATE, 1,
                                                                          dtype="float32")
        s.config, s.rate, self.configured = config, rate, True
        s.store.configure(s.id, config)
        s.store.send_control(s.id, {"type": "config", "config": config})

    def control(self, kind: str) -> None:
        self.session.store.send_control(self.session.id, {"type": kind})

    def push_audio(self, pcm: bytes) -> bool:
        """16-bit PCM at the session's rate into the session; False (and the client closed)
        when it runs more than LIVE_BUFFER_S ahead of real time."""
        s, now = self.session, time.monotonic()
        s.first_audio = s.first_audio or now
        if s.resampler is not None:  # to 16 kHz PCM16; 16 kHz input goes through untouched
            samples = s.resampler.resample_chunk(
                np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0)
            pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
        count = len(pcm) // 2
        if (s.sent_samples + count) / RATE - (now - s.first_audio) > self.buffer_s:
            self.refuse("input_audio_buffer_overflow", f"audio arrives more than {self.buffer_s}"
                        " s ahead of real time (LIVE_BUFFER_S); stream at real time, or send "
                        "files to the batch API", close=True)
            return False
        s.store.send_audio(s.id, pcm, s.sent_samples)
        s.sent_samples += count
        self._relayed.append((s.sent_samples, now))
        return True

    def _observe(self, event: dict) -> None:
        """A partial's or a final's latency: since this process relayed the audio it was
        decoded from (a partial's at_ms; the end of a final's utterance)."""
        kind = event.get("type")
        ms = event.get("at_ms") if kind == "partial" else event.get("end_ms")
        if kind not in self.latency or ms is None:
            return
        sample, relayed = ms * RATE // 1000, None
        for end, at in reversed(self._relayed):  # the newest entries are the likely ones
            if end < sample:
                break
            relayed = at
        if relayed is not None:
            try:
                self.latency[kind].observe(time.monotonic() - relayed)
            except Exception as exc:  # a figure is not worth a session
                log.warning("live latency not recorded: %s", exc)

    def _forward(self) -> None:
        s, after = self.session, "0"
        opened = unheld_since = time.monotonic()
        claimed = False
        while not self.closed.is_set():
            try:
                for entry_id, event in s.store.events(s.id, after, block_ms=1000):
                    after = entry_id
                    self._observe(event)
                    for out in self.translate(event):
                        self.send(out)
                held = s.store.held(s.id)
            except ConnectionClosed:
                break
            except Exception as exc:  # Redis away: keep trying while the client is there
                log.warning("live relay: %s", exc, extra={"session": s.id})
                time.sleep(0.5)
                continue
            now = time.monotonic()
            claimed = claimed or held
            if held:
                unheld_since = now
            elif not claimed and now - opened > FIRST_CLAIM_S:
                self.refuse("no_worker", "no worker took the session up; try again later",
                            close=True)
            elif now - unheld_since > TAKEOVER_AFTER_S:
                # Its worker died with the task's message (a whole host), before or after it
                # claimed the session: send it again; the lease makes a duplicate delivery end
                # at once.
                send_live(self.celery, s.id, s.queue, self.max_s)
                s.store.count("resent")
                unheld_since = now

    def send(self, message: dict) -> None:
        with self._send_lock, _send_deadline(SEND_TIMEOUT_S):
            self.ws.send(json.dumps(message))

    def close(self, code: int, reason: str) -> None:
        self.closed.set()
        try:
            self.ws.close(reason=code, message=reason[:120])
        except Exception:
            return
        self._linger()

    def _linger(self, within_s: float = LINGER_S) -> None:
        """Read (and drop) what the client still sends until it closes its side: a TCP socket
        closed with unread bytes (a fast client's audio) is reset, and the reset can destroy
        what we sent just before, the error saying why (seen: the overflow error lost)."""
        deadline = time.monotonic() + within_s
        thread = getattr(self.ws, "thread", None)
        if thread is not None:  # simple-websocket's reader stops after its current read
            thread.join(within_s)
        sock = getattr(self.ws, "sock", None)
        if sock is None:
            return
        try:
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(65536):
                    return
        except OSError:
            pass


class _send_deadline:
    """gevent.Timeout around a send under gevent; nothing elsewhere (threads cannot be timed
    out, and the dev server is not where slow clients are met)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.timeout = seconds, None

    def __enter__(self) -> None:
        if offhub.gevent_patched():
            import gevent

            self.timeout = gevent.Timeout(self.seconds, ConnectionClosed(1008, "not reading"))
            self.timeout.start()

    def __exit__(self, *_: Any) -> None:
        if self.timeout is not None:
            self.timeout.cancel()
