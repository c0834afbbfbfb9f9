"""What the cluster looks like from Redis: queue depth, worker heartbeats and their resources."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, fields

import psutil
import redis

from asr_service.jobs import PREFIX

HEARTBEAT_TTL_S = 10  # a worker that missed ~5 heartbeats (2 s apart) counts as offline
ENGINE_MARK_TTL_S = 60  # a child that died stops being renewed and drops out


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
    engines_ready: int = 0
    """Child processes that have loaded and warmed up the model (0 while starting)."""
    """GPU memory those processes hold; None without a GPU or when the driver cannot tell."""


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

    @staticmethod
    def _engine_key(pid: int) -> str:
        return f"{PREFIX}engine:{socket.gethostname()}:{pid}"

    def engine_loaded(self, pid: int, device: str) -> None:
        """A worker child says its model is loaded (its parent's heartbeat keeps this fresh)."""
        self.redis.set(self._engine_key(pid), device, ex=ENGINE_MARK_TTL_S)

    def engines_ready(self, pids: set[int]) -> int:
        """How many of these processes have loaded the model; renews their marks."""
        ordered = sorted(pids)
        pipe = self.redis.pipeline(transaction=False)
        for pid in ordered:
            pipe.expire(self._engine_key(pid), ENGINE_MARK_TTL_S)
        return sum(bool(renewed) for renewed in pipe.execute())

    def withdraw(self, hostname: str) -> None:
        """Forget a worker that shuts down cleanly."""
        self.redis.delete(self._worker_key(hostname))

    def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh, by hostname."""
        keys = sorted(self.redis.scan_iter(match=self._worker_key("*"), count=100))
        if not keys:
            return []
        # Fields this version does not know (a newer worker) are ignored, missing ones default.
        found = [WorkerInfo(**{k: v for k, v in json.loads(raw).items() if k in _WORKER_FIELDS})
                 for raw in self.redis.mget(keys) if raw]
        cutoff = time.time() - HEARTBEAT_TTL_S
        return [w for w in found if w.last_seen >= cutoff]
