"""Marshmallow schemas of the jobs: request arguments, and the documented shape of a job.

JobSchema dumps a jobs.Job as it is; JobAnswer adds what one answer shows next to the job.
The service's own state (health, queue, models, stats, dashboard) is in system_schemas.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_dump, validate, validates_schema

from asr_service.api.multipart import FileUpload
from asr_service.api.speakers import SpeakerFieldsSchema
from asr_service.formats import FORMATS, iso_time
from asr_service.jobs import STATUSES, Job

_LANGUAGE = re.compile(r"^(auto|[a-z]{2,3}(-[A-Za-z0-9]{2,8})?)$")
_HOTWORD_SEPARATORS = re.compile(r"[\s,，、]+")
MAX_HOTWORDS = 100
MAX_HOTWORDS_CHARS = 2000


def language_field() -> fields.String:
    """The `language` form field (submit and the OpenAI endpoint)."""
    return fields.String(
        load_default="auto",
        validate=validate.Regexp(_LANGUAGE, error="use 'auto' or a language code such as 'zh'"),
        metadata={"description": "Language code such as zh or en; auto lets the model decide"},
    )


def split_hotwords(text: str) -> list[str]:
    """The words of a hotwords string; a ValidationError beyond MAX_HOTWORDS of them."""
    words = [w for w in _HOTWORD_SEPARATORS.split(text) if w]
    if len(words) > MAX_HOTWORDS:
        raise ValidationError(f"at most {MAX_HOTWORDS} hotwords")
    return words


class Hotwords(fields.String):
    """Words to favour, one string on the wire, a list once loaded (submit's `hotwords`,
    OpenAI's `prompt`): too long or too many words is a 422 on the field."""

    def __init__(self, description: str) -> None:
        super().__init__(load_default=list, metadata={
            "description": description, "default": "", "maxLength": MAX_HOTWORDS_CHARS})

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        validate.Length(max=MAX_HOTWORDS_CHARS)(text)
        return split_hotwords(text)


class SubmitFormSchema(SpeakerFieldsSchema):
    """Optional form fields sent next to the audio file."""

    language = language_field()
    model = fields.String(validate=validate.Length(min=1, max=200), metadata={
        "description": "A served model's id (GET /api/v1/models); default: the default model"})
    hotwords = Hotwords("Words to favour, separated by spaces, newlines or commas "
                        "(also ， and 、)")


MAX_WAIT_S = 60
_URL = validate.Length(max=2048)


class SubmitSchema(SubmitFormSchema):
    """The multipart body: the recording in field `audio` (or `audio_url`), plus the optional
    fields."""

    audio = FileUpload(metadata={"description": "wav, flac, ogg/opus, mp3, m4a, webm"})
    audio_url = fields.String(validate=_URL, metadata={
        "description": "Instead of `audio`: an http(s) URL the API downloads (public addresses "
                       "only unless ALLOW_PRIVATE_URLS; MAX_UPLOAD_MB and "
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


class UnixTime(fields.DateTime):
    """A Unix time (a float in Job), dumped as an ISO 8601 UTC date-time."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return iso_time(value)


class SegmentSchema(Schema):
    """A stretch of speech, times in seconds."""

    start = fields.Float()
    end = fields.Float()
    text = fields.String()
    speaker = fields.String(metadata={"description": "With diarize: who spoke it"})


class WordSchema(Schema):
    """A word, times in seconds."""

    word = fields.String()
    start = fields.Float()
    end = fields.Float()
    speaker = fields.String(metadata={"description": "With diarize: who spoke it"})


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
    speakers = fields.List(fields.String(), metadata={
        "description": "With diarize: the speakers found, in order of first appearance"})
    diarization_s = fields.Float(metadata={
        "description": "With diarize: seconds of processing_s spent on it"})


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


@dataclass(frozen=True)
class JobAnswer:
    """A job with what one answer adds to it: the transcript (result), the replication
    warning of a submit or retry, where to poll (submit). Reads the job's own attributes
    through, so the job schemas dump it as they dump a Job."""

    job: Job
    result: dict[str, Any] | None = None
    replication: str | None = None
    status_url: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "job":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.job, name)


def replication_field() -> fields.String:
    """Present only in the answer to a submit or retry that replicas did not acknowledge."""
    return fields.String(validate=validate.OneOf(["pending"]), metadata={
        "description": "Only when REDIS_MIN_REPLICAS is set and fewer replicas acknowledged "
                       "the change in time: `pending`. The master holds it, so the job runs "
                       "(the sweep sends it if its dispatch failed); a failover before the "
                       "replicas catch up could lose it."})


class _ReplicationOnlyWhenPending(Schema):
    """Leaves `replication` out of the answer unless the replicas lag (None)."""

    @post_dump
    def omit_acknowledged(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Drop a null replication."""
        if data.get("replication") is None:
            data.pop("replication", None)
        return data


class JobSchema(Schema):
    """A job: its state, timings, and the error once failed."""

    task_id = fields.String(attribute="id")
    status = fields.String(validate=validate.OneOf([str(s) for s in STATUSES]))
    filename = fields.String()
    content_type = fields.String()
    size_bytes = fields.Integer()
    duration_s = fields.Float()
    language = fields.String()
    hotwords = fields.List(fields.String())
    diarization = fields.Dict(allow_none=True, metadata={
        "description": "null, or the speaker counts asked for ({} when none): diarize was on"})
    model = fields.String()
    created_at = UnixTime()
    started_at = UnixTime(allow_none=True)
    finished_at = UnixTime(allow_none=True)
    queue_wait_s = fields.Float(allow_none=True)
    processing_s = fields.Float(allow_none=True)
    rtf = fields.Float(allow_none=True)
    attempts = fields.Integer()
    worker = fields.String(allow_none=True)
    audio_available = fields.Boolean()
    error = fields.Nested(JobErrorSchema, allow_none=True)
    webhook = fields.Nested(WebhookStateSchema, allow_none=True)


class RetriedSchema(JobSchema, _ReplicationOnlyWhenPending):
    """A job queued again by a retry."""

    replication = replication_field()


class JobResultSchema(JobSchema):
    """A job with its transcript when it succeeded."""

    result = fields.Nested(TranscriptSchema, allow_none=True)


class SubmitResponseSchema(_ReplicationOnlyWhenPending):
    """Where to find the job just queued."""

    task_id = fields.String(attribute="id")
    status = fields.String()
    status_url = fields.String()
    replication = replication_field()


class HistorySchema(Schema):
    """A page of jobs, newest first."""

    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()
    items = fields.List(fields.Nested(JobSchema))


