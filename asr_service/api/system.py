"""The service itself: health, queue status and statistics."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask.views import MethodView
from flask_smorest import Blueprint

from asr_service import webhooks
from asr_service.api import problems, services
from asr_service.api.access import scope
from asr_service.api.problems import PROBLEM_JSON, problem
from asr_service.api.schemas import (
    HealthArgsSchema,
    HealthProblemSchema,
    HealthSchema,
    ModelListSchema,
    QueueStatusSchema,
    StatsSchema,
)
from asr_service.jobs import Status

blp = Blueprint("system", __name__, url_prefix="/api/v1", description="Service state")
log = logging.getLogger(__name__)
LISTED = 200  # task ids listed by queue status, at most


@blp.route("/health")
class Health(MethodView):
    """Can the service take work, and can it finish it?"""

    @blp.arguments(HealthArgsSchema, location="query")
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthProblemSchema, content_type=PROBLEM_JSON,
                      description="Jobs cannot be accepted (Redis unreachable), or "
                                  "`ready=workers` and no worker has its model loaded")
    def get(self, args: dict[str, Any]) -> Any:
        """200 while jobs can be accepted (Redis answers): `ok`, or `degraded` with the reason
        when no worker has its model loaded (jobs queue and wait), or when webhook deliveries
        wait unclaimed (no deliverer runs). 503 only when jobs cannot be accepted; with
        `?ready=workers` (for deploy scripts) also while no worker is ready.
        """
        svc = services()
        try:
            workers = svc.cluster.workers()
            late = webhooks.overdue_s(svc.store.redis, svc.store.keys, time.time())
        except redis.RedisError as exc:
            # The address and the driver's text are for the operator's log, not for anyone
            # who can reach this unauthenticated endpoint.
            log.warning("health: redis unreachable at %s: %s", svc.settings.redis_url_display,
                        exc)
            reason = "redis unreachable"
            return problem(503, "Service unavailable", reason, slug="service-unavailable",
                           redis=False, workers_online=0, reasons=[reason])
        online = sum(1 for w in workers if w.engines_ready)
        reasons = []
        if workers and not online:
            reasons.append(f"{len(workers)} worker(s) online, still loading the model; "
                           "jobs are queued")
        elif not online:
            reasons.append("no worker online (start one with `make worker`); jobs are queued")
        not_ready = bool(reasons)
        if late > webhooks.OVERDUE_S:
            reasons.append(f"webhook deliveries wait unsent for {late:.0f} s: is a deliverer "
                           "running? (`make webhooks`)")
        body = {"status": "degraded" if reasons else "ok", "redis": True,
                "workers_online": online, "reasons": reasons}
        if not_ready and args.get("ready") == "workers":
            return problem(503, "No worker ready", "; ".join(reasons), slug="workers-not-ready",
                           **{k: v for k, v in body.items() if k != "status"})
        return body


@blp.route("/asr/queue/status")
class QueueStatus(MethodView):
    """What the queue and the workers are doing now."""

    @blp.response(200, QueueStatusSchema)
    @problems(blp, 503)
    def get(self) -> dict[str, Any]:
        """Queue depth, tasks being transcribed or taken by a worker, and online workers.

        Depth and workers are everyone's; the task ids listed are an API key's own (all for
        an admin key, or without keys)."""
        svc, owner = services(), scope()
        active = set(svc.store.ids(Status.PROCESSING, limit=LISTED, owner=owner))
        taken = [i for i in svc.cluster.taken(LISTED) if i not in active]
        return {"queue": svc.settings.queue_name, "depth": svc.cluster.queue_depth(),
                "active": sorted(active),
                "reserved": svc.store.owned(taken, owner),
                "workers": svc.cluster.workers()}


@blp.route("/stats")
class Stats(MethodView):
    """Totals and rates over the retained jobs."""

    @blp.response(200, StatsSchema)
    @problems(blp, 503)
    def get(self) -> dict[str, Any]:
        """Totals by status, audio seconds, average RTF, latency percentiles, throughput."""
        return services().figures.stats()


@blp.route("/models")
class Models(MethodView):
    """The models this service serves: one worker group and one queue each."""

    @blp.response(200, ModelListSchema)
    @problems(blp, 503)
    def get(self) -> dict[str, Any]:
        """Every model a live worker serves (from the heartbeats), and the default one; submit
        picks one with the `model` field."""
        svc = services()
        default = svc.settings.model_id
        return {"default": default, "items": [
            {"id": model, "queue": queue, "workers": workers, "default": model == default}
            for model, (queue, workers) in sorted(svc.jobs.models().items())]}
