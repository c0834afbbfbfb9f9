"""RFC 9457 problem+json for every error, and the one table from domain errors to statuses."""

from __future__ import annotations

import logging
import re
from typing import Any

import flask_smorest
import redis
from flask import Flask, Response, json, request
from kombu.exceptions import OperationalError
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import WebsocketMismatch

from asr_service import errors

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[errors.AsrError], int] = {
    errors.AudioInvalid: 422,
    errors.AudioTooLong: 422,
    errors.JobNotFound: 404,
    errors.ModelNotFound: 404,
    errors.UrlRefused: 422,
    errors.FetchFailed: 422,
    errors.JobConflict: 409,
    errors.IdempotencyMismatch: 422,
    errors.RecordingGone: 410,
    errors.QueueUnavailable: 503,
    errors.StorageFull: 503,
    errors.OutcomeUnknown: 503,
    errors.UploadsBusy: 503,
    errors.ProbeBusy: 503,
    errors.QueueFull: 503,
    errors.OwnerQueueFull: 429,
}
# Redis answers these while it cannot take writes for now (no replicas for
# min-replicas-to-write, a long script, a failover, a load, a cluster change): retry later.
# A script's error carries the code inside its text, so it is looked for as a word.
UNAVAILABLE_REPLY = re.compile(r"\b(NOREPLICAS|BUSY|MASTERDOWN|LOADING|TRYAGAIN|CLUSTERDOWN)\b")


class ProblemSchema(Schema):
    """An RFC 9457 problem document."""

    type = fields.String(metadata={"example": "/problems/task-not-found"})
    title = fields.String(metadata={"example": "Task not found"})
    status = fields.Integer(metadata={"example": 404})
    detail = fields.String()
    instance = fields.String()
    errors = fields.Dict(metadata={"description": "Field-by-field validation messages"})


OPENAI_PREFIX = "/v1/"


def problem(status: int, title: str, detail: str, slug: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """Build a problem+json response (OpenAI's error shape under /v1/, where its clients
    expect it)."""
    if request.path.startswith(OPENAI_PREFIX):
        return openai_error(status, detail, slug, headers, **extra)
    body = {"type": f"/problems/{slug}" if slug else "about:blank", "title": title,
            "status": status, "detail": detail, "instance": request.path, **extra}
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    return response


class OpenAIErrorBodySchema(Schema):
    """OpenAI's error object."""

    message = fields.String()
    type = fields.String(metadata={"example": "invalid_request_error"})
    param = fields.String(allow_none=True)
    code = fields.String(allow_none=True, metadata={"example": "model_not_found"})


class OpenAIErrorSchema(Schema):
    """An error as the OpenAI API (and so its clients) shape it."""

    error = fields.Nested(OpenAIErrorBodySchema)


def _openai_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status == 504:
        return "timeout"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. Invalid
    fields are a 400 there (its clients raise BadRequestError), not a 422."""
    fields_with_errors = list(extra.pop("errors", None) or {})
    if status == 422:
        status = 400
    if status == 401:
        code = "invalid_api_key"
    body = {"message": message, "type": _openai_type(status),
            "param": fields_with_errors[0] if fields_with_errors else None,
            "code": code.replace("-", "_") if code else None, **extra}
    response = Response(json.dumps({"error": body}), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


class Api(flask_smorest.Api):
    """flask-smorest's Api with problem+json errors instead of its default error body."""

    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error: HTTPException) -> Response:  # type: ignore[override]
        """Every HTTP error (abort, 404 routes, 413, 422 validation, 500) as problem+json."""
        if isinstance(error, InternalServerError):
            log.error("unhandled error", exc_info=getattr(error, "original_exception", None))
        data = getattr(error, "data", None) or {}
        extra: dict[str, Any] = {}
        detail = data.get("message") or error.description or error.name
        if "messages" in data:  # webargs validation: {location: {field: [messages]}}
            extra["errors"] = {f: m for loc in data["messages"].values() for f, m in loc.items()}
            detail = "invalid request: " + "; ".join(
                f"{field}: {' '.join(map(str, msgs))}" for field, msgs in extra["errors"].items()
            )
        code = error.code or 500
        if code == 429:
            detail = f"rate limit exceeded ({detail}); try again after Retry-After seconds"
        return problem(code, error.name, detail, slug=error.name.lower().replace(" ", "-"),
                       headers=data.get("headers"), **extra)


