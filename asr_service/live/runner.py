"""A live session on a worker: read the audio the API relays, publish partials and finals.

Runs as a Celery task (tasks.live_session) in a worker process that holds the model, so live
sessions spread over the same fleet as jobs. It owns the session through a fenced lease that
every write checks and a thread renews; a process that dies (or is cut off) stops renewing,
and the next delivery of the task, in this worker or another, resumes from the sample after the last
final it published (or the padding before the next utterance), with the next utterance
number: no final is lost or sent twice. A worker that shuts down (SIGTERM: a deploy, a
scale-in) hands its sessions over the same way at once, its lease given back, instead of
holding the shutdown for as long as the clients talk.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from asr_service.engine.base import Engine, TranscribeOptions
from asr_service.engine.online import CHUNK_SIZE, OnlineModel
from asr_service.live.relay import LiveStore
from asr_service.live.turns import TurnDetection, Turns

log = logging.getLogger(__name__)

LEASE_MS = 2000
"""A process that stops renewing (killed, frozen, cut off) loses the session this soon; a
thread renews it every LEASE_MS / 4, decodes or not."""
READ_BLOCK_MS = 250
ORPHAN_S = 60
"""A session whose API sends nothing (not even the end) for this long is abandoned: its API
process died; its keys expire on their own."""


def detection(config: dict) -> TurnDetection:
    vad = config.get("turn_detection", "server_vad") is not None
    return TurnDetection(vad=vad, silence_ms=int(config.get("silence_ms", 500)),
                         padding_ms=int(config.get("padding_ms", 300)))


def options(config: dict) -> TranscribeOptions:
    return TranscribeOptions(language=config.get("language") or "auto",
                             hotwords=list(config.get("hotwords") or []))


class Session:
    """One claimed live session in this process."""

    def __init__(self, store: LiveStore, engine: Engine, session_id: str, token: str,
                 online: OnlineModel | None = None,
                 draining: Callable[[], bool] = lambda: False) -> None:
        self.store, self.engine, self.id, self.token = store, engine, session_id, token
        self.online = online
        """The streaming model for partials (ASR_ONLINE_MODEL), or None."""
        self.draining = draining
        """True once this worker shuts down (drain.Drain): the session is to be handed over."""
        self.turns: Turns | None = None
        self.options = TranscribeOptions()
        self._entries: deque[tuple[str, int, int]] = deque()  # audio kept: (id, first, count)
        self._done, self._lost = threading.Event(), threading.Event()
        self._cut_after = ""  # the control that last moved the resume point

    def run(self, wait_s: float = 2 * LEASE_MS / 1000) -> str:
        """Until the session ends ('ended'), another process holds it ('busy'), it is gone
        ('gone'), this process lost it ('lost') or its worker shuts down ('handed-over': the
        caller sends the task again for another worker)."""
        if self.draining():
            return "handed-over"
        deadline = time.monotonic() + wait_s
        while (claim := self.store.claim(self.id, self.token, LEASE_MS)).outcome == "busy":
            if time.monotonic() > deadline:  # its holder renews it: a duplicate delivery
                return "busy"
            time.sleep(0.2)  # a killed process's lease lapses within LEASE_MS
        if claim.outcome != "claimed":
            return claim.outcome
        if claim.taken_over:
            self.store.count("taken_over")
            log.warning("live session taken over", extra={"session": self.id,
                                                          "resume_sample": claim.resume})
        self._configure(claim.config or {}, claim.item, claim.resume)
        keeper = threading.Thread(target=self._keep_lease, name=f"lease-{self.id}", daemon=True)
        keeper.start()
        try:
            return self._loop()
        finally:
            self._done.set()

    def _keep_lease(self) -> None:
        """Renew the lease while the session runs here; a refusal means another process took
        it over (this one was paused or cut off): the loop stops at its next write, which the
        lease fences anyway."""
        while not self._done.wait(LEASE_MS / 4000):
            try:
                if not self.store.renew(self.id, self.token, LEASE_MS):
                    self._lost.set()
                    return
            except Exception as exc:  # Redis away: the next write says whether it is still ours
                log.warning("live lease not renewed: %s", exc, extra={"session": self.id})

    def _configure(self, config: dict, item: int, offset: int) -> None:
        self.options = options(config)
        chunk = tuple(config.get("chunk_size") or CHUNK_SIZE)
        decoder = self.online.decoder(chunk) if self.online is not None else None
        self.turns = Turns(self._transcribe, detection(config), first_item=item, offset=offset,
                           partial_ms=int(config.get("partial_ms", 300)), online=decoder)

    def _transcribe(self, samples: np.ndarray) -> str:
        try:
            return self.engine.transcribe(samples, self.options).text
        except Exception as exc:  # one bad segment must not end the session
            log.warning("live segment not transcribed: %s", exc, extra={"session": self.id})
            return ""

    def _loop(self) -> str:
        after, heard = "0", time.monotonic()
        assert self.turns is not None
        while True:
            entries = self.store.read(self.id, after, READ_BLOCK_MS)
            events: list[dict] = []
            ended = False
            for entry_id, fields in entries:
                after = entry_id
                if b"a" in fields:
                    events += self._audio(entry_id, fields)
                else:
                    resume = self.turns.resume
                    ended, more = self._control(fields)
                    events += more
                    if self.turns.resume != resume:  # a commit or clear consumed all before it
                        self._entries.clear()
                        self._cut_after = entry_id
                    if ended:
                        break
            now = time.monotonic()
            heard = now if entries else heard
            published = not self._lost.is_set() and self.store.publish(
                self.id, self.token, LEASE_MS, events, resume=self.turns.resume,
                item=self.turns.item, trim_before=self._trim())
            if not published:
                log.warning("live session lost to another process", extra={"session": self.id})
                return "lost"
            if ended or self.draining():
                self.store.release(self.id, self.token)
                if not ended:
                    self.store.count("handed_over")
                    log.info("live session handed over at shutdown", extra={"session": self.id})
                return "ended" if ended else "handed-over"
            if now - heard > ORPHAN_S:
                return "gone"

    def _audio(self, entry_id: str, fields: dict) -> list[dict]:
        assert self.turns is not None
        pcm = np.frombuffer(fields[b"a"], dtype="<i2")
        first = int(fields[b"n"])
        self._entries.append((entry_id, first, len(pcm)))
        skip = max(0, self.turns.heard - first)
        if skip >= len(pcm):
            return []  # heard before the last final (a takeover replays the kept entries)
        return self.turns.append(pcm[skip:].astype(np.float32) / 32768.0)

    def _control(self, fields: dict) -> tuple[bool, list[dict]]:
        assert self.turns is not None
        control = json.loads(fields[b"c"])
        kind = control.get("type")
        if kind == "commit":
            return False, self.turns.commit()
        if kind == "clear":
            return False, self.turns.clear()
        if kind == "config":
            config = control.get("config", {})
            self.options = options(config)
            self.turns.reconfigure(detection(config), int(config.get("partial_ms", 300)))
            return False, []
        if kind == "flush":  # FunASR's is_speaking false: the utterance ends, the session not
            return False, [*(self.turns.commit() if self.turns.speaking else []),
                           {"type": "flushed"}]
        if kind == "end":
            return True, self.turns.commit() if self.turns.speaking else []
        return False, []

    def _trim(self) -> str:
        """The id of the first input entry a takeover still needs (all before it go): the
        first audio entry not wholly before the resume point, or, when a commit or clear set
        that point, the entry after that control (a takeover must not replay it)."""
        assert self.turns is not None
        while len(self._entries) > 1 and self._entries[0][1] + self._entries[0][2] \
                <= self.turns.resume:
            self._entries.popleft()
        if self._entries:
            return self._entries[0][0]
        if self._cut_after:
            millis, _, seq = self._cut_after.partition("-")
            return f"{millis}-{int(seq) + 1}"  # XTRIM MINID keeps ids from this one on
        return ""
