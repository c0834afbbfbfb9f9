"""Marshmallow schemas: request arguments and the documented shape of every response."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask_smorest.fields import Upload
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema
from werkzeug.datastructures import FileStorage

from asr_service.api.problems import ProblemSchema
from asr_service.formats import FORMATS
from asr_service.jobs import STATUSES, Job

_LANGUAGE = re.compile(r"^(auto|[a-z]{2,3}(-[A-Za-z0-9]{2,8})?)$")
MAX_HOTWORDS = 100


def language_field() -> fields.String:
    """The `language` form field (submit and the OpenAI endpoint)."""
    return fields.String(
        load_default="auto",
        validate=validate.Regexp(_LANGUAGE, error="use 'auto' or a language code such as 'zh'"),
        metadata={"description": "Language code such as zh or en; auto lets the model decide"},
    )


class SubmitFormSchema(Schema):
    """Optional form fields sent next to the audio file."""

    language = language_field()
    model = fields.String(validate=validate.Length(min=1, max=200), metadata={
        "description": "A served model's id (GET /api/v1/models); default: the default model"})
    hotwords = fields.String(
        load_default="",
        validate=validate.Length(max=2000),
        metadata={"description": "Words to favour, separated by spaces, newlines or commas "
                                 "(also ， and 、)"},
    )

    @post_load
    def split_hotwords(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Turn the hotwords string into a list."""
        words = [w for w in re.split(r"[\s,，、]+", data["hotwords"]) if w]
        if len(words) > MAX_HOTWORDS:
            raise ValidationError(f"at most {MAX_HOTWORDS} hotwords", "hotwords")
        data["hotwords"] = words
        return data


