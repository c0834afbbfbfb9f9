"""The /api/v1/stats figures: totals by status, latency percentiles and throughput."""

from __future__ import annotations

import pytest

from asr_service.jobs import Job
from asr_service.stats import WINDOW_S, percentiles, summarize

NOW = 1_700_000_000.0


def job(status: str = "succeeded", duration_s: float = 10.0, queued_at: float = NOW - 100,
        started_at: float | None = None, finished_at: float | None = None,
        processing_s: float | None = None, job_id: str = "j") -> Job:
    return Job(id=job_id, status=status, celery_id=job_id, filename="a.wav",
               content_type="audio/wav", size_bytes=1, duration_s=duration_s,
               created_at=queued_at, queued_at=queued_at, started_at=started_at,
               finished_at=finished_at, processing_s=processing_s)


def succeeded(duration_s: float, queued_at: float, wait_s: float, processing_s: float,
              job_id: str = "j") -> Job:
    started = queued_at + wait_s
    return job("succeeded", duration_s, queued_at, started, started + processing_s,
               processing_s, job_id)


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles([]) == {"p50": None, "p95": None}


def test_percentiles_of_one_value_are_that_value() -> None:
    assert percentiles([2.5]) == {"p50": 2.5, "p95": 2.5}


def test_percentiles_interpolate_and_round_to_milliseconds() -> None:
    assert percentiles(float(v) for v in range(1, 101)) == {"p50": 50.5, "p95": 95.05}
    assert percentiles([0.1234, 0.5678]) == {"p50": 0.346, "p95": 0.546}


def test_no_jobs_gives_zero_totals_and_no_latencies() -> None:
    stats = summarize([], now=NOW)

    assert stats == {
        "jobs_total": 0,
        "by_status": {"queued": 0, "processing": 0, "succeeded": 0, "failed": 0,
                      "cancelled": 0},
        "audio_seconds_total": 0,
        "average_rtf": None,
        "queue_wait_s": {"p50": None, "p95": None},
        "processing_s": {"p50": None, "p95": None},
        "end_to_end_s": {"p50": None, "p95": None},
        "jobs_per_minute": 0.0,
        "audio_seconds_per_second": 0.0,
    }


def test_jobs_are_counted_by_status() -> None:
    jobs = [job("queued"), job("queued"), job("processing", started_at=NOW - 5),
            succeeded(10, NOW - 50, 1, 2), job("failed", finished_at=NOW - 1),
            job("cancelled")]

    stats = summarize(jobs, now=NOW)

    assert stats["jobs_total"] == 6
    assert stats["by_status"] == {"queued": 2, "processing": 1, "succeeded": 1, "failed": 1,
                                  "cancelled": 1}


def test_audio_total_and_rtf_count_only_succeeded_jobs() -> None:
    jobs = [succeeded(10.0, NOW - 100, 1, 1.0), succeeded(20.0, NOW - 100, 1, 8.0),
            job("failed", duration_s=600.0, started_at=NOW - 90, finished_at=NOW - 80,
                processing_s=10.0),
            job("queued", duration_s=300.0)]

    stats = summarize(jobs, now=NOW)

    assert stats["audio_seconds_total"] == 30.0
    assert stats["average_rtf"] == 0.25  # (1/10 + 8/20) / 2


def test_zero_length_recordings_do_not_break_the_average_rtf() -> None:
    jobs = [succeeded(0.0, NOW - 100, 1, 0.5), succeeded(4.0, NOW - 100, 1, 1.0)]

    assert summarize(jobs, now=NOW)["average_rtf"] == 0.25


def test_latency_percentiles_come_from_succeeded_jobs() -> None:
    jobs = [succeeded(10, NOW - 100, wait, proc, f"j{i}")
            for i, (wait, proc) in enumerate([(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)])]
    jobs.append(job("failed", started_at=NOW - 50, finished_at=NOW - 10, processing_s=40.0))

    stats = summarize(jobs, now=NOW)

    assert stats["queue_wait_s"] == {"p50": 3.0, "p95": 4.8}
    assert stats["processing_s"] == {"p50": 6.0, "p95": 9.6}
    assert stats["end_to_end_s"] == {"p50": 9.0, "p95": 14.4}


def test_throughput_counts_only_jobs_finished_in_the_last_five_minutes() -> None:
    recent = [succeeded(60.0, NOW - 200, 10, 30, "r1"), succeeded(90.0, NOW - 100, 5, 20, "r2")]
    old = succeeded(600.0, NOW - 3600, 10, 100, "old")
    failed = job("failed", duration_s=100.0, started_at=NOW - 20, finished_at=NOW - 10,
                 processing_s=10.0)

    stats = summarize([*recent, old, failed], now=NOW)

    assert stats["jobs_per_minute"] == round(2 / (WINDOW_S / 60), 3) == 0.4
    assert stats["audio_seconds_per_second"] == 0.5  # 150 s of audio over 300 s
    assert stats["audio_seconds_total"] == 750.0


def test_a_job_finished_exactly_five_minutes_ago_still_counts() -> None:
    edge = succeeded(30.0, NOW - WINDOW_S - 10, 5, 5)

    assert edge.finished_at == NOW - WINDOW_S
    assert summarize([edge], now=NOW)["jobs_per_minute"] == 0.2


@pytest.mark.parametrize("age_s", [WINDOW_S + 1, 86_400])
def test_older_jobs_give_no_current_throughput(age_s: float) -> None:
    stale = succeeded(30.0, NOW - age_s - 10, 5, 5)

    stats = summarize([stale], now=NOW)

    assert stats["jobs_per_minute"] == 0.0
    assert stats["audio_seconds_per_second"] == 0.0
    assert stats["audio_seconds_total"] == 30.0
