"""The live /dashboard page and the JSON snapshot it polls every 2 s."""

from __future__ import annotations

from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import render_template
from flask.views import MethodView
from flask_smorest import Blueprint

from asr_service.api import problems, services
from asr_service.api.access import scope
from asr_service.api.system_schemas import DashboardSchema

page = FlaskBlueprint("dashboard_page", __name__)
blp = Blueprint("dashboard", __name__, url_prefix="/api/v1",
                description="Live figures for the dashboard")
WINDOW_S = 60
LATEST_JOBS = 15
POLL_MS = 2000


@page.route("/live")
def live_page() -> str:
    """Live captions of the microphone through /v1/realtime (static/live.js)."""
    return render_template("live.html")


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
        """Resources, queue, workers, latency and throughput now, plus the latest jobs.

        Figures are everyone's; the jobs listed are the key's own (all for an admin key)."""
        return services().readmodel.dashboard(scope(), WINDOW_S, LATEST_JOBS)