class FileUpload(Upload):
    """An uploaded file; a plain form field of the same name is a 422, not a crash."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, FileStorage):
            raise ValidationError("must be a file (multipart file part), not a text field")
        return value


MAX_WAIT_S = 60
_URL = validate.Length(max=2048)


class SubmitSchema(SubmitFormSchema):
    """The multipart body: the recording in field `audio` (or `audio_url`), plus the optional
    fields."""

    audio = FileUpload(metadata={"description": "wav, flac, ogg/opus, mp3, m4a, webm"})
    audio_url = fields.String(validate=_URL, metadata={
        "description": "Instead of `audio`: an http(s) URL the API downloads (public addresses "
                       "only unless WEBHOOK_ALLOW_PRIVATE; MAX_UPLOAD_MB and "
                       "AUDIO_URL_TIMEOUT_S apply)"})
    callback_url = fields.String(validate=_URL, metadata={
        "description": "An http(s) URL that receives a signed POST (Standard Webhooks) when the "
                       "job ends: job.succeeded, job.failed or job.cancelled"})

    @validates_schema
    def one_source(self, data: dict[str, Any], **_: Any) -> None:
        """Exactly one of audio and audio_url."""
        if ("audio" in data) == ("audio_url" in data):
            raise ValidationError("send the recording as `audio` (a file part) or as "
                                  "`audio_url`, exactly one of them", "audio")


class ResultArgsSchema(Schema):
    """Long-poll and output format of a result."""

    wait = fields.Float(load_default=0, validate=validate.Range(0, MAX_WAIT_S), metadata={
        "description": f"Seconds (<= {MAX_WAIT_S}) to hold the request until the job ends; "
                       "it answers as soon as it does"})
    format = fields.String(load_default="json", validate=validate.OneOf(FORMATS), metadata={
        "description": "json (the job), or the transcript as txt, srt or vtt (409 until the job "
                       "succeeded)"})


class HistoryArgsSchema(Schema):
    """Pagination and filter of the job history."""

    limit = fields.Integer(load_default=20, validate=validate.Range(1, 200))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, 1_000_000_000))
    status = fields.String(validate=validate.OneOf([str(s) for s in STATUSES]))


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class SegmentSchema(Schema):
    """A stretch of speech, times in seconds."""

    start = fields.Float()
    end = fields.Float()
    text = fields.String()


class WordSchema(Schema):
    """A word, times in seconds."""

    word = fields.String()
    start = fields.Float()
    end = fields.Float()


class TranscriptSchema(Schema):
    """The normalized transcript of a succeeded job."""

    text = fields.String()
    segments = fields.List(fields.Nested(SegmentSchema))
    language = fields.String()
    model = fields.String()
    duration_s = fields.Float()
    processing_s = fields.Float()
    rtf = fields.Float(allow_none=True)
    words = fields.List(fields.Nested(WordSchema), metadata={
        "description": "Only from engines with word timestamps (faster-whisper)"})


class JobErrorSchema(Schema):
    """Why a job failed."""

    type = fields.String()
    detail = fields.String()


class WebhookStateSchema(Schema):
    """The latest webhook delivery of a job with a callback_url."""

    id = fields.String(metadata={"description": "webhook-id header of every attempt"})
    type = fields.String(metadata={"example": "job.succeeded"})
    status = fields.String(validate=validate.OneOf(["pending", "delivered", "failed"]))
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    last_attempt_at = fields.Float(allow_none=True)
    next_attempt_at = fields.Float(allow_none=True)


def replication_field() -> fields.String:
    """Present only in the answer to a submit or retry that replicas did not acknowledge."""
    return fields.String(validate=validate.OneOf(["pending"]), metadata={
        "description": "Only when REDIS_MIN_REPLICAS is set and fewer replicas acknowledged "
                       "the change in time: `pending`. The master holds it, so the job runs "
                       "(the sweep sends it if its dispatch failed); a failover before the "
                       "replicas catch up could lose it."})


class JobSchema(Schema):
    """A job: its state, timings, and the error once failed."""

    task_id = fields.String()
    status = fields.String(validate=validate.OneOf([str(s) for s in STATUSES]))
    filename = fields.String()
    content_type = fields.String()
    size_bytes = fields.Integer()
    duration_s = fields.Float()
    language = fields.String()
    hotwords = fields.List(fields.String())
    model = fields.String()
    created_at = fields.String(metadata={"format": "date-time"})
    started_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    finished_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    queue_wait_s = fields.Float(allow_none=True)
    processing_s = fields.Float(allow_none=True)
    rtf = fields.Float(allow_none=True)
    attempts = fields.Integer()
    worker = fields.String(allow_none=True)
    audio_available = fields.Boolean()
    error = fields.Nested(JobErrorSchema, allow_none=True)
    webhook = fields.Nested(WebhookStateSchema, allow_none=True)


class RetriedSchema(JobSchema):
    """A job queued again by a retry."""

    replication = replication_field()


class JobResultSchema(JobSchema):
    """A job with its transcript when it succeeded."""

    result = fields.Nested(TranscriptSchema, allow_none=True)


class SubmitResponseSchema(Schema):
    """Where to find the job just queued."""

    task_id = fields.String()
    status = fields.String()
    status_url = fields.String()
    replication = replication_field()


class HistorySchema(Schema):
    """A page of jobs, newest first."""

    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()
    items = fields.List(fields.Nested(JobSchema))


class WorkerSchema(Schema):
    """A worker as its last heartbeat described it."""

    hostname = fields.String()
    pid = fields.Integer()
    concurrency = fields.Integer()
    active = fields.Integer()
    model = fields.String()
    device = fields.String()
    last_seen = fields.Float(metadata={"description": "Unix time of the last heartbeat"})
    cpu_percent = fields.Float(allow_none=True, metadata={
        "description": "CPU of the worker's processes, 100 = one core"})
    memory_rss_bytes = fields.Integer(allow_none=True, metadata={
        "description": "Resident memory of the worker's processes"})
    gpu_memory_bytes = fields.Integer(allow_none=True, metadata={
        "description": "GPU memory of the worker's processes; null without a GPU"})
    engines_ready = fields.Integer(metadata={
        "description": "Processes with the model loaded; 0 while the worker starts"})


class ModelSchema(Schema):
    """A served model."""

    id = fields.String(metadata={"example": "whisper-tiny-en"})
    queue = fields.String(metadata={"description": "The queue its worker group consumes"})
    workers = fields.Integer(metadata={"description": "Live workers with it loaded"})
    default = fields.Boolean(metadata={"description": "Used when a submit names no model"})


class ModelListSchema(Schema):
    """The models workers serve now, and the default."""

    default = fields.String()
    items = fields.List(fields.Nested(ModelSchema))


class HealthArgsSchema(Schema):
    """What health should require."""

    ready = fields.String(validate=validate.OneOf(["workers"]), metadata={
        "description": "`workers`: 503 unless a worker has its model loaded (deploy scripts)"})


class HealthSchema(Schema):
    """Whether the service can take work (200), and whether workers can finish it."""

    status = fields.String(validate=validate.OneOf(["ok", "degraded"]), metadata={
        "description": "degraded: jobs are accepted but no worker has its model loaded"})
    redis = fields.Boolean()
    workers_online = fields.Integer(metadata={"description": "Workers with the model loaded"})
    reasons = fields.List(fields.String())


class HealthProblemSchema(ProblemSchema):
    """Health as a problem document when the service cannot work."""

    redis = fields.Boolean()
    workers_online = fields.Integer()
    reasons = fields.List(fields.String())


class QueueStatusSchema(Schema):
    """What the queue and the workers are doing now."""

    queue = fields.String()
    depth = fields.Integer(metadata={"description": "Jobs waiting for a worker"})
    active = fields.List(fields.String(), metadata={"description": "Task ids being transcribed"})
    reserved = fields.List(fields.String(), metadata={"description": "Task ids taken, not started"})
    workers = fields.List(fields.Nested(WorkerSchema))


class PercentilesSchema(Schema):
    """Latency percentiles in seconds."""

    p50 = fields.Float(allow_none=True)
    p95 = fields.Float(allow_none=True)


class StatsSchema(Schema):
    """Totals and rates over the retained jobs."""

    jobs_total = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    audio_seconds_total = fields.Float(metadata={"description": "Succeeded retained jobs"})
    average_rtf = fields.Float(allow_none=True, metadata={
        "description": "Succeeded retained jobs"})
    queue_wait_s = fields.Nested(PercentilesSchema, metadata={
        "description": "Latest 1000 succeeded jobs"})
    processing_s = fields.Nested(PercentilesSchema, metadata={
        "description": "Latest 1000 succeeded jobs"})
    end_to_end_s = fields.Nested(PercentilesSchema, metadata={
        "description": "Latest 1000 succeeded jobs"})
    jobs_per_minute = fields.Float(metadata={"description": "Finished jobs, last 5 minutes"})
    audio_seconds_per_second = fields.Float(metadata={"description": "Last 5 minutes"})


def job_view(job: Job, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The public view of a job (JobSchema; JobResultSchema also shows the result)."""
    return {
        "task_id": job.id, "status": job.status, "filename": job.filename,
        "content_type": job.content_type, "size_bytes": job.size_bytes,
        "duration_s": job.duration_s, "language": job.language, "hotwords": job.hotwords,
        "model": job.model,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "queue_wait_s": job.queue_wait_s,
        "processing_s": job.processing_s, "rtf": job.rtf, "attempts": job.attempts,
        "worker": job.worker, "audio_available": job.audio_available, "error": job.error,
        "webhook": job.webhook, "result": result,
    }


