"""Job records as stored in Redis, and every read of them (the writes are lifecycle.py's)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import redis

from asr_service.errors import JobNotFound, RecordingGone
from asr_service.keys import Keys as Keys  # re-exported: the key names live in keys.py


class Status(StrEnum):
    """Where a job is in its life; only lifecycle.Lifecycle moves it."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorType(StrEnum):
    """Why a job failed or was cancelled, as `error.type` tells the client."""

    AUDIO_INVALID = "audio-invalid"
    AUDIO_TOO_LONG = "audio-too-long"
    TRANSCRIPTION_FAILED = "transcription-failed"
    TIME_LIMIT = "time-limit-exceeded"
    WORKER_LOST = "worker-lost"
    CANCELLED = "cancelled"
    INTERNAL = "internal-error"


STATUSES = tuple(Status)
ACTIVE = frozenset({Status.QUEUED, Status.PROCESSING})


def indexes(keys: Keys, owner: str | None = None) -> list[str]:
    """Every zset a job's id may sit in (with a tenant's own ones when owner is given)."""
    found = [keys.history, keys.finished, keys.done_audio, *map(keys.status, STATUSES)]
    if owner:
        found += [keys.owner_history(owner),
                  *(keys.owner_status(owner, status) for status in STATUSES)]
    return found


@dataclass(frozen=True)
class Job:
    """One transcription job as stored in Redis (its transcript is stored next to it)."""

    id: str
    status: Status
    celery_id: str
    """The current delivery: only the Celery message with this id may run or finish the job."""
    filename: str
    content_type: str
    size_bytes: int
    duration_s: float
    language: str = "auto"
    hotwords: list[str] = field(default_factory=list)
    diarization: dict[str, int] | None = None
    """None, or what diarization was asked (DiarizeSpec.to_record: {} or speaker counts)."""
    queue: str = "asr"
    model: str = ""
    """The id of the model asked for (its worker group consumes `queue`)."""
    created_at: float = 0.0
    queued_at: float = 0.0
    attempts: int = 0
    deliveries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    processing_s: float | None = None
    worker: str | None = None
    worker_pid: int | None = None
    runner: str | None = None
    """Token of the worker process that holds the current run."""
    error: dict[str, str] | None = None
    audio_removed_at: float | None = None
    callback_url: str | None = None
    """Where a signed webhook is POSTed when the job ends (checked by the SSRF guard)."""
    owner: str = ""
    """The tenant that submitted it: "key:" + the first 16 hex of sha256(API key), or "" when
    the API runs without API_KEYS (one tenant)."""
    webhook: dict[str, Any] | None = None
    """The latest webhook delivery: id, type, status pending/delivered/failed, attempts, error."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    @property
    def audio_available(self) -> bool:
        """Whether the original recording is still stored."""
        return self.audio_removed_at is None

    @property
    def queue_wait_s(self) -> float | None:
        """Seconds between (re)queueing and the start of processing."""
        return None if self.started_at is None else max(0.0, self.started_at - self.queued_at)

    @property
    def rtf(self) -> float | None:
        """Real-time factor: processing time over audio duration."""
        if self.processing_s is None or not self.duration_s:
            return None
        return self.processing_s / self.duration_s


_FIELDS = {f.name for f in fields(Job)}


def encode_fields(values: dict[str, Any]) -> dict[str, str]:
    """A record's fields as stored: each value JSON-encoded."""
    return {k: json.dumps(v) for k, v in values.items()}


