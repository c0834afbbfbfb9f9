"""What the read-only endpoints report: health, queue, models and the dashboard snapshot.

Assembled here, once per request, from the job store, the cluster's heartbeats and the kept
figures, so the views only parse arguments and shape the answer.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from asr_service import webhooks
from asr_service.cluster import Cluster, WorkerInfo
from asr_service.figures import STATS_WINDOW_S, Figures, percentiles, summarize, throughput
from asr_service.jobs import JobStore, Status
from asr_service.live.relay import LiveStore
from asr_service.resources import tree_usage
from asr_service.service import JobService
from asr_service.settings import Settings

log = logging.getLogger(__name__)
LISTED = 200  # task ids listed by queue status, at most


@dataclass(frozen=True)
class Health:
    """Whether the service can take work (Redis answers) and finish it (a worker is ready)."""

    redis: bool
    workers_online: int
    reasons: list[str] = field(default_factory=list)
    workers_ready: bool = False

    @property
    def status(self) -> str:
        """ok, or degraded with the reasons."""
        return "degraded" if self.reasons else "ok"


@dataclass(frozen=True)
class QueueState:
    """The queue's depth, the task ids being run or taken, and the live workers."""

    queue: str
    depth: int
    active: list[str]
    reserved: list[str]
    workers: list[WorkerInfo]


@dataclass(frozen=True)
class ServedModel:
    """A model a worker group serves, on its queue."""

    id: str
    queue: str
    workers: int
    default: bool


@dataclass(frozen=True)
class ModelList:
    """The served models and the default one."""

    default: str
    items: list[ServedModel]


class ReadModel:
    """The service's state as the read-only endpoints show it."""

    def __init__(self, settings: Settings, store: JobStore, cluster: Cluster, figures: Figures,
                 jobs: JobService) -> None:
        self.settings = settings
        self.store = store
        self.cluster = cluster
        self.figures = figures
        self.jobs = jobs

    def health(self, now: float | None = None) -> Health:
        """Redis reachable, workers with the model loaded, webhook deliveries not overdue."""
        try:
            workers = self.cluster.workers()
            late = webhooks.overdue_s(self.store.redis, self.store.keys,
                                      time.time() if now is None else now)
        except redis.RedisError as exc:
            # The address and the driver's text are for the operator's log, not for anyone
            # who can reach this unauthenticated endpoint.
            log.warning("health: redis unreachable at %s: %s", self.settings.redis_url_display,
                        exc)
            return Health(redis=False, workers_online=0, reasons=["redis unreachable"])
        online = sum(1 for w in workers if w.engines_ready)
        reasons = []
        if workers and not online:
            reasons.append(f"{len(workers)} worker(s) online, still loading the model; "
                           "jobs are queued")
        elif not online:
            reasons.append("no worker online (start one with `make worker`); jobs are queued")
        if late > webhooks.OVERDUE_S:
            reasons.append(f"webhook deliveries wait unsent for {late:.0f} s: is a deliverer "
                           "running? (`make webhooks`)")
        return Health(redis=True, workers_online=online, reasons=reasons,
                      workers_ready=bool(online))

    def queue(self, owner: str | None) -> QueueState:
        """Depth and workers are everyone's; the task ids listed are the owner's (None: all)."""
        active = set(self.store.ids(Status.PROCESSING, limit=LISTED, owner=owner))
        taken = [i for i in self.cluster.taken(LISTED) if i not in active]
        return QueueState(queue=self.settings.queue_name, depth=self.cluster.queue_depth(),
                          active=sorted(active), reserved=self.store.owned(taken, owner),
                          workers=self.cluster.workers())

    def models(self) -> ModelList:
        """Every model a live worker serves (from the heartbeats), and the default one."""
        default = self.settings.model_id
        return ModelList(default=default, items=[
            ServedModel(id=model, queue=queue, workers=workers, default=model == default)
            for model, (queue, workers) in sorted(self.jobs.models().items())])

    def dashboard(self, owner: str | None, window_s: int, latest: int) -> dict[str, Any]:
        """Resources, queue, workers, latency and throughput over window_s, and the `latest`
        jobs: figures are everyone's, the jobs listed the owner's (None: all)."""
        snap = self.figures.snapshot(STATS_WINDOW_S)
        now = snap["now"]
        workers = self.cluster.workers()
        return {
            "ts": now,
            "window_s": window_s,
            "api": api_usage(),
            "workers": workers,
            "workers_online": len(workers),
            "active_tasks": self.store.running(),
            "live_sessions": LiveStore(self.store.redis, self.store.keys).open_sessions(),
            "queue_depth": self.cluster.queue_depth(),
            "submit_latency_s": percentiles(self.figures.submit_latency.since(now - window_s)),
            "end_to_end_s": percentiles(r[3] for r in snap["recent"] if r[0] >= now - window_s),
            **throughput(snap, window_s),
            "stats": summarize(snap),
            "latest_jobs": self.store.latest(latest, owner),
        }


def api_usage() -> dict[str, Any]:
    """This API host's CPU and memory, and those of the API's own processes."""
    me = psutil.Process()
    parent = me.parent()
    # Under gunicorn, count the master and all its workers; otherwise just this process.
    under_gunicorn = parent is not None and "gunicorn" in " ".join(parent.cmdline())
    cpu, rss, pids = tree_usage(parent.pid if under_gunicorn and parent else me.pid).sample()
    memory = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "host_cpu_percent": psutil.cpu_percent(None),
        "host_memory_percent": memory.percent,
        "host_memory_total_bytes": memory.total,
        "process_cpu_percent": cpu,
        "process_memory_rss_bytes": rss,
        "processes": len(pids),
    }
