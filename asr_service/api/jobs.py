"""Jobs: submit, result, history, audio download, retry and delete."""

from __future__ import annotations

import io
import logging
import mimetypes
import time
import uuid
from typing import Any

from flask import Request, Response, send_file, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict, FileStorage

from asr_service.api import idempotency, problems, services
from asr_service.api.schemas import (
    HistoryArgsSchema,
    HistorySchema,
    JobResultSchema,
    JobSchema,
    SubmitResponseSchema,
    SubmitSchema,
    job_view,
)
from asr_service.audio import AudioInfo, probe
from asr_service.errors import AudioTooLong, QueueUnavailable
from asr_service.jobs import ACTIVE, FAILED, QUEUED, SUCCEEDED, Job
from asr_service.logs import log_event
from asr_service.settings import Settings


class _MultipartParser(FlaskParser):
    """Reads form fields together with files, so one schema documents the multipart body.

    flask-smorest documents each location separately, and a `form` location becomes an
    OpenAPI 2 `formData` parameter that OpenAPI 3 does not allow.
    """

    def load_files(self, req: Request, schema: Schema) -> MultiDictProxy:
        return MultiDictProxy(CombinedMultiDict([req.files, req.form]), schema)


class _Blueprint(Blueprint):
    ARGUMENTS_PARSER = _MultipartParser()


SUBMIT_HEADERS = {
    "Location": {"schema": {"type": "string"}, "description": "Where to poll the result"},
    "Idempotent-Replayed": {"schema": {"type": "string"},
                            "description": "true when an earlier submit's task is returned"},
}
blp = _Blueprint("asr", __name__, url_prefix="/api/v1/asr", description="Transcription jobs")
log = logging.getLogger(__name__)
TASK = "asr.transcribe"


def _display_name(upload: FileStorage) -> str:
    # Only ever shown and offered as a download name; nothing is written to disk under it.
    name = (upload.filename or "audio").replace("\\", "/").rsplit("/", 1)[-1]
    return name.strip()[:255] or "audio"


def _content_type(upload: FileStorage, name: str, info: AudioInfo) -> str:
    if upload.mimetype and upload.mimetype != "application/octet-stream":
        return upload.mimetype
    return mimetypes.guess_type(name)[0] or f"audio/{info.format}"


def _enqueue(job_id: str, celery_id: str) -> None:
    try:
        svc = services()
        svc.celery.send_task(TASK, args=[job_id], task_id=celery_id,
                             queue=svc.settings.queue_name)
    except Exception as exc:  # kombu raises several types when the broker is unreachable
        log.warning("enqueue failed: %s", exc, extra={"job_id": job_id})
        raise QueueUnavailable(f"the job could not be queued: {exc}") from exc


@blp.route("/submit")
class Submit(MethodView):
    """Queue a recording for transcription."""

    @blp.arguments(SubmitSchema, location="files")
    @blp.response(202, SubmitResponseSchema, headers=SUBMIT_HEADERS)
    @problems(blp, 401, 413, 422, 429, 503)
    def post(self, form: dict[str, Any]) -> Any:
        """Upload audio (multipart field `audio`); answers 202 with the task id at once.

        With an `Idempotency-Key` header, a repeated submit (same key, same client, within
        the retention period) returns the first task instead of creating a second one.
        """
        svc = services()
        key = idempotency.requested_key()
        earlier = key and idempotency.earlier_task(svc.store.redis, key)
        if earlier and svc.store.exists(earlier):
            return _accepted(earlier, replayed=True)
        upload: FileStorage = form["audio"]
        data = upload.read()
        job, info = _new_job(form, upload, data, svc.settings)
        if key and (holder := idempotency.reserve(svc.store.redis, key, job.id,
                                                  svc.settings.result_retention_s)) != job.id:
            return _accepted(holder, replayed=True)  # a concurrent submit with the key won
        svc.store.create(job, data)
        try:
            _enqueue(job.id, job.id)
        except QueueUnavailable:
            svc.store.delete(job.id)  # nothing half-made: the client is told to try again
            if key:
                idempotency.release(svc.store.redis, key)
            raise
        svc.store.prune_recordings()
        log_event("job.submitted", job.id, audio_s=job.duration_s, size_bytes=len(data),
                  format=info.format, codec=info.codec)
        return _accepted(job.id)