def decode_job(raw: dict[bytes, bytes] | list[bytes]) -> Job:
    """A Job from HGETALL's answer (a dict, or the flat list a script returns)."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    values = {k.decode(): json.loads(v) for k, v in raw.items()}
    return Job(**{k: v for k, v in values.items() if k in _FIELDS})


def visible(job: Job, owner: str | None) -> bool:
    """Whether a tenant (None: every tenant, an admin or a keyless API) may see the job."""
    return owner is None or job.owner == owner


def not_found(job_id: str) -> JobNotFound:
    """The error for an id that has no record."""
    return JobNotFound(f"no task with id {job_id} (never submitted, deleted or expired)")


class JobStore:
    """Reads job state shared by the API and the workers; every read is O(1) or O(page)."""

    def __init__(self, client: redis.Redis, max_recordings: int, keys: Keys | None = None) -> None:
        self.redis = client
        self.max_recordings = max_recordings
        self.keys = keys or Keys()

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job, or JobNotFound for an id never seen, deleted or expired, or (with an owner)
        another tenant's: the same answer, so ids cannot be probed."""
        raw = self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            raise not_found(job_id)
        job = decode_job(raw)
        if not visible(job, owner):
            raise not_found(job_id)
        return job

    def exists(self, job_id: str) -> bool:
        """Whether a job record exists."""
        return bool(self.redis.exists(self.keys.job(job_id)))

    def audio(self, job_id: str) -> bytes:
        """The original upload; RecordingGone once retention removed it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.keys.job(job_id))
        pipe.get(self.keys.audio(job_id))
        exists, data = pipe.execute()
        if not exists:  # an unknown id is a 404 before a removed recording is a 410
            raise not_found(job_id)
        if data is None:
            raise RecordingGone(
                f"the recording of task {job_id} was removed "
                f"(only the newest {self.max_recordings} recordings are kept)"
            )
        return data

    def transcript(self, job: Job) -> dict[str, Any] | None:
        """The normalized transcript of a succeeded job (None otherwise)."""
        if job.status != Status.SUCCEEDED:
            return None
        raw = self.redis.get(self.keys.result(job.id))
        return json.loads(raw) if raw else None

    def history(self, limit: int, offset: int, status: str | None = None,
                owner: str | None = None) -> tuple[int, list[Job]]:
        """Newest-first page of jobs (all, or one status) and the total that match; with an
        owner, only that tenant's (None or '': everyone's, as without API keys).

        Reads only the page's records, from the history index or the status's own index (the
        tenant's own ones with an owner).
        """
        if owner:
            index = (self.keys.owner_status(owner, status) if status
                     else self.keys.owner_history(owner))
        else:
            index = self.keys.status(status) if status else self.keys.history
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            total, raw_ids = pipe.execute()
            ids = [i.decode() for i in raw_ids]
            jobs = self._load_many(ids, owner=owner)  # drops ids whose record expired
            if len(jobs) == len(ids):  # else the range shifted: read it again
                return int(total), jobs

    def running(self) -> int:
        """How many jobs are processing (a live session's task is not a job)."""
        return int(self.redis.zcard(self.keys.status(Status.PROCESSING)))

    def latest(self, count: int, owner: str | None = None) -> list[Job]:
        """The newest `count` jobs (of one tenant with an owner)."""
        return self.history(count, 0, owner=owner)[1]

    def ids(self, status: Status, limit: int = -1,
            created_before: float | None = None, owner: str | None = None) -> list[str]:
        """Ids of jobs in one status, oldest first (only those created before a time; only one
        tenant's with an owner)."""
        key = self.keys.owner_status(owner, status) if owner else self.keys.status(status)
        if created_before is not None:
            raw = self.redis.zrangebyscore(key, "-inf", f"({created_before}",
                                           start=0, num=limit)
        else:
            raw = self.redis.zrange(key, 0, -1 if limit < 0 else limit - 1)
        return [i.decode() for i in raw]

    def load_many(self, ids: list[str]) -> list[Job]:
        """The records of these ids that still exist, in order."""
        return self._load_many(ids, prune=False)

    def owned(self, ids: list[str], owner: str | None) -> list[str]:
        """Those of these ids whose job a tenant may see (None: all of them), in order."""
        if owner is None or not ids:
            return list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.keys.job(job_id), "owner")
        return [job_id for job_id, raw in zip(ids, pipe.execute(), strict=True)
                if raw is not None and json.loads(raw) == owner]

    def _load_many(self, ids: list[str], prune: bool = True,
                   owner: str | None = None) -> list[Job]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        jobs, expired = [], []
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                jobs.append(decode_job(raw))
            else:
                expired.append(job_id)
        if expired and prune:  # an index entry outlived its record (TTL backstop): drop it
            # The record (and so its owner) is gone: a tenant's own indexes are pruned when
            # that tenant's page meets the id. Not from `finished` and `recordings:done`:
            # through them the retention sweep and the pruning give back the bytes it counts.
            pipe = self.redis.pipeline(transaction=False)
            for index in indexes(self.keys, owner):
                if index in (self.keys.finished, self.keys.done_audio):
                    continue
                pipe.zrem(index, *expired)
            pipe.execute()
        return jobs
