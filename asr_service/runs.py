"""Who runs a job: runner tokens with heartbeats, leases while a job runs, and the periodic
sweeps that hand back what a dead worker or a lost message left behind.

Celery's Redis transport redelivers an unacknowledged message only after the visibility
timeout (hours, for long jobs), `task_reject_on_worker_lost` redelivers at once when a child
dies, possibly forever, and a message that never reached the broker (or was lost by it) is
never delivered at all. The job record decides instead (lifecycle.py moves it):
- a delivery runs only if no live runner holds the job's lease; a runner is a random token per
  worker process with its own heartbeat key, so processes that share a hostname or a pid
  (containers) never mistake each other for dead;
- the runner renews its lease by compare-and-extend; one that lost it (Redis away longer than
  the lease, and the job taken over) cannot record a result: every write is fenced by the
  delivery id and the runner token;
- a job whose whole worker died is re-queued by the next sweep once its lease lapsed;
- a queued job whose message is in no broker queue and no worker's hands, at two sweeps in a
  row, is sent again under a new delivery id (the old message, should it reappear, is skipped);
  stranded.py finds those in O(page), and sweep.py runs the sweeps.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from asr_service.jobs import Job, JobStore, Status
from asr_service.lifecycle import Lifecycle, Runner

log = logging.getLogger(__name__)
RUNNER_TTL_S = 6  # a runner whose process died is known dead after this
RUNNER_HEARTBEAT_S = 2
STRANDED_AFTER_S = 15  # a queued job younger than this may have its message in flight

Dispatch = Callable[[Job], None]


def new_delivery(job_id: str, why: str) -> str:
    """A fresh Celery task id for another delivery of a job."""
    return f"{job_id}.{why}.{uuid.uuid4().hex[:8]}"


class RunnerHeartbeat:
    """This worker process's runner token, kept alive by a daemon thread."""

    def __init__(self, client: redis.Redis, store: JobStore) -> None:
        self.runner = Runner(token=uuid.uuid4().hex, pid=os.getpid())
        self.redis = client
        self.key = store.keys.runner(self.runner.token)
        self._stop = threading.Event()
        self._marks: dict[str, tuple[str, str, int]] = {}

    def keep(self, slot: str, key: str, value: str, ttl_s: int) -> None:
        """Set `key` now and again at every beat (a newer call for the same slot replaces it):
        a write Redis refused (full, restarting, unreachable) is made at the next beat instead
        of never. How a process says "my model is loaded" (Cluster.engine_mark)."""
        self._marks[slot] = (key, value, ttl_s)
        self._beat()

    def start(self) -> RunnerHeartbeat:
        """Publish the heartbeat now and keep it fresh."""
        self._beat()
        threading.Thread(target=self._run, name="runner-heartbeat", daemon=True).start()
        return self

    def _beat(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.key, f"{socket.gethostname()}:{os.getpid()}", ex=RUNNER_TTL_S)
        for key, value, ttl_s in list(self._marks.values()):
            pipe.set(key, value, ex=ttl_s)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("runner heartbeat not published: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(RUNNER_HEARTBEAT_S):
            self._beat()

    def stop(self) -> None:
        """Stop beating and say this runner is gone."""
        self._stop.set()
        try:
            self.redis.delete(self.key)
        except redis.RedisError:
            pass  # it expires on its own


@contextmanager
def holding_lease(lifecycle: Lifecycle, job_id: str, token: str, lease_s: float,
                  on_lost: Callable[[], None] | None) -> Iterator[None]:
    """Renew the job's lease from a thread while the body runs; on_lost() once another
    runner or delivery owns the job, or the job was deleted (the body should stop: its result
    would be refused). This is how a DELETE stops a running job: no signal is sent to a pid.
    With on_lost=None the body runs on (a thread that cannot be stopped), and its result is
    refused when it ends.

    on_lost() is never called once the body has left: the lock orders it with the exit.
    """
    stop, exiting = threading.Event(), threading.Lock()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                state = lifecycle.renew(job_id, token, lease_s)
            except redis.RedisError as exc:
                log.warning("lease not renewed: %s", exc, extra={"job_id": job_id})
                continue
            if state == "reacquired":
                log.warning("lease had lapsed; nobody took the job over: kept it",
                            extra={"job_id": job_id})
            elif state in ("lost", "done"):
                stopping = state == "lost" or _deleted(lifecycle, job_id)
                with exiting:
                    if stopping and not stop.is_set():
                        log.warning("lease %s: the job is owned elsewhere or deleted now; "
                                    "stopping", state, extra={"job_id": job_id})
                        if on_lost is not None:
                            on_lost()
                return

    thread = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with exiting:
            stop.set()
        thread.join(timeout=1)


def _deleted(lifecycle: Lifecycle, job_id: str) -> bool:
    """'done' with no record: a DELETE (or expiry), which relies on this stop since it sends
    no signal; with a record, 'done' is the body's own end and nothing is to be stopped."""
    try:
        return not lifecycle.redis.exists(lifecycle.keys.job(job_id))
    except redis.RedisError:
        return False  # left to run: its result is refused, since every write checks the record


def reap_orphans(store: JobStore, lifecycle: Lifecycle, dispatch: Dispatch,
                 limit: int = 1000) -> list[str]:
    """Re-queue running jobs whose runner is gone; returns their ids. O(running jobs), at
    most `limit` (far above any cluster's concurrency)."""
    requeued = []
    for job in store.load_many(store.ids(Status.PROCESSING, limit=limit)):
        if (recovered := lifecycle.recover(job.id, job.celery_id,
                                           new_delivery(job.id, "recovered"))) is not None:
            dispatch(recovered)
            requeued.append(job.id)
    return requeued
