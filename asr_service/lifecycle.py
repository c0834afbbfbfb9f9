"""The one owner of a job's status: atomic transitions, fenced by delivery and runner, each
emitting one event.

Every change of a job's status is one Lua script (asr_service/lua/) that checks the allowed
move and the fences, and in the same atomic step keeps the status indexes, the lease, the
TTLs, the recordings budget and the figures, and appends the event to the `asr:events` stream
(`job.finished` is also published on `asr:job.finished` for waiters). In-process listeners
(the events.jsonl log) then receive the same event. No other module writes a job's status.

Every script is called the same way: ARGV = the key prefix (Keys.prefix), a job id or an
operation, a JSON spec (create.lua adds the recording's bytes). The scripts build their key
names from the prefix with the builders generated from keys.Keys (scripts.prelude()), not from
KEYS[]: that needs every key of a job on one node, which holds for the one Redis (a master
and its replicas, under Sentinel) this service runs on, not for Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script

from asr_service.capacity import Caps
from asr_service.committed import NotReplicated, applied, unless_lagging
from asr_service.errors import JobConflict, RecordingGone
from asr_service.jobs import (
    ACTIVE,
    ErrorType,
    Job,
    Status,
    decode_job,
    encode_fields,
    not_found,
)
from asr_service.keys import Keys
from asr_service.scripts import source

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What a transition did."""

    OK = "ok"
    GAVE_UP = "gave-up"  # a claim found the job had killed its worker max_deliveries times
    SKIP = "skip"  # wrong status, or fenced out: another delivery or runner owns the job
    BUSY = "busy"  # a live runner holds it
    GONE = "gone"  # its recording was removed
    MISSING = "missing"  # no record (never existed, deleted or expired)
    FULL = "full"  # a retry: the stored-audio budget is taken by active jobs
    QUEUE_FULL = "queue-full"  # a retry: MAX_QUEUED_JOBS jobs are active
    OWNER_FULL = "owner-full"  # a retry: its tenant has MAX_QUEUED_JOBS_PER_KEY active jobs


@dataclass(frozen=True)
class Moved:
    """The outcome of a transition and the job as it now stands (None when missing)."""

    outcome: Outcome
    job: Job | None


