"""Long-poll: one Redis subscription per API process wakes every request waiting for a job's end.

The lifecycle publishes "<id> <status>" on `asr:job.finished` in the same atomic step that
ends a job. Each API process keeps ONE subscriber (a thread; a greenlet under gunicorn's gevent
workers) and a map from job id to the events of the requests waiting on it, so a thousand
waiting clients cost one socket to Redis and no polling. A waiter registers before it reads
the job, so an end between that read and the wait is never missed; while the subscription is
down (Redis restarting) waiters fall back to reading the job once a second, and every waiter
re-reads when it comes back. With nobody waiting for IDLE_S, the subscriber unsubscribes and
ends; the next waiter starts it again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)


class Waiters:
    """Requests waiting for jobs to end, woken by the job.finished channel."""

    IDLE_S = 60.0
    """The subscriber ends after this long with no request waiting."""

    def __init__(self, connect: Callable[[], redis.Redis], channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}
        self._subscribed = threading.Event()
        self._pid: int | None = None  # the process whose thread listens (gunicorn forks)

    def wait(self, job_id: str, timeout_s: float, done: Callable[[], bool]) -> bool:
        """Block until done() is true (checked at once, then on each wake-up) or timeout_s
        passes; answers done()'s last value."""
        # A process already subscribed registers before its first look (an end after the look
        # wakes it): one record read per long-poll instead of two (make bench-control).
        subscribed = self.listening and self._subscribed.is_set()
        if (timeout_s <= 0 or not subscribed) and done():
            return True
        if timeout_s <= 0:
            return False
        deadline = time.monotonic() + timeout_s
        woken = threading.Event()
        with self._lock:  # registered first: an idle subscriber sees it and does not end
            self._waiting.setdefault(job_id, set()).add(woken)
        try:
            self._listen()
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # Without a live subscription an end could go unheard: look once a second.
                woken.wait(remaining if self._subscribed.is_set() else min(remaining, 1.0))
                woken.clear()
            return True
        finally:
            with self._lock:
                events = self._waiting.get(job_id)
                if events is not None:
                    events.discard(woken)
                    if not events:
                        del self._waiting[job_id]

    def _listen(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._subscribed = threading.Event()
                threading.Thread(target=self._run, name="job-waiters", daemon=True).start()
        self._subscribed.wait(2.0)  # the first waiter subscribes before it reads the job

    @property
    def listening(self) -> bool:
        """Whether this process has a subscriber now."""
        with self._lock:
            return self._pid == os.getpid()

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                self._subscribe_and_dispatch()
            except Exception as exc:  # Redis gone or restarting: waiters poll meanwhile
                failures = 0 if self._subscribed.is_set() else failures + 1
                log.log(logging.WARNING if failures <= 1 else logging.DEBUG,
                        "job.finished subscription lost; retrying every 1 s: %s", exc)
            self._subscribed.clear()
            self._wake_all()
            with self._lock:
                if not self._waiting:  # idle, or Redis gone with nobody waiting: end
                    self._pid = None
                    return
            time.sleep(1.0)

    def _subscribe_and_dispatch(self) -> None:
        pubsub = self._connect().pubsub()
        idle_since = time.monotonic()
        try:
            pubsub.subscribe(self._channel)
            while True:
                message = pubsub.get_message(timeout=min(5.0, self.IDLE_S))
                if self._waiting:  # O(1): this runs for every job that ends
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= self.IDLE_S:
                    return
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._subscribed.set()
                    self._wake_all()  # an end published while we were not listening
                elif message["type"] == "message":
                    self._wake(message["data"].split(b" ", 1)[0].decode())
        finally:
            pubsub.close()

    def _wake(self, job_id: str) -> None:
        with self._lock:
            events = list(self._waiting.get(job_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [e for waiting in self._waiting.values() for e in waiting]
        for event in events:
            event.set()
