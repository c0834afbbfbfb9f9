"""The periodic sweep: retention expiry, orphan recovery and stranded-message resends, run by
one worker of the cluster at a time, in a daemon thread of the worker's main process.

It used to run in Celery's `heartbeat_sent` handler, i.e. in the consumer's event loop, under
a 10 s `SET NX EX` lock that lapsed mid-sweep and that Redis refuses at maxmemory (review M4,
H1). Now:
- its own thread, so a slow sweep never delays prefetch, acks or broker heartbeats;
- a token lock (redis-py's Lock) renewed from another thread while the sweep runs and let
  lapse one period after it ends (the cluster sweeps about once a period, whoever holds it);
  only its holder can renew it (compare-and-extend);
- the lock is taken by a script flagged `allow-oom`, and so is the expiry (lua/remove.lua),
  so a full Redis still frees memory; orphan recovery and resends wait for memory;
- every step is O(page) (stranded.py), so a large backlog never makes a sweep long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from asr_service.jobs import JobStore
from asr_service.keys import Keys
from asr_service.lifecycle import Lifecycle
from asr_service.runs import Dispatch, reap_orphans
from asr_service.stranded import StrandedSweep

log = logging.getLogger(__name__)
SWEEP_LOCK = Keys().sweeper  # under the default prefix (Sweeper takes its lock_name)
SWEEP_EVERY_S = 10
LOCK_TTL_S = 30  # a sweeper that died holding the lock stops blocking others after this
EXPIRE_PAGE, EXPIRE_PAGES = 500, 20  # at most 10k removals per sweep, one script call a page

# SET NX is refused at maxmemory (noeviction) unless a script flagged allow-oom sends it.
_ACQUIRE = """#!lua flags=allow-oom
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
"""


class OomSafeLock(Lock):
    """redis-py's token lock, acquired by an allow-oom script (extend, reacquire and release
    are scripts whose commands, PEXPIRE and DEL, Redis allows at maxmemory anyway)."""

    lua_acquire: Any = None

    def register_scripts(self) -> None:
        super().register_scripts()
        cls = type(self)
        if cls.lua_acquire is None:
            cls.lua_acquire = self.redis.register_script(_ACQUIRE)

    def do_acquire(self, token: str) -> bool:
        assert self.timeout, "the sweep lock always expires"
        return bool(self.lua_acquire(keys=[self.name], args=[token, int(self.timeout * 1000)],
                                     client=self.redis))


@dataclass
class Sweep:
    """One sweep's steps; each is bounded, and one failing (Redis full) skips only itself."""

    store: JobStore
    lifecycle: Lifecycle
    stranded: StrandedSweep
    dispatch: Dispatch
    held: Callable[[], bool] = field(default=lambda: True)
    """False once the lock was lost: stop at the next step or page."""

    def run(self) -> dict[str, int]:
        """Run every step; the number of jobs each one moved."""
        done: dict[str, int] = {}
        for name, step in (("expired", self._expire), ("recovered", self._recover),
                           ("resent", self._resend), ("orphaned", self._orphaned)):
            if not self.held():
                log.warning("sweep stopped: its lock was lost", extra={"step": name})
                break
            try:
                if name != "expired" and self._full():
                    # A full Redis also refuses heartbeats (live workers would look dead) and
                    # the messages a resend publishes: moving jobs waits for memory.
                    log.warning("sweep: Redis is full; only the expiry ran")
                    break
                done[name] = step()
            except redis.RedisError as exc:
                log.warning("sweep step skipped: %s", exc, extra={"step": name})
        return done

    def _full(self) -> bool:
        memory = self.store.redis.info("memory")
        limit = int(memory.get("maxmemory", 0))
        return bool(limit) and int(memory["used_memory"]) >= limit

    def _expire(self) -> int:
        removed = 0
        for _ in range(EXPIRE_PAGES):
            n = self.lifecycle.expire(limit=EXPIRE_PAGE)
            removed += n
            if n < EXPIRE_PAGE or not self.held():
                break
        if removed:
            log.info("removed jobs past their retention", extra={"jobs": removed})
        return removed

    def _recover(self) -> int:
        ids = reap_orphans(self.store, self.lifecycle, self.dispatch)
        for job_id in ids:
            log.warning("re-queued a job whose worker died", extra={"job_id": job_id})
        return len(ids)

    def _resend(self) -> int:
        ids = self.stranded.run()
        for job_id in ids:
            log.warning("re-sent a queued job the broker had lost", extra={"job_id": job_id})
        return len(ids)

    def _orphaned(self) -> int:
        ids = self.stranded.orphaned()
        for job_id in ids:
            log.warning("re-sent a queued job whose message a dead worker held",
                        extra={"job_id": job_id})
        return len(ids)


class Sweeper:
    """Runs a Sweep every `every_s` in a daemon thread, whenever it gets the cluster's lock."""

    def __init__(self, client: redis.Redis, make: Callable[[Callable[[], bool]], Sweep],
                 every_s: float = SWEEP_EVERY_S, lock_ttl_s: float = LOCK_TTL_S,
                 lock_name: str = SWEEP_LOCK) -> None:
        self.redis = client
        self.make = make
        self.every_s = every_s
        self.lock_ttl_s = lock_ttl_s
        self.lock_name = lock_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sweeper:
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.run_once()
            except Exception:  # the thread must outlive any one failure
                log.exception("sweep failed")

    def run_once(self) -> dict[str, int] | None:
        """One sweep if this process gets the lock; None when another holder has it."""
        lock = OomSafeLock(self.redis, self.lock_name, timeout=self.lock_ttl_s,
                           blocking=False, thread_local=False)
        try:
            if not lock.acquire():
                return None
        except redis.RedisError as exc:
            log.warning("sweep skipped: %s", exc)
            return None
        lost = threading.Event()
        renewing = threading.Thread(target=self._renew, args=(lock, lost), daemon=True,
                                    name="sweeper-lock")
        renewing.start()
        started = time.perf_counter()
        try:
            done = self.make(lambda: not lost.is_set() and not self._stop.is_set()).run()
        finally:
            lost.set()  # stops the renewal
            renewing.join()
            self._hand_over(lock)
        log.debug("sweep done", extra={**done, "ms": round(1000 * (time.perf_counter()
                                                                  - started), 1)})
        return done

    def _renew(self, lock: OomSafeLock, lost: threading.Event) -> None:
        """Keep the lock for as long as the sweep runs (lost: it lapsed and went elsewhere)."""
        while not lost.wait(self.lock_ttl_s / 3):
            try:
                lock.reacquire()
            except LockError:
                log.warning("sweep lock lost mid-sweep; stopping")
                lost.set()
            except redis.RedisError as exc:
                log.warning("sweep lock not renewed: %s", exc)

    def _hand_over(self, lock: OomSafeLock) -> None:
        """Leave the lock to lapse a little before the next period: the cluster then sweeps
        about once a period, whichever worker gets it."""
        try:
            lock.extend(max(0.5, self.every_s * 0.8), replace_ttl=True)
        except (LockError, redis.RedisError):
            pass  # lost or lapsed: the next holder sweeps
