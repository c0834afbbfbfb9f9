"""The REST API: one blueprint per resource, problem+json errors, shared services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema

from asr_service.api.problems import PROBLEM_JSON, ProblemSchema
from asr_service.cluster import Cluster
from asr_service.figures import Figures
from asr_service.jobs import JobStore
from asr_service.readmodel import ReadModel
from asr_service.service import JobService
from asr_service.settings import Settings

ERROR_DESCRIPTIONS = {
    400: "Invalid field or audio (OpenAI's clients expect a 400 where /api/v1 answers 422)",
    401: "Missing or wrong API key",
    404: "Unknown task id (never submitted, deleted or expired, or another API key's)",
    409: "The task is in a state that does not allow this",
    410: "The recording was removed by retention",
    413: "Upload larger than MAX_UPLOAD_MB",
    422: "Invalid field, not decodable / too long audio, or an Idempotency-Key reused with "
         "a different request",
    429: "Rate limit exceeded (RATE_LIMIT), or this key's MAX_QUEUED_JOBS_PER_KEY jobs are "
         "queued or running; see Retry-After",
    500: "The transcription failed",
    503: "Redis unreachable",
    504: "Not finished within SYNC_TIMEOUT_S; `task_id` says where to fetch it later",
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
    readmodel: ReadModel


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions["asr"]


def problems(blp: Blueprint, *codes: int, schema: type[Schema] = ProblemSchema,
             content_type: str = PROBLEM_JSON,
             described: dict[int, str] | None = None) -> Callable[[Any], Any]:
    """Document the error responses a view can give: problem+json unless another schema
    (OpenAI's) is named; `described` overrides ERROR_DESCRIPTIONS for this view."""
    descriptions = {**ERROR_DESCRIPTIONS, **(described or {})}

    def decorate(view: Any) -> Any:
        for code in codes:
            view = blp.alt_response(code, schema=schema, content_type=content_type,
                                    description=descriptions[code])(view)
        return view

    return decorate
