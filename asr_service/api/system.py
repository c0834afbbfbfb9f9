"""The service itself: health, queue status, statistics and the served models."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from asr_service.api import problems, services
from asr_service.api.access import scope
from asr_service.api.problems import PROBLEM_JSON, problem
from asr_service.api.system_schemas import (
    HealthArgsSchema,
    HealthProblemSchema,
    HealthSchema,
    ModelListSchema,
    QueueStatusSchema,
    StatsSchema,
)
from asr_service.readmodel import ModelList, QueueState

blp = Blueprint("system", __name__, url_prefix="/api/v1", description="Service state")


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
        health = services().readmodel.health()
        facts = {"redis": health.redis, "workers_online": health.workers_online,
                 "reasons": health.reasons}
        if not health.redis:
            return problem(503, "Service unavailable", "; ".join(health.reasons),
                           slug="service-unavailable", **facts)
        if not health.workers_ready and args.get("ready") == "workers":
            return problem(503, "No worker ready", "; ".join(health.reasons),
                           slug="workers-not-ready", **facts)
        return health


@blp.route("/asr/queue/status")
class QueueStatus(MethodView):
    """What the queue and the workers are doing now."""

    @blp.response(200, QueueStatusSchema)
    @problems(blp, 503)
    def get(self) -> QueueState:
        """Queue depth, tasks being transcribed or taken by a worker, and online workers.

        Depth and workers are everyone's; the task ids listed are an API key's own (all for
        an admin key, or without keys)."""
        return services().readmodel.queue(scope())


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
    def get(self) -> ModelList:
        """Every model a live worker serves (from the heartbeats), and the default one; submit
        picks one with the `model` field."""
        return services().readmodel.models()
