"""Request schemas (submit form, history query) and the public view of a job (JobSchema)."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from asr_service.api.schemas import (
    MAX_HOTWORDS,
    HistoryArgsSchema,
    JobAnswer,
    JobResultSchema,
    JobSchema,
    RetriedSchema,
    SubmitFormSchema,
    SubmitResponseSchema,
)
from asr_service.jobs import Job


def load_errors(schema: SubmitFormSchema | HistoryArgsSchema, data: dict[str, str]) -> dict:
    with pytest.raises(ValidationError) as info:
        schema.load(data)
    return info.value.messages  # type: ignore[return-value]


def test_submit_form_defaults_to_auto_language_and_no_hotwords() -> None:
    assert SubmitFormSchema().load({}) == {"language": "auto", "hotwords": [], "diarize": False}


@pytest.mark.parametrize("language", ["auto", "zh", "en", "yue", "en-US", "zh-Hans"])
def test_language_accepts_auto_and_language_codes(language: str) -> None:
    assert SubmitFormSchema().load({"language": language})["language"] == language


@pytest.mark.parametrize("language", ["", "english", "EN", "z", "zh_CN", "zh-", "auto;rm"])
def test_language_rejects_anything_but_a_code(language: str) -> None:
    assert load_errors(SubmitFormSchema(), {"language": language}) == {
        "language": ["use 'auto' or a language code such as 'zh'"]
    }


def test_hotwords_split_on_spaces_commas_and_newlines() -> None:
    loaded = SubmitFormSchema().load({"hotwords": " 阿里巴巴, 达摩院\nFunASR,,  Paraformer\t"})

    assert loaded["hotwords"] == ["阿里巴巴", "达摩院", "FunASR", "Paraformer"]


def test_hotwords_split_on_chinese_commas() -> None:
    loaded = SubmitFormSchema().load({"hotwords": "阿里巴巴，达摩院、通义"})

    assert loaded["hotwords"] == ["阿里巴巴", "达摩院", "通义"]


def test_hotwords_of_only_separators_is_an_empty_list() -> None:
    assert SubmitFormSchema().load({"hotwords": " ,\n, "})["hotwords"] == []


def test_one_hundred_hotwords_are_accepted() -> None:
    words = [f"w{i}" for i in range(MAX_HOTWORDS)]

    assert SubmitFormSchema().load({"hotwords": " ".join(words)})["hotwords"] == words


def test_more_than_one_hundred_hotwords_are_rejected_on_the_hotwords_field() -> None:
    words = " ".join(f"w{i}" for i in range(MAX_HOTWORDS + 1))

    assert load_errors(SubmitFormSchema(), {"hotwords": words}) == {
        "hotwords": ["at most 100 hotwords"]
    }


def test_hotwords_longer_than_2000_characters_are_rejected() -> None:
    errors = load_errors(SubmitFormSchema(), {"hotwords": "x" * 2001})

    assert list(errors) == ["hotwords"]


def test_history_defaults_to_first_twenty_of_any_status() -> None:
    assert HistoryArgsSchema().load({}) == {"limit": 20, "offset": 0}


@pytest.mark.parametrize("limit", ["1", "200"])
def test_history_limit_accepts_1_to_200(limit: str) -> None:
    assert HistoryArgsSchema().load({"limit": limit})["limit"] == int(limit)


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten"])
def test_history_limit_outside_1_to_200_is_rejected(limit: str) -> None:
    assert list(load_errors(HistoryArgsSchema(), {"limit": limit})) == ["limit"]


def test_history_offset_must_not_be_negative() -> None:
    assert HistoryArgsSchema().load({"offset": "40"})["offset"] == 40
    assert list(load_errors(HistoryArgsSchema(), {"offset": "-1"})) == ["offset"]


@pytest.mark.parametrize("status", ["queued", "processing", "succeeded", "failed", "cancelled"])
def test_history_status_filter_accepts_each_job_status(status: str) -> None:
    assert HistoryArgsSchema().load({"status": status})["status"] == status


@pytest.mark.parametrize("status", ["done", "SUCCEEDED", ""])
def test_history_status_filter_rejects_unknown_statuses(status: str) -> None:
    assert list(load_errors(HistoryArgsSchema(), {"status": status})) == ["status"]


def finished_job() -> Job:
    return Job(
        id="7d3c5f1e-7a52-4c39-9d0e-0d5c0a0b8a11", status="succeeded",
        celery_id="7d3c5f1e-7a52-4c39-9d0e-0d5c0a0b8a11", filename="call.m4a",
        content_type="audio/mp4", size_bytes=12345, duration_s=20.0, language="zh",
        hotwords=["达摩院"], created_at=1_700_000_000.0, queued_at=1_700_000_000.0,
        attempts=1, started_at=1_700_000_002.5, finished_at=1_700_000_007.5,
        processing_s=5.0, worker="gpu-1@host",
    )


def test_job_view_shows_timestamps_as_utc_iso_and_derived_timings() -> None:
    view = JobResultSchema().dump(JobAnswer(finished_job()))

    assert view["task_id"] == "7d3c5f1e-7a52-4c39-9d0e-0d5c0a0b8a11"
    assert view["created_at"] == "2023-11-14T22:13:20+00:00"
    assert view["started_at"] == "2023-11-14T22:13:22.500000+00:00"
    assert view["finished_at"] == "2023-11-14T22:13:27.500000+00:00"
    assert view["queue_wait_s"] == 2.5
    assert view["processing_s"] == 5.0
    assert view["rtf"] == 0.25
    assert view["audio_available"] is True
    assert view["result"] is None


def test_job_view_of_a_queued_job_has_no_start_finish_or_timings() -> None:
    job = Job(id="a", status="queued", celery_id="a", filename="a.wav",
              content_type="audio/wav", size_bytes=10, duration_s=0.0, created_at=1.0,
              queued_at=1.0)

    view = JobSchema().dump(job)

    assert (view["started_at"], view["finished_at"]) == (None, None)
    assert (view["queue_wait_s"], view["processing_s"], view["rtf"]) == (None, None, None)
    assert view["worker"] is None


def test_job_view_reports_a_removed_recording_and_the_error() -> None:
    job = Job(id="b", status="failed", celery_id="b", filename="b.wav",
              content_type="audio/wav", size_bytes=10, duration_s=1.0,
              error={"type": "transcription-failed", "detail": "boom"},
              audio_removed_at=5.0)

    view = JobSchema().dump(job)

    assert view["audio_available"] is False
    assert view["error"] == {"type": "transcription-failed", "detail": "boom"}


def test_job_view_with_result_dumps_through_the_documented_schema() -> None:
    result = {"text": "你好", "segments": [{"start": 0.0, "end": 1.2, "text": "你好"}],
              "language": "zh", "model": "paraformer-zh", "duration_s": 20.0,
              "processing_s": 5.0, "rtf": 0.25}

    dumped = JobResultSchema().dump(JobAnswer(finished_job(), result))

    assert set(dumped) == set(JobResultSchema().fields)
    assert dumped["result"] == result
    assert dumped["hotwords"] == ["达摩院"]
    assert dumped["filename"] == "call.m4a"


def test_job_schema_dumps_a_job_as_it_is_with_every_documented_field() -> None:
    dumped = JobSchema().dump(finished_job())

    assert set(dumped) == set(JobSchema().fields)
    assert dumped["task_id"] == finished_job().id
    assert dumped["status"] == "succeeded"


def test_replication_is_shown_only_when_the_replicas_lag() -> None:
    job = finished_job()

    assert "replication" not in RetriedSchema().dump(JobAnswer(job))
    assert RetriedSchema().dump(JobAnswer(job, replication="pending"))["replication"] == "pending"
    submitted = SubmitResponseSchema().dump(JobAnswer(job, status_url="/api/v1/asr/result/x"))
    assert submitted == {"task_id": job.id, "status": "succeeded",
                         "status_url": "/api/v1/asr/result/x"}


def test_history_offset_is_bounded_before_it_reaches_redis() -> None:
    # Redis rejects ranges beyond 64 bits; found by the schemathesis run.
    assert list(load_errors(HistoryArgsSchema(), {"offset": str(10**21)})) == ["offset"]
