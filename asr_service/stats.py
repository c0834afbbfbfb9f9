"""Figures over the retained jobs: totals, latency percentiles, throughput."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from asr_service.jobs import STATUSES, SUCCEEDED, Job

WINDOW_S = 300


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50 and p95 of the values (None when there are none)."""
    data = np.fromiter(values, dtype=float)
    if not len(data):
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(data, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def summarize(jobs: list[Job], now: float | None = None) -> dict[str, Any]:
    """The /api/v1/stats figures for these jobs."""
    now = time.time() if now is None else now
    done = [j for j in jobs if j.status == SUCCEEDED and j.finished_at is not None]
    recent = [j for j in done if j.finished_at and j.finished_at >= now - WINDOW_S]
    rtfs = [j.rtf for j in done if j.rtf is not None]
    counts = Counter(j.status for j in jobs)
    return {
        "jobs_total": len(jobs),
        "by_status": {s: counts.get(s, 0) for s in STATUSES},
        "audio_seconds_total": round(sum(j.duration_s for j in done), 3),
        "average_rtf": round(sum(rtfs) / len(rtfs), 4) if rtfs else None,
        "queue_wait_s": percentiles(j.queue_wait_s for j in done if j.queue_wait_s is not None),
        "processing_s": percentiles(j.processing_s for j in done if j.processing_s is not None),
        "end_to_end_s": percentiles(j.finished_at - j.queued_at for j in done
                                    if j.finished_at is not None),
        "jobs_per_minute": round(len(recent) / (WINDOW_S / 60), 3),
        "audio_seconds_per_second": round(sum(j.duration_s for j in recent) / WINDOW_S, 4),
    }
