"""Who runs a job: one claim per delivery, a lease while it runs, orphans handed back.

Celery's Redis transport redelivers an unacknowledged message only after the visibility
timeout (hours, for long jobs), and `task_reject_on_worker_lost` redelivers at once when a
child dies, possibly forever. The job record decides instead: a delivery runs only if no live
process holds the job's lease, a job that killed its worker `max_deliveries` times fails, and a
job whose whole worker died is re-queued by the next worker's reaper as soon as its lease lapses.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum

import redis

from asr_service.jobs import ACTIVE, FAILED, PROCESSING, QUEUED, Job, JobStore, decode_job
from asr_service.jobs import encode_fields as encode

log = logging.getLogger(__name__)


class Outcome(Enum):
    """What a delivery of a job should do."""

    RUN = "run"  # this process now holds the lease
    SKIP = "skip"  # deleted, finished, or superseded by a newer delivery
    BUSY = "busy"  # another live process runs it: try again when its lease may have lapsed
    GAVE_UP = "gave-up"  # it killed its worker max_deliveries times: now failed


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a delivery, and the job as it now stands."""

    outcome: Outcome
    job: Job | None


def runner_id() -> str:
    """Identifies this process in a lease: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def runner_alive(lease: bytes | None) -> bool:
    """Whether the process named in a lease still runs (trusted as alive on another host)."""
    if lease is None:
        return False
    host, _, pid = lease.decode().rpartition(":")
    if host != socket.gethostname():
        return True  # its lease TTL is the only signal we have from another host
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def claim(store: JobStore, job_id: str, celery_id: str, worker: str,
          max_deliveries: int, lease_s: int) -> Claim:
    """Atomically decide whether this delivery runs the job, and take the lease if so."""
    key, lease_key = store.job_key(job_id), store.lease_key(job_id)

    def apply(pipe: redis.client.Pipeline) -> Claim:
        raw = pipe.hgetall(key)
        if not raw:
            return Claim(Outcome.SKIP, None)
        job = decode_job(raw)
        if job.celery_id != celery_id or job.status not in ACTIVE:
            return Claim(Outcome.SKIP, job)
        if job.status == PROCESSING and runner_alive(pipe.get(lease_key)):
            return Claim(Outcome.BUSY, job)
        now = time.time()
        if job.deliveries >= max_deliveries:
            updates = {"status": FAILED, "finished_at": now, "error": {
                "type": "worker-lost",
                "detail": f"the worker process died {job.deliveries} times while transcribing "
                          "this recording; it is not tried again automatically (POST "
                          "/api/v1/asr/retry/{task_id} to try once more)"}}
            outcome = Outcome.GAVE_UP
        else:
            updates = {"status": PROCESSING, "started_at": now, "worker": worker,
                       "worker_pid": os.getpid(), "attempts": job.attempts + 1,
                       "deliveries": job.deliveries + 1}
            outcome = Outcome.RUN
        pipe.multi()
        pipe.hset(key, mapping=encode(updates))
        if outcome is Outcome.RUN:
            pipe.set(lease_key, runner_id(), ex=lease_s)
            pipe.sadd(store.running, job_id)
        else:
            pipe.delete(lease_key)
            pipe.srem(store.running, job_id)
        return Claim(outcome, replace(job, **updates))

    return store.redis.transaction(apply, key, lease_key, value_from_callable=True)


@contextmanager
def holding_lease(store: JobStore, job_id: str, lease_s: int) -> Iterator[None]:
    """Renew the job's lease from a thread while the body runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                store.redis.set(store.lease_key(job_id), runner_id(), ex=lease_s, xx=True)
            except redis.RedisError as exc:
                log.warning("lease not renewed: %s", exc, extra={"job_id": job_id})

    thread = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1)


def reap_orphans(store: JobStore, enqueue: Callable[[str, str, str], None]) -> list[str]:
    """Re-queue running jobs whose runner died (lease lapsed); returns their ids.

    enqueue(job_id, celery_id, queue) sends the new delivery to the job's own queue.
    """
    requeued = []
    for raw_id in store.redis.smembers(store.running):
        job_id = raw_id.decode()
        celery_id = f"{job_id}.recovered.{uuid.uuid4().hex[:8]}"
        job = _requeue_orphan(store, job_id, celery_id)
        if job is not None:
            enqueue(job_id, celery_id, job.queue)
            requeued.append(job_id)
    return requeued


def _requeue_orphan(store: JobStore, job_id: str, celery_id: str) -> Job | None:
    key, lease_key = store.job_key(job_id), store.lease_key(job_id)

    def apply(pipe: redis.client.Pipeline) -> Job | None:
        raw = pipe.hgetall(key)
        job = decode_job(raw) if raw else None
        if job is not None and job.status == PROCESSING and runner_alive(pipe.get(lease_key)):
            return None
        pipe.multi()
        pipe.srem(store.running, job_id)
        if job is None or job.status != PROCESSING:
            return None  # stale entry: nothing to recover
        updates = {"status": QUEUED, "celery_id": celery_id, "queued_at": time.time(),
                   "worker": None, "worker_pid": None}
        pipe.hset(key, mapping=encode(updates))
        return replace(job, **updates)

    return store.redis.transaction(apply, key, lease_key, value_from_callable=True)
