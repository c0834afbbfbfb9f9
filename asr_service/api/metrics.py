"""Prometheus /metrics, read from Redis so every gunicorn process (and host) agrees.

Why not prometheus_client's usual per-process metrics: under gunicorn each worker process
would count only the requests it served, and a scrape reaches one of them at random. The
multiprocess mode fixes that for one host only, through a shared directory. Instead every
figure is kept in Redis where it happens and read here at a fixed cost (no record scans):
- jobs by status: the sizes of the lifecycle's status indexes;
- end-to-end latency and RTF: cumulative histograms the lifecycle scripts update in the same
  atomic step as a job's success (figures.py); audio seconds of the retained succeeded jobs;
- submit latency: observed by the API (figures.SubmitLatency), shared by all API processes;
- queue depth and workers: the broker's list length and the workers' heartbeat hash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from asr_service.api import services
from asr_service.cluster import Cluster
from asr_service.figures import (
    END_TO_END_BUCKETS,
    RTF_BUCKETS,
    Figures,
    histogram,
    live_latencies,
)
from asr_service.live.relay import LiveStore

log = logging.getLogger(__name__)
blp = Blueprint("metrics", __name__)

SUBMIT_ENDPOINT = "asr.Submit"


class ClusterCollector:
    """Reads the cluster's figures from Redis on every scrape."""

    def __init__(self, figures: Figures, cluster: Cluster, live: LiveStore) -> None:
        self.figures = figures
        self.cluster = cluster
        self.live = live

    def collect(self) -> Iterator[Metric]:
        """The metric families; only asr_redis_up (0) when Redis does not answer."""
        try:
            families = list(self._families())
        except redis.RedisError as exc:
            log.warning("metrics: redis unreachable: %s", exc)
            families = []
        yield GaugeMetricFamily("asr_redis_up", "1 when Redis answered this scrape",
                                value=1 if families else 0)
        yield from families

    def _families(self) -> Iterator[Metric]:
        snap = self.figures.snapshot(0, with_recent=False)  # /metrics needs no recent timings
        by_status = GaugeMetricFamily("asr_jobs", "Retained jobs by status", labels=["status"])
        for status, count in snap["counts"].items():
            by_status.add_metric([str(status)], count)
        yield by_status
        yield GaugeMetricFamily("asr_queue_depth", "Jobs waiting in the broker queue",
                                value=self.cluster.queue_depth())
        workers = self.cluster.workers()
        yield GaugeMetricFamily("asr_workers_online", "Workers with a fresh heartbeat",
                                value=len(workers))
        yield GaugeMetricFamily("asr_engines_ready", "Worker processes with the model loaded",
                                value=sum(w.engines_ready for w in workers))
        yield from self._worker_families(workers)
        kept = snap["kept"]
        for name, metric, doc, bounds in (
                ("e2e", "asr_job_end_to_end_seconds", "Queued to succeeded", END_TO_END_BUCKETS),
                ("rtf", "asr_job_rtf", "Real-time factor (processing / audio seconds) of "
                 "succeeded jobs", RTF_BUCKETS)):
            buckets, total = histogram(kept, name, bounds)
            yield HistogramMetricFamily(metric, doc, buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("asr_audio_seconds", "Audio seconds of succeeded retained jobs",
                                value=max(0.0, kept.get("retained_audio_s", 0.0)))
        yield GaugeMetricFamily("asr_diarized_audio_seconds",
                                "Audio seconds of succeeded retained jobs that asked for diarize",
                                value=max(0.0, kept.get("retained_diarized_audio_s", 0.0)))
        yield GaugeMetricFamily("asr_live_sessions", "Live transcription sessions open now",
                                value=self.live.open_sessions())
        events = CounterMetricFamily("asr_live_session_events", "Live sessions by what happened: "
                                     "opened, taken_over (another process resumed it), "
                                     "handed_over (its worker shut down), resent (a "
                                     "session no process held), refused_limit, "
                                     "refused_no_worker", labels=["event"])
        for event, count in sorted(self.live.figures().items()):
            events.add_metric([event], count)
        yield events
        for kind, latency in live_latencies(self.live.client, self.live.keys).items():
            buckets, total = latency.histogram()
            yield HistogramMetricFamily(
                f"asr_live_{kind}_latency_seconds", f"Live sessions: from the API relaying the "
                f"audio a {kind} was decoded from to the API receiving it", buckets=buckets,
                sum_value=total)
        buckets, total = self.figures.submit_latency.histogram()
        yield HistogramMetricFamily("asr_submit_latency_seconds",
                                    "Time the API took to accept a submission (202)",
                                    buckets=buckets, sum_value=total)

    @staticmethod
    def _worker_families(workers: list) -> Iterator[Metric]:
        specs = [("asr_worker_active_tasks", "Tasks a worker is running", "active"),
                 ("asr_worker_cpu_percent", "CPU of a worker's processes (100 = one core)",
                  "cpu_percent"),
                 ("asr_worker_memory_bytes", "Resident memory of a worker's processes",
                  "memory_rss_bytes"),
                 ("asr_worker_gpu_memory_bytes", "GPU memory of a worker's processes",
                  "gpu_memory_bytes")]
        for name, doc, attr in specs:
            family = GaugeMetricFamily(name, doc, labels=["worker"])
            for w in workers:
                if getattr(w, attr) is not None:
                    family.add_metric([w.hostname], getattr(w, attr))
            yield family


@blp.route("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of the cluster's figures."""
    svc = services()
    registry = CollectorRegistry(auto_describe=False)
    live = LiveStore(svc.store.redis, svc.store.keys)
    registry.register(ClusterCollector(svc.figures, svc.cluster, live))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Serve /metrics and time every accepted submission."""
    app.register_blueprint(blp)
    app.before_request(_start_timer)
    app.after_request(_observe_submit)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _observe_submit(response: Response) -> Response:
    if request.endpoint == SUBMIT_ENDPOINT and response.status_code == 202:
        try:
            services().figures.submit_latency.observe(time.perf_counter() - g.request_started)
        except redis.RedisError as exc:  # the job is queued: never fail the request for this
            log.warning("submit latency not recorded: %s", exc)
    return response