def register_error_handlers(app: Flask) -> None:
    """Answer domain and Redis errors as problems too (HTTP errors are the Api's)."""
    app.register_error_handler(errors.AsrError, handle_asr_error)
    # Unreachable, timing out, loading or read-only (failover) Redis is a 503; any other
    # Redis error is a bug of ours and stays a 500.
    for unavailable in (redis.ConnectionError, redis.TimeoutError,
                        redis.exceptions.ReadOnlyError, OperationalError):
        app.register_error_handler(unavailable, handle_redis_error)
    app.register_error_handler(redis.exceptions.OutOfMemoryError, handle_redis_full)
    app.register_error_handler(redis.exceptions.ResponseError, handle_redis_reply)
    app.register_error_handler(WebsocketMismatch, handle_websocket_mismatch)


def handle_websocket_mismatch(_: WebsocketMismatch) -> Response:
    """A plain request to a WebSocket route (426, say how to connect), or an upgrade to a
    route that is not one (400), instead of werkzeug's "could not understand"."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return problem(400, "Bad Request", "this path does not speak WebSocket: live sessions "
                       "are at /v1/realtime?intent=transcription (OpenAI) and / or /funasr "
                       "(FunASR)", slug="not-websocket")
    return problem(426, "Upgrade Required", "this path speaks WebSocket only: connect with a "
                   "WebSocket client (docs/live.md)", slug="upgrade-required",
                   headers={"Upgrade": "websocket", "Connection": "Upgrade"})


def handle_asr_error(error: errors.AsrError) -> Response:
    """Domain errors: the status comes from STATUS_BY_ERROR, never from domain code."""
    status = STATUS_BY_ERROR.get(type(error), 500)
    retry = getattr(error, "retry_after_s", None)
    extra = {"task_id": error.task_id} if isinstance(error, errors.OutcomeUnknown) else {}
    return problem(status, error.title, error.detail, slug=error.slug,
                   headers={"Retry-After": str(retry)} if retry else None, **extra)


def handle_redis_full(error: Exception) -> Response:
    """Redis reached its maxmemory (noeviction): a 503 to retry later, never a 500."""
    log.error("redis out of memory: %s", error)
    return problem(503, errors.StorageFull.title,
                   "Redis is out of memory (maxmemory); nothing was stored. Try again later, and "
                   "see docs/security.md on sizing MAX_STORED_AUDIO_MB against Redis maxmemory.",
                   slug=errors.StorageFull.slug,
                   headers={"Retry-After": str(errors.StorageFull.retry_after_s)})


def handle_redis_error(error: Exception) -> Response:
    """Redis down or timing out: a quick 503, never a 500 or a hang. The driver's text names
    Redis's address: it goes to the log, not to the client."""
    log.warning("redis unavailable: %s", error)
    return problem(503, errors.QueueUnavailable.title,
                   "Redis (queue, results and job store) is unreachable; try again later",
                   slug=errors.QueueUnavailable.slug, headers={"Retry-After": "5"})


def handle_redis_reply(error: redis.exceptions.ResponseError) -> Response:
    """A Redis error reply: the "not now" ones (UNAVAILABLE_REPLY) are a 503 to retry; any
    other is a bug of ours and stays a 500."""
    if isinstance(error, redis.exceptions.TryAgainError | redis.exceptions.ClusterDownError) \
            or UNAVAILABLE_REPLY.search(str(error)):
        return handle_redis_error(error)
    log.error("redis error reply", exc_info=error)
    return problem(500, "Internal Server Error", "the server failed on this request",
                   slug="internal-server-error")