@dataclass(frozen=True)
class Event:
    """One transition: job.submitted, job.started, job.finished, job.requeued, job.deleted."""

    kind: str
    job: Job
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Runner:
    """A worker process that runs jobs: a random token (not host + pid), with its own
    heartbeat key while it lives."""

    token: str
    pid: int


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key, scoped to its client, and what the request sent with it."""

    key: str
    fingerprint: str
    ttl_s: int


Listener = Callable[[Event], None]


class Lifecycle:
    """Creates, moves and removes jobs; the only writer of their status."""

    def __init__(self, client: redis.Redis, retention_s: int, max_recordings: int,
                 keys: Keys | None = None, listeners: Iterable[Listener] = (),
                 max_stored_bytes: int = 0, min_replicas: int = 0,
                 max_active: int = 0, max_active_per_owner: int = 0) -> None:
        self.redis = client
        self.min_replicas = min_replicas
        self.retention_s = retention_s
        self.max_recordings = max_recordings
        self.max_stored_bytes = max_stored_bytes
        self.caps = Caps(max_stored_bytes, max_active, max_active_per_owner)
        self.keys = keys or Keys()
        self.listeners = list(listeners)
        self._create = client.register_script(source("create"))
        self._transition = client.register_script(source("transition"))
        self._remove = client.register_script(source("remove"))
        self._renew = client.register_script(source("renew"))

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a log or figure must never undo or hide a transition
                log.exception("event listener failed", extra={"job_id": event.job.id})

    def create(self, job: Job, audio: bytes, idempotency: Idempotency | None = None,
               **details: Any) -> tuple[str, str]:
        """Store a queued job and its recording; ('created' | 'replayed' | 'conflict' | 'full'
        | 'queue-full' | 'owner-full', id). The last three store nothing (see Caps.error).

        With an Idempotency-Key the key is bound in the same step: a key whose job still
        exists replays it (or is a conflict when the request differs); a key whose job is gone
        is free again.
        """
        spec = {"now": job.created_at, "record": encode_fields(vars(job)),
                "idempotency": idempotency and vars(idempotency),
                "max_recordings": self.max_recordings, "max_stored_bytes": self.max_stored_bytes,
                **self.caps.lua()}
        answer, lagging = self._applied(self._create, [*self._args(job.id, spec), audio])
        outcome, job_id = answer[0].decode(), answer[1].decode()
        if outcome == "created":
            self._emit(Event("job.submitted", job, details=details))
        return unless_lagging(lagging, (outcome, job_id))

    def _args(self, id_or_op: str, spec: dict[str, Any]) -> list[str]:
        """Every script's ARGV: the key prefix, a job id or an operation, a JSON spec."""
        return [self.keys.prefix, id_or_op, json.dumps(spec)]

    def _applied(self, script: Script, args: list[Any]) -> tuple[Any, NotReplicated | None]:
        return applied(script, args, self.redis, self.min_replicas)

    def held_by(self, idempotency_key: str) -> tuple[str, str] | None:
        """(job id, fingerprint) bound to an Idempotency-Key whose job still exists."""
        held = self.redis.get(idempotency_key)
        if not held:
            return None
        job_id, _, fingerprint = held.decode().partition(" ")
        return (job_id, fingerprint) if self.redis.exists(self.keys.job(job_id)) else None

    def _move(self, job_id: str, to: Status, *, allowed: Iterable[Status], event: str,
              reason: str | None = None, details: dict[str, Any] | None = None,
              **move: Any) -> Moved:
        spec = {"now": time.time(), "to": to, "from": list(allowed), "event": event,
                "reason": reason, "nonce": uuid.uuid4().hex,
                "retention_s": self.retention_s, "max_recordings": self.max_recordings,
                "max_stored_bytes": self.max_stored_bytes, **self.caps.lua(), **move}
        answer, lagging = self._applied(self._transition, self._args(job_id, spec))
        outcome = Outcome(answer[0].decode())
        job = decode_job(answer[1]) if len(answer) > 1 else None
        if outcome in (Outcome.OK, Outcome.GAVE_UP) and job is not None:
            kind = "job.finished" if outcome is Outcome.GAVE_UP else event
            self._emit(Event(kind, job, reason, details or {}))
        return unless_lagging(lagging, Moved(outcome, job))

    def claim(self, job_id: str, delivery: str, runner: Runner, worker: str,
              max_deliveries: int, lease_s: float, runner_ttl_s: float = 6) -> Moved:
        """Run this delivery in `worker`: take the lease unless a live runner holds the job.
        `max_deliveries` counts only runs whose runner died (a dead runner's heartbeat lapses
        within runner_ttl_s, runs.RUNNER_TTL_S); BUSY while that is not known yet."""
        return self._move(job_id, Status.PROCESSING, allowed=ACTIVE, event="job.started",
                          delivery=delivery, claim={
                              "token": runner.token, "worker": worker, "pid": runner.pid,
                              "lease_ms": int(lease_s * 1000), "max_deliveries": max_deliveries,
                              "runner_ttl_s": runner_ttl_s})

    def renew(self, job_id: str, token: str, lease_s: float) -> str:
        """Extend the lease if this runner still owns the job: 'held', 'reacquired', 'lost'
        (another runner or delivery owns it) or 'done' (finished, deleted or expired)."""
        spec = {"token": token, "lease_ms": int(lease_s * 1000)}
        return self._renew(args=self._args(job_id, spec)).decode()

    def succeed(self, job_id: str, delivery: str, runner: str, result: dict[str, Any],
                processing_s: float) -> Job | None:
        """processing -> succeeded with its transcript; None when fenced out (or deleted)."""
        moved = self._move(job_id, Status.SUCCEEDED, allowed=[Status.PROCESSING],
                           event="job.finished", delivery=delivery, runner=runner,
                           set={"processing_s": processing_s}, result=json.dumps(result),
                           details={"model": result.get("model"),
                                    "audio_s": result.get("duration_s")})
        return moved.job if moved.outcome is Outcome.OK else None

    def fail(self, job_id: str, delivery: str, kind: ErrorType, detail: str,
             runner: str | None = None, status: Status = Status.FAILED) -> Job | None:
        """An active job ends failed (or cancelled) for this delivery; None when fenced out."""
        moved = self._move(job_id, status, allowed=ACTIVE, event="job.finished",
                           delivery=delivery, runner=runner,
                           set={"error": {"type": kind, "detail": detail}})
        return moved.job if moved.outcome is Outcome.OK else None

    def retry(self, job_id: str, delivery: str, owner: str | None = None) -> Job:
        """failed/cancelled -> queued under a new delivery; 409 otherwise, 410 without audio.
        With an owner, another tenant's job is a 404, checked in the same atomic step."""
        try:
            moved = self._move(job_id, Status.QUEUED, allowed=[Status.FAILED, Status.CANCELLED],
                               event="job.requeued", reason="retry", needs_audio=True,
                               set=_fresh_run(delivery, deliveries=0), owner=owner)
        except NotReplicated as lagging:
            # Requeued on the master (replicas lag): the job; refused: the error, as below.
            lagging.result = self._retried(job_id, lagging.result)
            raise
        return self._retried(job_id, moved)

    def _retried(self, job_id: str, moved: Moved) -> Job:
        if moved.outcome is Outcome.MISSING:
            raise not_found(job_id)
        if moved.outcome is Outcome.GONE:
            raise RecordingGone(f"the recording of task {job_id} was removed; submit it again")
        if moved.outcome in (Outcome.FULL, Outcome.QUEUE_FULL, Outcome.OWNER_FULL):
            raise self.caps.error(moved.outcome)
        if moved.outcome is not Outcome.OK or moved.job is None:
            status = moved.job.status if moved.job else "gone"
            what = "already succeeded" if status == Status.SUCCEEDED else f"is {status}"
            raise JobConflict(f"task {job_id} {what}; only a failed or cancelled task can be "
                              "retried")
        return moved.job

    def recover(self, job_id: str, delivery: str, new_delivery: str) -> Job | None:
        """processing -> queued when its runner is gone (an orphan); None if it lives."""
        moved = self._move(job_id, Status.QUEUED, allowed=[Status.PROCESSING],
                           event="job.requeued", reason="worker-lost", delivery=delivery,
                           dead_only=True, set=_fresh_run(new_delivery))
        return moved.job if moved.outcome is Outcome.OK else None

    def redispatch(self, job_id: str, delivery: str, new_delivery: str,
                   reason: str = "message-lost") -> Job | None:
        """queued -> queued under a new delivery, for a job whose message the broker lost.

        queued_at becomes now, when the new message joins the back of its queue: the
        stranded sweep tells by it where in the queue that message stands."""
        moved = self._move(job_id, Status.QUEUED, allowed=[Status.QUEUED],
                           event="job.requeued", reason=reason, delivery=delivery,
                           set={"celery_id": new_delivery, "queued_at": time.time()})
        return moved.job if moved.outcome is Outcome.OK else None

    def delete(self, job_id: str, owner: str | None = None) -> Job:
        """Remove the job, its recording, transcript, lease and index entries, for good. With an
        owner, another tenant's job is a 404 and stays (checked in the same atomic step)."""
        spec = {"id": job_id, "now": time.time(), "retention_s": self.retention_s,
                "owner": owner}
        answer, lagging = self._applied(self._remove, self._args("delete", spec))
        if answer[0] == b"missing":
            raise not_found(job_id)
        job = decode_job(answer[1])
        self._emit(Event("job.deleted", job))
        return unless_lagging(lagging, job)

    def expire(self, now: float | None = None, limit: int = 500) -> int:
        """Remove up to `limit` jobs that finished more than the retention period ago."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        return int(self._remove(args=self._args("expire", {"cutoff": cutoff, "limit": limit})))


def _fresh_run(delivery: str, **more: Any) -> dict[str, Any]:
    return {"celery_id": delivery, "queued_at": time.time(), "started_at": None,
            "finished_at": None, "processing_s": None, "worker": None, "worker_pid": None,
            "runner": None, "error": None, **more}
