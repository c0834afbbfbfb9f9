"""The live /dashboard page and the JSON snapshot it polls every 2 s."""

from __future__ import annotations

import socket
from typing import Any

import psutil
from flask import Blueprint as FlaskBlueprint
from flask import render_template
from flask.views import MethodView
from flask_smorest import Blueprint

from asr_service.api import problems, services
from asr_service.api.access import scope
from asr_service.api.metrics import SubmitLatency
from asr_service.api.schemas import DashboardSchema, job_view
from asr_service.figures import STATS_WINDOW_S, percentiles, summarize, throughput
from asr_service.resources import tree_usage

page = FlaskBlueprint("dashboard_page", __name__)
blp = Blueprint("dashboard", __name__, url_prefix="/api/v1",
                description="Live figures for the dashboard")
WINDOW_S = 60
LATEST_JOBS = 15
POLL_MS = 2000


@page.route("/dashboard")
def dashboard() -> str:
    """The page: charts drawn by the vendored Chart.js from /api/v1/dashboard."""
    return render_template("dashboard.html", poll_ms=POLL_MS, window_s=WINDOW_S)


@blp.route("/dashboard")
class Dashboard(MethodView):
    """One snapshot of the service's load."""

    @blp.response(200, DashboardSchema)
    @problems(blp, 503)
    def get(self) -> dict[str, Any]:
        """Resources, queue, workers, latency and throughput now, plus the latest jobs."""
        svc = services()
        snap = svc.figures.snapshot(STATS_WINDOW_S)
        now = snap["now"]
        workers = svc.cluster.workers()
        return {
            "ts": now,
            "window_s": WINDOW_S,
            "api": api_usage(),
            "workers": workers,
            "workers_online": len(workers),
            "active_tasks": sum(w.active for w in workers),
            "queue_depth": svc.cluster.queue_depth(),
            "submit_latency_s": percentiles(SubmitLatency(svc.store.redis).since(now - WINDOW_S)),
            "end_to_end_s": percentiles(r[3] for r in snap["recent"] if r[0] >= now - WINDOW_S),
            **throughput(snap, WINDOW_S),
            "stats": summarize(snap),
            # Figures are everyone's; the jobs listed are the key's own (all for an admin key).
            "latest_jobs": [job_view(j) for j in svc.store.latest(LATEST_JOBS, scope())],
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
