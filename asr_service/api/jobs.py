"""Jobs: submit, result, history, audio download, retry and delete.

With API keys, each key is a tenant: every view here shows a key only its own jobs (access.scope),
and another tenant's task id answers the same 404 as an unknown one.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from typing import Any

from flask import Response, make_response, send_file, url_for
from flask.views import MethodView
from werkzeug.datastructures import FileStorage

from asr_service import formats
from asr_service.api import idempotency, inflight, problems, services
from asr_service.api.access import owner_id, scope
from asr_service.api.multipart import MultipartBlueprint
from asr_service.api.schemas import (
    HistoryArgsSchema,
    HistorySchema,
    JobAnswer,
    JobResultSchema,
    ResultArgsSchema,
    RetriedSchema,
    SubmitResponseSchema,
    SubmitSchema,
)
from asr_service.api.speakers import diarize_spec
from asr_service.errors import JobConflict
from asr_service.service import Upload

SUBMIT_HEADERS = {
    "Location": {"schema": {"type": "string"}, "description": "Where to poll the result"},
    "Idempotent-Replayed": {"schema": {"type": "string"},
                            "description": "true when an earlier submit's task is returned"},
}
DELETE_HEADERS = {
    "Replication": {"schema": {"type": "string", "enum": ["pending"]},
                    "description": "pending: the master deleted it but fewer than "
                                   "REDIS_MIN_REPLICAS replicas acknowledged it in time"},
}
blp = MultipartBlueprint("asr", __name__, url_prefix="/api/v1/asr",
                         description="Transcription jobs")


@blp.route("/submit")
class Submit(MethodView):
    """Queue a recording for transcription."""

    @blp.arguments(SubmitSchema, location="files")
    @blp.response(202, SubmitResponseSchema, headers=SUBMIT_HEADERS)
    @problems(blp, 401, 404, 413, 422, 429, 503,
              described={404: "`model` names a model no worker serves"})
    def post(self, form: dict[str, Any]) -> Any:
        """Upload audio (multipart field `audio`, or `audio_url`); answers 202 with the task
        id at once.

        With an `Idempotency-Key` header, a repeated submit (same key, same client, within
        the retention period) returns the first task instead of creating a second one; the
        same key with a different upload or fields is a 422. With `callback_url`, a signed
        webhook is POSTed there when the job ends.
        """
        jobs = services().jobs
        key = idempotency.requested_key(services().store.keys)
        upload = Upload(b"", None, form["language"], form["hotwords"], form.get("callback_url"),
                        form.get("model"), form.get("audio_url"), diarize_spec(form))
        if upload.source_url is None:
            audio: FileStorage = form["audio"]
            submitted = jobs.submit(replace(upload, data=audio.read(), filename=audio.filename),
                                    key, owner=owner_id())
        # The cheap checks first: a refused callback, an unknown model or a replay costs no
        # download (nor its share of MAX_INFLIGHT_UPLOAD_MB).
        elif not (submitted := jobs.precheck(upload, key)):  # type: ignore[assignment]
            inflight.reserve(services().settings.max_upload_bytes)
            fetched = jobs.download(upload.source_url)
            submitted = jobs.submit(replace(upload, data=fetched.data, filename=fetched.filename),
                                    key, owner=owner_id())
        location = url_for("asr.Result", task_id=submitted.job.id)
        headers = {"Location": location}
        if submitted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return (JobAnswer(submitted.job, replication=submitted.replication,
                          status_url=location), 202, headers)


@blp.route("/result/<uuid:task_id>")
class Result(MethodView):
    """A job's state, and its transcript once it succeeded."""

    @blp.arguments(ResultArgsSchema, location="query")
    @blp.response(200, JobResultSchema)
    @problems(blp, 404, 409, 422, 503)
    def get(self, args: dict[str, Any], task_id: uuid.UUID) -> Any:
        """Status queued/processing/succeeded/failed/cancelled, timings, result or error.

        `?wait=S` holds the request until the job ends (at most S seconds, S <= 60) and
        answers the moment it does. `?format=txt|srt|vtt` answers the transcript itself as
        text or subtitles (a 409 while the job has not succeeded).
        """
        jobs, owner = services().jobs, scope()
        job, result = (jobs.wait(str(task_id), args["wait"], owner) if args["wait"]
                       else jobs.result(str(task_id), owner))
        if args["format"] == "json":
            return JobAnswer(job, result)
        if result is None:
            raise JobConflict(f"task {job.id} is {job.status}; its transcript exists once it "
                              "succeeded")
        body, content_type = formats.render(result, args["format"])
        response = make_response(body)
        response.content_type = content_type
        if args["format"] in ("srt", "vtt"):
            response.headers["Content-Disposition"] = (
                f'inline; filename="{job.id}.{args["format"]}"')
        return response


@blp.route("/history")
class History(MethodView):
    """Retained jobs, newest first: an API key's own, or all (admin key, or no keys)."""

    @blp.arguments(HistoryArgsSchema, location="query")
    @blp.response(200, HistorySchema)
    @problems(blp, 422, 503)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of jobs (an API key's own; all for an admin key); filter by status."""
        total, jobs = services().store.history(args["limit"], args["offset"], args.get("status"),
                                               owner=scope())
        return {"total": total, "limit": args["limit"], "offset": args["offset"], "items": jobs}


@blp.route("/audio/<uuid:task_id>")
class Audio(MethodView):
    """The original upload."""

    @blp.response(200, content_type="application/octet-stream",
                  description="The uploaded bytes, with their content type and filename")
    @problems(blp, 404, 410, 503)
    def get(self, task_id: uuid.UUID) -> Response:
        """Download the recording as it was uploaded."""
        store = services().store
        job = store.get(str(task_id), scope())  # another tenant's: 404 before any 410
        data = store.audio(str(task_id))
        response = send_file(io.BytesIO(data), mimetype=job.content_type, as_attachment=True,
                             download_name=job.filename)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


@blp.route("/retry/<uuid:task_id>")
class Retry(MethodView):
    """Run a failed or cancelled job again."""

    @blp.response(202, RetriedSchema)
    @problems(blp, 404, 409, 410, 429, 503)
    def post(self, task_id: uuid.UUID) -> JobAnswer:
        """Re-enqueue; 409 while the job is queued, processing or already succeeded."""
        job, replication = services().jobs.retry(str(task_id), scope())
        return JobAnswer(job, replication=replication)


@blp.route("/task/<uuid:task_id>")
class Task(MethodView):
    """A job as a resource."""

    @blp.response(204, headers=DELETE_HEADERS)
    @problems(blp, 404, 503)
    def delete(self, task_id: uuid.UUID) -> Any:
        """Cancel the job if queued or running, then delete its recording, record and
        transcript; nothing of it comes back afterwards."""
        if replication := services().jobs.delete(str(task_id), scope()):
            return "", 204, {"Replication": replication}
        return None
