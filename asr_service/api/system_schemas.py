"""Marshmallow schemas of the service's own state: workers, models, health, queue, stats and
the dashboard snapshot."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from asr_service.api.problems import ProblemSchema
from asr_service.api.schemas import JobSchema


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
    diarized_audio_seconds_total = fields.Float(metadata={
        "description": "Succeeded retained jobs that asked for diarize"})
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
    active_tasks = fields.Integer(metadata={
        "description": "Jobs the workers are running (live sessions are counted apart)"})
    live_sessions = fields.Integer(metadata={"description": "Live transcription sessions open"})
    queue_depth = fields.Integer(metadata={"description": "Jobs waiting for a worker"})
    submit_latency_s = fields.Nested(PercentilesSchema,
                                     metadata={"description": "Accepted submissions, window"})
    end_to_end_s = fields.Nested(PercentilesSchema,
                                 metadata={"description": "Queued to succeeded, window"})
    jobs_per_minute = fields.Float(metadata={"description": "Succeeded jobs, window"})
    audio_seconds_per_second = fields.Float(metadata={"description": "Window"})
    stats = fields.Nested(StatsSchema, metadata={"description": "What /api/v1/stats says"})
    latest_jobs = fields.List(fields.Nested(JobSchema))