class ApiUsageSchema(Schema):
    """CPU and memory of the API host and of the API's processes."""

    hostname = fields.String()
    host_cpu_percent = fields.Float(metadata={"description": "Whole host, 100 = all cores"})
    host_memory_percent = fields.Float()
    host_memory_total_bytes = fields.Integer()
    process_cpu_percent = fields.Float(metadata={"description": "API processes, 100 = one core"})
    process_memory_rss_bytes = fields.Integer()
    processes = fields.Integer(metadata={"description": "gunicorn master and workers counted"})


class DashboardSchema(Schema):
    """One snapshot of the service's load, as the dashboard charts it."""

    ts = fields.Float(metadata={"description": "Unix time of the snapshot"})
    window_s = fields.Integer(metadata={"description": "Window of the latency and rate figures"})
    api = fields.Nested(ApiUsageSchema)
    workers = fields.List(fields.Nested(WorkerSchema))
    workers_online = fields.Integer()
    active_tasks = fields.Integer(metadata={"description": "Jobs the workers are running"})
    queue_depth = fields.Integer(metadata={"description": "Jobs waiting for a worker"})
    submit_latency_s = fields.Nested(PercentilesSchema,
                                     metadata={"description": "Accepted submissions, window"})
    end_to_end_s = fields.Nested(PercentilesSchema,
                                 metadata={"description": "Queued to succeeded, window"})
    jobs_per_minute = fields.Float(metadata={"description": "Succeeded jobs, window"})
    audio_seconds_per_second = fields.Float(metadata={"description": "Window"})
    stats = fields.Nested(StatsSchema, metadata={"description": "What /api/v1/stats says"})
    latest_jobs = fields.List(fields.Nested(JobSchema))
