"""Settings of worker processes, job time limits, uploads, budgets and retention."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSettings:
    """Workers"""

    worker_count: int = 1
    """Worker processes `make worker` / `make run` start on this host, each with its own model
    (Celery concurrency)."""
    task_time_limit_s: int = 3600
    """Hard limit for one transcription (seconds): the worker process is killed and replaced,
    the job marked failed."""
    task_soft_time_limit_s: int = 0
    """Soft limit: the job stops cleanly and is marked failed; the process and its model live
    on. 0 means 30 s before the hard limit; a value not below the hard limit disables it."""
    job_lease_s: int = 15
    """A running job holds a lease its worker process renews; when the process dies, the job is
    handed to another worker once the lease lapses (seconds)."""
    max_deliveries: int = 3
    """A job whose worker process died this many times while running it is marked failed
    (worker-lost: a "poison" recording), so it cannot take workers down forever."""
    worker_max_tasks_per_child: int = 0
    """Replace a worker process after this many jobs (0: never). Each replacement reloads the
    model."""
    worker_max_memory_mb: int = 12288
    """Replace a worker process when a job leaves it above this resident memory in MiB (0:
    never)."""
    worker_ready_file: str = ""
    """A file the worker creates once a model is loaded and removes when it shuts down (empty:
    none): a Kubernetes readiness probe `test -f` on it means "model loaded", not "process
    started" (deploy/k8s)."""


@dataclass(frozen=True)
class LimitSettings:
    """Uploads, budgets and retention"""

    max_upload_mb: int = 100
    """Largest upload in MiB; bigger requests get 413."""
    max_inflight_upload_mb: int = 128
    """MiB of request bodies (and audio_url downloads) one API process holds at once, reserved
    from Content-Length before a body is read (MAX_UPLOAD_MB for a chunked body or an
    audio_url). Past it: 503 with Retry-After, the body unread. Sized so API_WORKERS=2 stay
    well under 1 GB; at least MAX_UPLOAD_MB (refused at start)."""
    max_audio_seconds: int = 4 * 3600
    """Longest recording in seconds; longer ones get 422."""
    max_recordings: int = 1000
    """Recordings kept in Redis; the oldest are removed beyond this (never one still queued or
    running)."""
    max_stored_audio_mb: int = 2048
    """Budget for all recordings held in Redis, in MB (0: none). Finished jobs' recordings go
    first, oldest first; when queued and running jobs' recordings alone, each also counted ~3 KB
    (JOB_OVERHEAD_BYTES: its record and Celery message), would exceed it, submit and retry
    answer 503 with Retry-After and store nothing. Must be above MAX_UPLOAD_MB (refused at
    start). Keep Redis maxmemory above it (REDIS_MAXMEMORY for the Redis `make run` and compose
    start, default 3gb): about this budget x 1.2 + 512 MB."""
    max_queued_jobs: int = 50000
    """Jobs queued or running at once, all clients together; beyond it submit and retry answer
    503 with Retry-After (0: no cap)."""
    max_queued_jobs_per_key: int = 5000
    """Jobs queued or running at once per API key (all clients count as one without API_KEYS);
    beyond it 429 with Retry-After (0: no cap; at most MAX_QUEUED_JOBS, refused at start)."""
    result_retention_s: int = 7 * 24 * 3600
    """How long job records and transcripts are kept (seconds; default 7 days)."""
