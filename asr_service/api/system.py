"""The service itself: health, queue status and statistics."""

from __future__ import annotations

from typing import Any

import redis
from flask.views import MethodView
from flask_smorest import Blueprint

from asr_service.api import problems, services
from asr_service.api.problems import PROBLEM_JSON, problem
from asr_service.api.schemas import (
    HealthProblemSchema,
    HealthSchema,
    QueueStatusSchema,
    StatsSchema,
)
from asr_service.stats import summarize

blp = Blueprint("system", __name__, url_prefix="/api/v1", description="Service state")
STATS_JOBS = 10_000


@blp.route("/health")
class Health(MethodView):
    """Can the service take and finish work?"""

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthProblemSchema, content_type=PROBLEM_JSON,
                      description="Redis unreachable or no worker online (problem+json)")
    def get(self) -> Any:
        """200 when Redis answers and a worker has its model loaded; 503 with the reasons."""
        svc = services()
        reasons: list[str] = []
        try:
            svc.store.redis.ping()
            workers = svc.cluster.workers()
            redis_ok = True
        except redis.RedisError as exc:
            redis_ok, workers = False, []
            reasons.append(f"redis unreachable at {svc.settings.redis_url_display}: {exc}")
        online = sum(1 for w in workers if w.engines_ready)
        if redis_ok and workers and not online:
            reasons.append(f"{len(workers)} worker(s) online, still loading the model")
        elif redis_ok and not online:
            reasons.append("no worker online: start one with `make worker`")
        body = {"redis": redis_ok, "workers_online": online, "reasons": reasons}
        if reasons:
            return problem(503, "Service unavailable", "; ".join(reasons),
                           slug="service-unavailable", **body)
        return {"status": "ok", **body}


@blp.route("/asr/queue/status")
class QueueStatus(MethodView):
    """What the queue and the workers are doing now."""

    @blp.response(200, QueueStatusSchema)
    @problems(blp, 503)
    def get(self) -> dict[str, Any]:
        """Queue depth, tasks being transcribed or reserved, and online workers."""
        svc = services()
        workers = svc.cluster.workers()
        active: list[str] = []
        reserved: list[str] = []
        if workers:
            inspect = svc.celery.control.inspect(timeout=1.0, limit=len(workers))
            active = _job_ids(inspect.active())
            reserved = _job_ids(inspect.reserved())
        return {"queue": svc.settings.queue_name, "depth": svc.cluster.queue_depth(),
                "active": active, "reserved": reserved, "workers": workers}


def _job_ids(replies: dict[str, list[dict[str, Any]]] | None) -> list[str]:
    return sorted(t["args"][0] for tasks in (replies or {}).values() for t in tasks if t["args"])


@blp.route("/stats")
class Stats(MethodView):
    """Totals and rates over the retained jobs."""

    @blp.response(200, StatsSchema)
    @problems(blp, 503)
    def get(self) -> dict[str, Any]:
        """Totals by status, audio seconds, average RTF, latency percentiles, throughput."""
        return summarize(services().store.recent(STATS_JOBS))
