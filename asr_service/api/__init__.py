"""The REST API: one blueprint per resource, problem+json errors, shared services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from flask import current_app
from flask_smorest import Blueprint

from asr_service.api.problems import PROBLEM_JSON, ProblemSchema
from asr_service.cluster import Cluster
from asr_service.figures import Figures
from asr_service.jobs import JobStore
from asr_service.service import JobService
from asr_service.settings import Settings

_ERROR_DESCRIPTIONS = {
    401: "Missing or wrong API key",
    404: "Unknown task id (never submitted, deleted or expired, or another API key's)",
    409: "The task is in a state that does not allow this",
    410: "The recording was removed by retention",
    413: "Upload larger than MAX_UPLOAD_MB",
    422: "Invalid field, not decodable / too long audio, or an Idempotency-Key reused with "
         "a different request",
    429: "Rate limit exceeded (RATE_LIMIT); see Retry-After",
    503: "Redis unreachable",
}


@dataclass(frozen=True)
class Services:
    """What the views need, built once per app from Settings."""

    settings: Settings
    store: JobStore
    jobs: JobService
    cluster: Cluster
    figures: Figures
    celery: Celery


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions["asr"]


def problems(blp: Blueprint, *codes: int) -> Callable[[Any], Any]:
    """Document the problem+json error responses a view can give."""

    def decorate(view: Any) -> Any:
        for code in codes:
            view = blp.alt_response(code, schema=ProblemSchema, content_type=PROBLEM_JSON,
                                    description=_ERROR_DESCRIPTIONS[code])(view)
        return view

    return decorate
