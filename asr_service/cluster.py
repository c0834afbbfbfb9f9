"""What the cluster looks like from Redis: worker heartbeats, engine readiness, queue depth."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields

import redis

from asr_service import broker
from asr_service.keys import Keys

HEARTBEAT_TTL_S = 10  # a worker that missed ~5 heartbeats (2 s apart) counts as offline
ENGINE_MARK_TTL_S = 60  # a child that died stops being renewed and drops out
STALE_WORKER_S = 60  # a heartbeat older than this is removed from the hash


@dataclass(frozen=True)
class WorkerInfo:
    """A worker host process as it last reported itself."""

    hostname: str
    pid: int
    concurrency: int
    active: int
    model: str
    device: str
    last_seen: float
    cpu_percent: float | None = None
    """CPU of the worker's main process and its children (100 = one core busy)."""
    memory_rss_bytes: int | None = None
    """Resident memory of the main process and its children."""
    gpu_memory_bytes: int | None = None
    """GPU memory those processes hold; None without a GPU or when the driver cannot tell."""
    engines_ready: int = 0
    """Child processes that have loaded and warmed up the model (0 while starting)."""
    queue: str = ""
    """The queue this worker consumes: its model's."""
    engine: str = ""
    """The backend (ASR_ENGINE) its model runs on."""


_WORKER_FIELDS = {f.name for f in fields(WorkerInfo)}


class Cluster:
    """Reads and writes cluster state; workers publish, the API reads. No key scans: the
    heartbeats live in one hash, the broker's queue is read by its known key names."""

    def __init__(self, client: redis.Redis, queue_name: str, keys: Keys | None = None) -> None:
        self.redis = client
        self.queue_name = queue_name
        self.keys = keys or Keys()
        self.workers_key = self.keys.workers

    def queue_depth(self, queue: str | None = None) -> int:
        """Messages waiting in a broker queue (not yet taken by a worker)."""
        return broker.queue_depth(self.redis, queue or self.queue_name)

    def publish(self, info: WorkerInfo) -> None:
        """Record a worker heartbeat; entries not renewed for a minute are dropped."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.workers_key, info.hostname, json.dumps(asdict(info)))
        pipe.hgetall(self.workers_key)
        stale = [name for name, raw in pipe.execute()[1].items()
                 if json.loads(raw).get("last_seen", 0) < info.last_seen - STALE_WORKER_S]
        if stale:
            self.redis.hdel(self.workers_key, *stale)

    def engine_mark(self, node: str, pid: int) -> str:
        """The key a worker process sets (value: its device, TTL ENGINE_MARK_TTL_S) once its
        model is loaded, through its RunnerHeartbeat.keep, so that a write refused then is
        made later; its parent's heartbeat counts the marks of its live children.

        `node` is a random token of the worker's main process: pids alone collide between
        containers that share a hostname.
        """
        return self.keys.engine(node, pid)

    def engines_ready(self, node: str, pids: set[int]) -> int:
        """How many of these processes have loaded the model; renews their marks."""
        pipe = self.redis.pipeline(transaction=False)
        for pid in sorted(pids):
            pipe.expire(self.keys.engine(node, pid), ENGINE_MARK_TTL_S)
        return sum(bool(renewed) for renewed in pipe.execute())

    def withdraw(self, hostname: str) -> None:
        """Forget a worker that shuts down cleanly."""
        self.redis.hdel(self.workers_key, hostname)

    def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh, by hostname."""
        cutoff = time.time() - HEARTBEAT_TTL_S
        found = []
        for _, raw in sorted(self.redis.hgetall(self.workers_key).items()):
            # Fields this version does not know (a newer worker) are ignored, missing ones
            # default.
            values = json.loads(raw)
            if values.get("last_seen", 0) >= cutoff:
                found.append(WorkerInfo(**{k: v for k, v in values.items()
                                           if k in _WORKER_FIELDS}))
        return found

    def taken(self, limit: int = 200) -> list[str]:
        """Job ids of messages workers have taken and not yet acknowledged."""
        return broker.taken_jobs(self.redis, limit)
