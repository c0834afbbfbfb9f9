"""Settings of the Redis connection: broker, result backend and job store."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RedisSettings:
    """Redis: broker, result backend and job store (the only thing workers need to reach)"""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    """Broker, result backend and job store: one URL (may carry a password:
    redis://:secret@host:6379/0), or REDIS_HOST and REDIS_PORT when REDIS_URL is not set."""
    redis_password: str = field(default="", repr=False)
    """Redis password (requirepass), added to the URL when it carries none; `make run` starts its
    own Redis with it, and compose requires one. Empty: no password (fine on loopback only).
    Under Sentinel, the master's (and its replicas') password."""
    redis_sentinels: str = ""
    """host:port,host:port of Redis Sentinels (automatic failover). Set, the sentinels name the
    master (REDIS_URL's host and port are ignored), and the broker, result backend, job store,
    rate limiter and heartbeats all follow a failover by themselves."""
    redis_sentinel_master: str = "asr"
    """The master's name as the sentinels monitor it (`sentinel monitor <name> ...`)."""
    redis_sentinel_password: str = field(default="", repr=False)
    """The sentinels' own password (their requirepass), if they have one."""
    redis_min_replicas: int = 0
    """Replicas that must hold each job state change (submit, start, end, delete) before it
    counts (Redis WAIT, up to 1 s; fewer: the API answers 503, a worker retries). 1 with
    Sentinel makes an acknowledged job survive the loss of the master (see docs/scaling.md,
    Redis Sentinel). 0: no waiting."""
    queue_name: str = "asr"
    """Celery queue of the default model: the API sends jobs without a `model` there, and the
    workers of this host consume it. A second worker group (another model) gets its own queue,
    e.g. QUEUE_NAME=asr-whisper; the API learns each model's queue from the workers'
    heartbeats."""