def _new_job(form: dict[str, Any], upload: FileStorage, data: bytes,
             settings: Settings) -> tuple[Job, AudioInfo]:
    """A queued job for a probed upload; 422 when it is not audio or too long."""
    info = probe(data)
    if info.duration_s > settings.max_audio_seconds:
        raise AudioTooLong(f"the recording lasts {info.duration_s:.0f} s; the limit is "
                           f"MAX_AUDIO_SECONDS={settings.max_audio_seconds}")
    job_id, now, name = str(uuid.uuid4()), time.time(), _display_name(upload)
    job = Job(id=job_id, status=QUEUED, celery_id=job_id, filename=name,
              content_type=_content_type(upload, name, info), size_bytes=len(data),
              duration_s=round(info.duration_s, 3), language=form["language"],
              hotwords=form["hotwords"], queue=settings.queue_name,
              created_at=now, queued_at=now)
    return job, info


def _accepted(task_id: str, replayed: bool = False) -> tuple[dict[str, Any], int, dict[str, str]]:
    location = url_for("asr.Result", task_id=task_id)
    status = services().store.get(task_id).status if replayed else QUEUED
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return {"task_id": task_id, "status": status, "status_url": location}, 202, headers


@blp.route("/result/<uuid:task_id>")
class Result(MethodView):
    """A job's state, and its transcript once it succeeded."""

    @blp.response(200, JobResultSchema)
    @problems(blp, 404, 503)
    def get(self, task_id: uuid.UUID) -> dict[str, Any]:
        """Status queued/processing/succeeded/failed/cancelled, timings, result or error."""
        svc = services()
        job = svc.store.get(str(task_id))
        result = None
        if job.status == SUCCEEDED:
            meta = svc.celery.backend.get_task_meta(job.celery_id)
            result = meta.get("result") if meta.get("status") == "SUCCESS" else None
        return job_view(job, result)


@blp.route("/history")
class History(MethodView):
    """All retained jobs, newest first."""

    @blp.arguments(HistoryArgsSchema, location="query")
    @blp.response(200, HistorySchema)
    @problems(blp, 422, 503)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of jobs; filter by status."""
        total, jobs = services().store.history(args["limit"], args["offset"], args.get("status"))
        return {"total": total, "limit": args["limit"], "offset": args["offset"],
                "items": [job_view(j) for j in jobs]}


@blp.route("/audio/<uuid:task_id>")
class Audio(MethodView):
    """The original upload."""

    @blp.response(200, content_type="application/octet-stream",
                  description="The uploaded bytes, with their content type and filename")
    @problems(blp, 404, 410, 503)
    def get(self, task_id: uuid.UUID) -> Response:
        """Download the recording as it was uploaded."""
        store = services().store
        data = store.audio(str(task_id))
        job = store.get(str(task_id))
        return send_file(io.BytesIO(data), mimetype=job.content_type, as_attachment=True,
                         download_name=job.filename)


@blp.route("/retry/<uuid:task_id>")
class Retry(MethodView):
    """Run a failed or cancelled job again."""

    @blp.response(202, JobSchema)
    @problems(blp, 404, 409, 410, 503)
    def post(self, task_id: uuid.UUID) -> dict[str, Any]:
        """Re-enqueue; 409 while the job is queued, processing or already succeeded."""
        svc = services()
        job_id = str(task_id)
        celery_id = f"{job_id}.retry.{uuid.uuid4().hex[:8]}"
        job = svc.store.requeue(job_id, celery_id)
        try:
            _enqueue(job_id, celery_id)
        except QueueUnavailable as exc:
            svc.store.mark_finished(job_id, celery_id, FAILED,
                                    error={"type": exc.slug, "detail": exc.detail})
            raise
        log_event("job.retried", job_id, attempt=job.attempts + 1)
        return job_view(job)


@blp.route("/task/<uuid:task_id>")
class Task(MethodView):
    """A job as a resource."""

    @blp.response(204)
    @problems(blp, 404, 503)
    def delete(self, task_id: uuid.UUID) -> None:
        """Cancel the job if queued or running, then delete its recording, record and result."""
        svc = services()
        job = svc.store.delete(str(task_id))
        if job.status in ACTIVE:
            # SIGUSR1 raises SoftTimeLimitExceeded inside the task: the job stops, the worker
            # process (and its loaded model) lives on. A queued job is dropped on arrival.
            svc.celery.control.revoke(job.celery_id, terminate=True, signal="SIGUSR1")
        svc.celery.backend.forget(job.celery_id)
        log_event("job.deleted", job.id, status=job.status)
