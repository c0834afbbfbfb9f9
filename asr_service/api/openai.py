"""OpenAI-compatible transcription: the `openai` client (and what is built on it) works as is.

The request goes through the same queue and workers as /api/v1/asr/submit (the API holds no
model) and waits for the job's end event, not a polling loop. A job that outlives
SYNC_TIMEOUT_S answers 504 with its task id; it runs on and its result stays fetchable.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, make_response, url_for
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from werkzeug.datastructures import FileStorage

from asr_service import formats, openai_formats
from asr_service.api import idempotency, problems, services
from asr_service.api.access import owner_id, scope
from asr_service.api.multipart import FileUpload, MultipartBlueprint
from asr_service.api.problems import OpenAIErrorSchema, openai_error
from asr_service.api.schemas import MAX_HOTWORDS, Hotwords, language_field
from asr_service.api.speakers import SpeakerFieldsSchema, diarize_spec
from asr_service.jobs import ACTIVE, Job, Status
from asr_service.service import Upload

DEFAULT_ALIAS = "whisper-1"  # clients hard-code it; it means the default model
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
_CLIENT_ERRORS = {"audio-invalid", "audio-too-long"}


blp = MultipartBlueprint("openai", __name__, url_prefix="/v1",
                        description="OpenAI-compatible transcription (same queue and workers)")


class TranscriptionFormSchema(SpeakerFieldsSchema):
    """The multipart body of POST /v1/audio/transcriptions, as OpenAI defines it (plus this
    service's diarize fields; response_format=diarized_json turns diarization on)."""

    file = FileUpload(required=True, metadata={"description": "The recording"})
    model = fields.String(required=True, metadata={
        "description": f"A served model (GET /v1/models); {DEFAULT_ALIAS} means the default"})
    language = language_field()
    prompt = Hotwords(f"Words to favour (used as hotwords, split as submit splits them; more "
                      f"than {MAX_HOTWORDS} words is a 400)")
    response_format = fields.String(load_default="json",
                                    validate=validate.OneOf(RESPONSE_FORMATS))
    temperature = fields.Float(load_default=0.0, validate=validate.Range(0, 1), metadata={
        "description": "Accepted for compatibility; decoding is deterministic"})
    timestamp_granularities = fields.List(
        fields.String(validate=validate.OneOf(["segment", "word"])),
        data_key="timestamp_granularities[]", load_default=["segment"],
        metadata={"description": "verbose_json: segment, and word where the engine gives "
                                 "word times (else `words` is empty)"})
    callback_url = fields.String(validate=validate.Length(max=2048), metadata={
        "description": "Extension: also POST a signed webhook when the job ends"})

    def context_diarizes(self, data: dict[str, Any]) -> bool:
        """diarized_json asks for diarization by itself."""
        return data.get("response_format") == "diarized_json"


class TranscriptionSchema(Schema):
    """response_format=json (verbose_json adds task, language, duration, segments and words;
    diarized_json: task, duration, text and segments with a speaker each); text, srt and vtt
    answer plain text."""

    text = fields.String()
    usage = fields.Dict(metadata={"example": {"type": "duration", "seconds": 5}})


class OpenAIModelSchema(Schema):
    """A served model."""

    id = fields.String()
    object = fields.String(dump_default="model")
    created = fields.Integer()
    owned_by = fields.String()


class OpenAIModelListSchema(Schema):
    """The served models."""

    object = fields.String(dump_default="list")
    data = fields.List(fields.Nested(OpenAIModelSchema))


def _served_models() -> list[str]:
    """The default model and every model a live worker serves."""
    return sorted(services().jobs.models())


def _model(requested: str) -> str | None:
    """The model to run (None: the default); 404 model_not_found when nobody serves it."""
    if requested == DEFAULT_ALIAS:
        return None
    services().jobs.queue_for(requested)
    return requested


@blp.route("/audio/transcriptions")
class Transcriptions(MethodView):
    """Transcribe a recording and answer with the transcript."""

    @blp.arguments(TranscriptionFormSchema, location="files")
    @blp.response(200, TranscriptionSchema)
    @problems(blp, 400, 401, 404, 413, 429, 500, 503, 504, schema=OpenAIErrorSchema,
              content_type="application/json", described={404: "Unknown model"})
    def post(self, form: dict[str, Any]) -> Any:
        """OpenAI's transcription call: json, text, srt, vtt, verbose_json or diarized_json."""
        model = _model(form["model"])
        upload: FileStorage = form["file"]
        jobs = services().jobs
        diarization = diarize_spec(form, asked=form["response_format"] == "diarized_json")
        submitted = jobs.submit(Upload(upload.read(), upload.filename, form["language"],
                                       form["prompt"], form.get("callback_url"), model,
                                       diarization=diarization),
                                idempotency.requested_key(services().store.keys), owner=owner_id())
        job, result = jobs.wait(submitted.job.id, services().settings.sync_timeout_s, scope())
        if result is None:
            return _unfinished(job)
        return _render(result, form["response_format"],
                       "word" in form["timestamp_granularities"], job)


@blp.route("/models")
class Models(MethodView):
    """The models this service serves."""

    @blp.response(200, OpenAIModelListSchema)
    def get(self) -> dict[str, Any]:
        """Every model a worker serves now, and the default."""
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "asr_service"}
            for m in _served_models()]}


def _render(result: dict[str, Any], response_format: str, words: bool, job: Job) -> Any:
    # Returned as responses: the documented schema must not filter OpenAI's extra fields.
    if response_format == "json":
        return jsonify(openai_formats.openai_json(result))
    if response_format == "verbose_json":
        return jsonify(openai_formats.openai_verbose(result, words=words))
    if response_format == "diarized_json":
        return jsonify(openai_formats.openai_diarized(result))
    fmt = "txt" if response_format == "text" else response_format
    body, content_type = formats.render(result, fmt)
    response = make_response(body)
    response.content_type = content_type
    response.headers["X-Task-Id"] = job.id
    return response


def _unfinished(job: Job) -> Response:
    status_url = url_for("asr.Result", task_id=job.id)
    if job.status in ACTIVE:
        return openai_error(
            504, f"the transcription did not finish within SYNC_TIMEOUT_S; it goes on as task "
            f"{job.id}: fetch it from {status_url}?wait=60", "timeout",
            {"Location": status_url}, task_id=job.id)
    error = job.error or {}
    kind = error.get("type", "internal-error")
    status = 400 if kind in _CLIENT_ERRORS else 500
    if job.status == Status.CANCELLED:
        status = 409
    return openai_error(status, error.get("detail") or f"the task {job.status}", kind,
                        task_id=job.id)
