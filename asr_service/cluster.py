"""What the cluster looks like from Redis: queue depth, worker heartbeats and their resources."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from dataclasses import asdict, dataclass, fields

import psutil
import redis

from asr_service.jobs import PREFIX

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


class ProcessTreeUsage:
    """CPU and resident memory of a process and its descendants, measured between calls."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        # The same Process objects must be asked again: cpu_percent() compares with their
        # previous call (a process seen for the first time counts 0 %).
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, int, set[int]]:
        """(CPU percent summed over the tree, RSS bytes summed, the pids in the tree)."""
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            tree = [self.root]
        cpu, rss, known = 0.0, 0, {}
        for proc in tree:
            proc = self._known.get(proc.pid, proc)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue  # it ended between listing and reading
            known[proc.pid] = proc
        self._known = known
        return round(cpu, 1), rss, set(known)


@functools.cache
def tree_usage(pid: int) -> ProcessTreeUsage:
    """The (kept) sampler of this process tree."""
    return ProcessTreeUsage(pid)


def gpu_memory_bytes(pids: set[int]) -> int | None:
    """GPU memory held by these processes, per the NVIDIA driver (nvidia-smi).

    Asked of the driver rather than torch: the worker's main process never imports torch, and
    its children (which hold the models) only answer for themselves. None when there is no
    nvidia-smi or it lists none of these pids (e.g. a container without the host's pid space).
    """
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=2, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = 0
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        try:
            if int(pid) in pids:
                used += int(float(mib)) * 1024 * 1024
        except ValueError:
            continue  # "[N/A]" on some drivers
    return used or None


class Cluster:
    """Reads and writes cluster state; workers publish, the API reads. No key scans: the
    heartbeats live in one hash, the broker's queue is read by its known key names."""

    workers_key = f"{PREFIX}workers"
    unacked_key = "unacked"  # kombu's Redis transport: messages taken by a worker, not acked
    priority_sep = "\x06\x16"  # kombu: the list of priority P of queue Q is Q + sep + P

    def __init__(self, client: redis.Redis, queue_name: str) -> None:
        self.redis = client
        self.queue_name = queue_name

    def queue_depth(self, queue: str | None = None) -> int:
        """Messages waiting in a broker queue (not yet taken by a worker)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self._queue_lists(queue or self.queue_name):
            pipe.llen(key)
        return int(sum(pipe.execute()))

    def _queue_lists(self, queue: str) -> list[str]:
        return [queue, *(f"{queue}{self.priority_sep}{p}" for p in (3, 6, 9))]

    def publish(self, info: WorkerInfo) -> None:
        """Record a worker heartbeat; entries not renewed for a minute are dropped."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.workers_key, info.hostname, json.dumps(asdict(info)))
        pipe.hgetall(self.workers_key)
        stale = [name for name, raw in pipe.execute()[1].items()
                 if json.loads(raw).get("last_seen", 0) < info.last_seen - STALE_WORKER_S]
        if stale:
            self.redis.hdel(self.workers_key, *stale)

    @staticmethod
    def _engine_key(node: str, pid: int) -> str:
        return f"{PREFIX}engine:{node}:{pid}"

    def engine_loaded(self, node: str, pid: int, device: str) -> None:
        """A worker child says its model is loaded (its parent's heartbeat keeps this fresh).

        `node` is a random token of the worker's main process: pids alone collide between
        containers that share a hostname.
        """
        self.redis.set(self._engine_key(node, pid), device, ex=ENGINE_MARK_TTL_S)

    def engines_ready(self, node: str, pids: set[int]) -> int:
        """How many of these processes have loaded the model; renews their marks."""
        pipe = self.redis.pipeline(transaction=False)
        for pid in sorted(pids):
            pipe.expire(self._engine_key(node, pid), ENGINE_MARK_TTL_S)
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
        """Job ids of messages workers have taken and not yet acknowledged (O(unacked): the
        workers' prefetch and delayed retries)."""
        deliveries = {_task_id(raw, wrapped=True) for raw in self.redis.hvals(self.unacked_key)}
        # A delivery id is the job id, or "<job id>.<why>.<nonce>" (runs.new_delivery).
        return sorted({d.partition(".")[0] for d in deliveries if d})[:limit]


def _task_id(raw: bytes, wrapped: bool = False) -> str | None:
    """The Celery task id in a kombu message ([message, exchange, routing key] if wrapped)."""
    try:
        message = json.loads(raw)
        if wrapped:
            message = message[0]
        return message["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
