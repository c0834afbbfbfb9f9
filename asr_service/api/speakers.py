"""The diarization fields of submit and of the OpenAI endpoint, and the spec they make."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from asr_service.diarize import DiarizeSpec
from asr_service.diarize.spec import MAX_SPEAKERS

COUNTS = ("num_speakers", "min_speakers", "max_speakers")


def _count(description: str) -> fields.Integer:
    return fields.Integer(validate=validate.Range(1, MAX_SPEAKERS),
                          metadata={"description": description})


class SpeakerFieldsSchema(Schema):
    """Who spoke when: `speaker` on every segment and word of the transcript."""

    diarize = fields.Boolean(load_default=False, metadata={
        "description": "Label each segment and word with its speaker (`Speaker 1`, ...); "
                       "subtitles then start a cue at each change of speaker"})
    num_speakers = _count("The number of speakers, when known (with diarize)")
    min_speakers = _count("At least this many speakers (with diarize)")
    max_speakers = _count("At most this many speakers (with diarize)")

    @validates_schema
    def coherent_counts(self, data: dict[str, Any], **_: Any) -> None:
        """Counts need diarize, and min <= num <= max."""
        given = [k for k in COUNTS if data.get(k) is not None]
        if given and not data.get("diarize") and not self.context_diarizes(data):
            raise ValidationError(f"{given[0]} needs diarize=true", given[0])
        low, high = data.get("min_speakers"), data.get("max_speakers")
        if low is not None and high is not None and high < low:
            raise ValidationError("max_speakers is less than min_speakers", "max_speakers")
        num = data.get("num_speakers")
        if num is not None and ((low is not None and num < low)
                                or (high is not None and num > high)):
            raise ValidationError("num_speakers is outside min_speakers..max_speakers",
                                  "num_speakers")

    def context_diarizes(self, data: dict[str, Any]) -> bool:
        """Whether another field of the form asks for diarization (OpenAI's diarized_json)."""
        return False


def diarize_spec(form: dict[str, Any], asked: bool = False) -> DiarizeSpec | None:
    """The job's diarization (None: not asked for) from a loaded form."""
    if not (form.get("diarize") or asked):
        return None
    return DiarizeSpec(*(form.get(k) for k in COUNTS))
