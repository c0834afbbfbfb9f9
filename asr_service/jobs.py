"""Job records, history and recordings in Redis, with retention beyond MAX_RECORDINGS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import redis

from asr_service.errors import JobConflict, JobNotFound, RecordingGone

QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "processing", "succeeded", "failed", "cancelled",
)
STATUSES = (QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE = frozenset({QUEUED, PROCESSING})
PREFIX = "asr:"


@dataclass(frozen=True)
class Job:
    """One transcription job as stored in Redis (the transcript lives in the result backend)."""

    id: str
    status: str
    celery_id: str
    filename: str
    content_type: str
    size_bytes: int
    duration_s: float
    language: str = "auto"
    hotwords: list[str] = field(default_factory=list)
    queue: str = "asr"
    created_at: float = 0.0
    queued_at: float = 0.0
    attempts: int = 0
    deliveries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    processing_s: float | None = None
    worker: str | None = None
    worker_pid: int | None = None
    error: dict[str, str] | None = None
    audio_removed_at: float | None = None

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
    return {k: json.dumps(v) for k, v in values.items()}


def decode_job(raw: dict[bytes, bytes]) -> Job:
    values = {k.decode(): json.loads(v) for k, v in raw.items()}
    return Job(**{k: v for k, v in values.items() if k in _FIELDS})


class JobStore:
    """Job state shared by the API and the workers; Redis is the only channel between them."""

    def __init__(self, client: redis.Redis, retention_s: int, max_recordings: int) -> None:
        self.redis = client
        self.retention_s = retention_s
        self.max_recordings = max_recordings

    @staticmethod
    def job_key(job_id: str) -> str:
        """The hash holding a job record."""
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def audio_key(job_id: str) -> str:
        """The string holding a job's recording."""
        return f"{PREFIX}audio:{job_id}"

    @staticmethod
    def lease_key(job_id: str) -> str:
        """Present (with a TTL the runner renews) while a worker process runs the job."""
        return f"{PREFIX}lease:{job_id}"

    _history = f"{PREFIX}history"
    _recordings = f"{PREFIX}recordings"
    running = f"{PREFIX}running"

    def create(self, job: Job, audio: bytes) -> Job:
        """Store a new queued job and its recording atomically."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.audio_key(job.id), audio, ex=self.retention_s)
        pipe.hset(self.job_key(job.id), mapping=encode_fields(asdict(job)))
        pipe.expire(self.job_key(job.id), self.retention_s)
        pipe.zadd(self._history, {job.id: job.created_at})
        pipe.zadd(self._recordings, {job.id: job.created_at})
        pipe.zremrangebyscore(self._history, 0, time.time() - 2 * self.retention_s)
        pipe.execute()
        return job

    def get(self, job_id: str) -> Job:
        """The job, or JobNotFound for an id never seen, deleted or expired."""
        raw = self.redis.hgetall(self.job_key(job_id))
        if not raw:
            raise JobNotFound(f"no task with id {job_id} (never submitted, deleted or expired)")
        return decode_job(raw)

    def exists(self, job_id: str) -> bool:
        """Whether a job record exists."""
        return bool(self.redis.exists(self.job_key(job_id)))

    def audio(self, job_id: str) -> bytes:
        """The original upload; RecordingGone once retention removed it."""
        self.get(job_id)  # an unknown id is a 404 before a removed recording is a 410
        data = self.redis.get(self.audio_key(job_id))
        if data is None:
            raise RecordingGone(
                f"the recording of task {job_id} was removed "
                f"(only the newest {self.max_recordings} recordings are kept)"
            )
        return data

    def history(self, limit: int, offset: int, status: str | None = None) -> tuple[int, list[Job]]:
        """Newest-first page of jobs and the total that match.

        Without a status only the page's records are read; the total may still count a few
        records that expired since their index entry was last seen.
        """
        if status:  # the status lives in each record: this reads the whole history
            ids = [i.decode() for i in self.redis.zrevrange(self._history, 0, -1)]
            jobs = [j for j in self._load_many(ids) if j.status == status]
            return len(jobs), jobs[offset : offset + limit]
        while True:
            ids = [i.decode() for i in
                   self.redis.zrevrange(self._history, offset, offset + limit - 1)]
            jobs = self._load_many(ids)  # drops expired ids from the index
            if len(jobs) == len(ids):  # else the range shifted: read it again
                return int(self.redis.zcard(self._history)), jobs

    def recent(self, count: int) -> list[Job]:
        """The newest `count` jobs (for statistics)."""
        ids = [i.decode() for i in self.redis.zrevrange(self._history, 0, count - 1)]
        return self._load_many(ids)

    def _load_many(self, ids: list[str]) -> list[Job]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.job_key(job_id))
        jobs, expired = [], []
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                jobs.append(decode_job(raw))
            else:
                expired.append(job_id)
        if expired:
            self.redis.zrem(self._history, *expired)
            self.redis.zrem(self._recordings, *expired)
        return jobs

    def mark_finished(self, job_id: str, celery_id: str, status: str,
                      error: dict[str, str] | None = None,
                      processing_s: float | None = None) -> Job | None:
        """processing -> succeeded/failed/cancelled for the current delivery."""

        def check(job: Job) -> dict[str, Any] | None:
            if job.celery_id != celery_id or job.status not in ACTIVE:
                return None
            now = time.time()
            spent = processing_s if processing_s is not None else now - (job.started_at or now)
            return {"status": status, "finished_at": now, "processing_s": spent, "error": error}

        return self.transition(job_id, check, refresh_ttl=True, release=True)

    def requeue(self, job_id: str, celery_id: str) -> Job:
        """failed/cancelled -> queued under a new Celery id; 409 while active, 410 if no audio."""

        def check(job: Job) -> dict[str, Any]:
            if job.status in ACTIVE:
                raise JobConflict(f"task {job_id} is {job.status}; only a finished task can be "
                                  "retried")
            if job.status == SUCCEEDED:
                raise JobConflict(f"task {job_id} already succeeded")
            if not job.audio_available:
                raise RecordingGone(f"the recording of task {job_id} was removed; submit it again")
            return {"status": QUEUED, "celery_id": celery_id, "queued_at": time.time(),
                    "deliveries": 0, "started_at": None, "finished_at": None,
                    "processing_s": None, "worker": None, "worker_pid": None, "error": None}

        job = self.transition(job_id, check, missing_ok=False, refresh_ttl=True, release=True)
        assert job is not None
        return job

    def delete(self, job_id: str) -> Job:
        """Remove the job, its recording and its history entries."""
        job = self.get(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.job_key(job_id), self.audio_key(job_id), self.lease_key(job_id))
        pipe.srem(self.running, job_id)
        pipe.zrem(self._history, job_id)
        pipe.zrem(self._recordings, job_id)
        pipe.execute()
        return job

    def prune_recordings(self) -> list[str]:
        """Remove the oldest recordings beyond max_recordings, skipping queued or running jobs."""
        excess = self.redis.zcard(self._recordings) - self.max_recordings
        removed: list[str] = []
        if excess <= 0:
            return removed
        for raw_id in self.redis.zrange(self._recordings, 0, -1):
            if len(removed) >= excess:
                break
            if self._remove_recording(raw_id.decode()):
                removed.append(raw_id.decode())
        return removed

    def _remove_recording(self, job_id: str) -> bool:
        def remove(pipe: redis.client.Pipeline) -> bool:
            raw = pipe.hgetall(self.job_key(job_id))
            if raw and decode_job(raw).status in ACTIVE:
                return False
            pipe.multi()
            pipe.delete(self.audio_key(job_id))
            pipe.zrem(self._recordings, job_id)
            if raw:
                pipe.hset(self.job_key(job_id), "audio_removed_at", json.dumps(time.time()))
            return True

        return self.redis.transaction(remove, self.job_key(job_id), value_from_callable=True)

    def transition(self, job_id: str, check: Callable[[Job], dict[str, Any] | None],
                   missing_ok: bool = True, refresh_ttl: bool = False,
                   release: bool = False) -> Job | None:
        """Apply check(job)'s updates atomically (WATCH/MULTI); None if check declines.

        release: the job no longer runs anywhere (drop its lease and running-set entry).
        """
        key = self.job_key(job_id)

        def apply(pipe: redis.client.Pipeline) -> Job | None:
            raw = pipe.hgetall(key)
            if not raw:
                if missing_ok:
                    return None
                raise JobNotFound(f"no task with id {job_id} (never submitted, deleted or expired)")
            updates = check(decode_job(raw))
            if updates is None:
                return None
            pipe.multi()
            pipe.hset(key, mapping=encode_fields(updates))
            if refresh_ttl:
                pipe.expire(key, self.retention_s)
                pipe.expire(self.audio_key(job_id), self.retention_s)
            if release:
                pipe.delete(self.lease_key(job_id))
                pipe.srem(self.running, job_id)
            return replace(decode_job(raw), **updates)

        return self.redis.transaction(apply, key, value_from_callable=True)
