"""What the cluster looks like from Redis: queue depth and worker heartbeats."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from asr_service.jobs import PREFIX

HEARTBEAT_TTL_S = 10  # a worker that missed ~5 heartbeats (2 s apart) counts as offline


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


class Cluster:
    """Reads and writes cluster state; workers publish, the API reads."""

    def __init__(self, client: redis.Redis, queue_name: str) -> None:
        self.redis = client
        self.queue_name = queue_name

    @staticmethod
    def _worker_key(hostname: str) -> str:
        return f"{PREFIX}worker:{hostname}"

    def queue_depth(self) -> int:
        """Messages waiting in the broker queue (not yet taken by a worker)."""
        return int(self.redis.llen(self.queue_name))

    def publish(self, info: WorkerInfo) -> None:
        """Record a worker heartbeat that expires unless renewed."""
        self.redis.set(self._worker_key(info.hostname), json.dumps(asdict(info)),
                       ex=HEARTBEAT_TTL_S)

    def withdraw(self, hostname: str) -> None:
        """Forget a worker that shuts down cleanly."""
        self.redis.delete(self._worker_key(hostname))

    def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh, by hostname."""
        keys = sorted(self.redis.scan_iter(match=self._worker_key("*"), count=100))
        if not keys:
            return []
        found = [WorkerInfo(**json.loads(raw)) for raw in self.redis.mget(keys) if raw]
        cutoff = time.time() - HEARTBEAT_TTL_S
        return [w for w in found if w.last_seen >= cutoff]
