"""/api/v1/stats and the dashboard's rates from kept figures: no job record is read."""

from __future__ import annotations

from asr_service.figures import (
    END_TO_END_BUCKETS,
    SLOT_S,
    STATS_WINDOW_S,
    histogram,
    lua_constants,
    percentiles,
    summarize,
    throughput,
)
from asr_service.jobs import STATUSES, Status

NOW = 1_700_000_000.0


def snapshot(**changes: object) -> dict:
    snap = {"now": NOW, "window_s": STATS_WINDOW_S, "counts": dict.fromkeys(STATUSES, 0),
            "kept": {}, "recent": [], "slots": []}
    snap.update(changes)
    return snap


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles([]) == {"p50": None, "p95": None}


def test_percentiles_interpolate_and_round_to_milliseconds() -> None:
    assert percentiles(float(v) for v in range(1, 101)) == {"p50": 50.5, "p95": 95.05}
    assert percentiles([0.1234, 0.5678]) == {"p50": 0.346, "p95": 0.546}


def test_no_jobs_gives_zero_totals_and_no_latencies() -> None:
    stats = summarize(snapshot())

    assert stats == {
        "jobs_total": 0,
        "by_status": {"queued": 0, "processing": 0, "succeeded": 0, "failed": 0,
                      "cancelled": 0},
        "audio_seconds_total": 0,
        "diarized_audio_seconds_total": 0,
        "average_rtf": None,
        "queue_wait_s": {"p50": None, "p95": None},
        "processing_s": {"p50": None, "p95": None},
        "end_to_end_s": {"p50": None, "p95": None},
        "jobs_per_minute": 0,
        "audio_seconds_per_second": 0,
    }


def test_totals_come_from_the_kept_counters_and_percentiles_from_recent_timings() -> None:
    counts = {**dict.fromkeys(STATUSES, 0), Status.SUCCEEDED: 2, Status.QUEUED: 3}
    recent = [[NOW - 5, 1.0, 2.0, 3.0, 10.0], [NOW - 50, 3.0, 4.0, 7.0, 20.0]]
    kept = {"retained_audio_s": 30.0, "retained_rtf_sum": 0.4, "retained_rtf_n": 2.0}

    stats = summarize(snapshot(counts=counts, recent=recent, kept=kept))

    assert stats["jobs_total"] == 5
    assert stats["by_status"]["succeeded"] == 2 and stats["by_status"]["queued"] == 3
    assert stats["audio_seconds_total"] == 30.0
    assert stats["average_rtf"] == 0.2
    assert stats["queue_wait_s"] == {"p50": 2.0, "p95": 2.9}
    assert stats["end_to_end_s"]["p50"] == 5.0


def test_rates_count_only_slots_inside_the_window() -> None:
    inside = (NOW - 30, 6.0, 60.0)
    outside = (NOW - 60 - SLOT_S, 100.0, 1000.0)
    rates = throughput(snapshot(slots=[outside, inside]), 60)

    assert rates == {"jobs_per_minute": 6.0, "audio_seconds_per_second": 1.0}


def test_kept_histogram_is_cumulative_and_ends_with_inf() -> None:
    kept = {"e2e:1": 2.0, "e2e:3": 1.0, f"e2e:{len(END_TO_END_BUCKETS) + 1}": 4.0,
            "e2e:sum": 99.0}
    buckets, total = histogram(kept, "e2e", END_TO_END_BUCKETS)

    assert buckets[0] == ("0.5", 2.0) and buckets[2] == ("2.5", 3.0)
    assert buckets[-1] == ("+Inf", 7.0) and total == 99.0


def test_the_scripts_get_the_same_bucket_bounds() -> None:
    assert "local E2E_BOUNDS = {0.5, 1.0, 2.5," in lua_constants()
