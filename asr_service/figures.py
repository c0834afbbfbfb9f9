"""Figures kept up to date by the lifecycle scripts, read in O(1) by stats, dashboard, metrics.

The scripts that move a job (lua/common.lua) update, in the same atomic step as the move:
- retained totals (audio seconds and RTF sum of the succeeded jobs still retained; deleting or
  expiring a job takes its share back), so `/api/v1/stats` says what it always said;
- cumulative histograms of end-to-end latency and RTF (never decrease, as Prometheus expects);
- the timings of the latest RECENT_SAMPLES succeeded jobs (percentiles come from these);
- per-10-second slots of finished jobs and audio seconds (throughput over a window).
Counts by status are the sizes of the status indexes. Nothing here reads a job record.
The API keeps one figure itself: the latency of accepted submissions (SubmitLatency).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import redis

from asr_service.jobs import STATUSES, Status
from asr_service.keys import Keys

END_TO_END_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
SLOT_S = 10  # throughput slots (the scripts get it through scripts.prelude())
SLOT_TTL_S = 900  # a slot outlives the longest window read (dashboard, metrics)
RECENT_SAMPLES = 1000  # succeeded jobs whose timings are kept for percentiles
STATS_WINDOW_S = 300
SUBMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECENT_SUBMITS = 2000


def lua_constants() -> str:
    """The bucket bounds as Lua, prepended to the lifecycle scripts."""
    def table(bounds: tuple[float, ...]) -> str:
        return "{" + ", ".join(repr(b) for b in bounds) + "}"

    return (f"local E2E_BOUNDS = {table(END_TO_END_BUCKETS)}\n"
            f"local RTF_BOUNDS = {table(RTF_BUCKETS)}\n")


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50 and p95 of the values (None when there are none)."""
    data = np.fromiter(values, dtype=float)
    if not len(data):
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(data, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


class Latency:
    """A latency the API measures, in Redis: histogram counters and, where percentiles are read
    (`samples`), the latest samples, shared by every API process."""

    def __init__(self, client: redis.Redis, counters: str, samples: str | None,
                 buckets: tuple[float, ...] = SUBMIT_BUCKETS) -> None:
        self.redis = client
        self.counters, self.samples, self.buckets = counters, samples, buckets

    def observe(self, seconds: float, now: float | None = None) -> None:
        """Count one event that took `seconds`."""
        bucket = next((str(b) for b in self.buckets if seconds <= b), "+Inf")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.counters, bucket, 1)
        pipe.hincrbyfloat(self.counters, "sum", seconds)
        if self.samples:
            pipe.lpush(self.samples, f"{time.time() if now is None else now:.3f}:{seconds:.6f}")
            pipe.ltrim(self.samples, 0, RECENT_SUBMITS - 1)
        pipe.execute()

    def histogram(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative (le, count) buckets ending with +Inf, and the sum of seconds."""
        raw = {k.decode(): float(v) for k, v in self.redis.hgetall(self.counters).items()}
        buckets, total = [], 0.0
        for le in [*map(str, self.buckets), "+Inf"]:
            total += raw.get(le, 0.0)
            buckets.append((le, total))
        return buckets, raw.get("sum", 0.0)

    def since(self, start: float) -> list[float]:
        """Latencies of the submissions answered after `start` (newest RECENT_SUBMITS)."""
        found: list[float] = []
        if not self.samples:
            return found
        for entry in self.redis.lrange(self.samples, 0, -1):
            ts, _, seconds = entry.decode().partition(":")
            if float(ts) < start:
                break  # newest first
            found.append(float(seconds))
        return found


class SubmitLatency(Latency):
    """Accepted submissions' latency (the API's time to answer 202)."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        keys = keys or Keys()
        super().__init__(client, keys.submit_latency, keys.submit_latency_recent)


LIVE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)


def live_latencies(client: redis.Redis, keys: Keys) -> dict[str, Latency]:
    """Live sessions' partial and final latency: from the API relaying the audio a worker
    decoded (a partial's, or the audio that ended an utterance) to the API receiving the text."""
    return {kind: Latency(client, keys.live_latency(kind), None, LIVE_BUCKETS)
            for kind in ("partial", "final")}


class Figures:
    """Reads the kept figures; every method costs a fixed number of Redis reads."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self.submit_latency = SubmitLatency(client, self.keys)

    def snapshot(self, window_s: int, now: float | None = None,
                 with_recent: bool = True) -> dict[str, Any]:
        """Counters, histograms, recent timings (unless with_recent=False) and a window's
        throughput, in one round trip."""
        now = time.time() if now is None else now
        first = math.floor((now - window_s) / SLOT_S)
        slots = range(first, math.floor(now / SLOT_S) + 1)
        pipe = self.redis.pipeline(transaction=False)
        for status in STATUSES:
            pipe.zcard(self.keys.status(status))
        pipe.hgetall(self.keys.figures)
        for slot in slots:
            pipe.hgetall(self.keys.figures_slot(slot))
        if with_recent:
            pipe.lrange(self.keys.recent, 0, -1)
        answers = pipe.execute()
        counts = dict(zip(STATUSES, map(int, answers[:len(STATUSES)]), strict=True))
        kept = {k.decode(): float(v) for k, v in answers[len(STATUSES)].items()}
        windows = answers[len(STATUSES) + 1:len(STATUSES) + 1 + len(slots)]
        slotted = [(slot * SLOT_S, float(w.get(b"jobs", 0)), float(w.get(b"audio_s", 0)))
                   for slot, w in zip(slots, windows, strict=True)]
        recent = [json.loads(r) for r in answers[-1]] if with_recent else []
        return {"now": now, "window_s": window_s, "counts": counts, "kept": kept,
                "recent": recent,  # [finished_at, queue_wait, processing, end_to_end, audio_s]
                "slots": slotted}  # [(slot start, jobs finished, audio seconds)]

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The /api/v1/stats figures."""
        return summarize(self.snapshot(STATS_WINDOW_S, now))


def summarize(snap: dict[str, Any]) -> dict[str, Any]:
    """/api/v1/stats from a snapshot: retained totals, recent percentiles, 5-minute rates."""
    counts: dict[Status, int] = snap["counts"]
    kept, recent = snap["kept"], snap["recent"]
    rtf_n = kept.get("retained_rtf_n", 0)
    return {
        "jobs_total": sum(counts.values()),
        "by_status": {str(s): counts.get(s, 0) for s in STATUSES},
        "audio_seconds_total": round(max(0.0, kept.get("retained_audio_s", 0.0)), 3),
        "diarized_audio_seconds_total": round(
            max(0.0, kept.get("retained_diarized_audio_s", 0.0)), 3),
        "average_rtf": round(kept["retained_rtf_sum"] / rtf_n, 4) if rtf_n > 0 else None,
        "queue_wait_s": percentiles(r[1] for r in recent),
        "processing_s": percentiles(r[2] for r in recent),
        "end_to_end_s": percentiles(r[3] for r in recent),
        **throughput(snap, STATS_WINDOW_S),
    }


def throughput(snap: dict[str, Any], window_s: int) -> dict[str, float]:
    """Succeeded jobs per minute and audio seconds per second over the last window_s."""
    start = snap["now"] - window_s  # slots that began inside the window (10 s granularity)
    jobs = sum(j for t, j, _ in snap["slots"] if t >= start)
    audio = sum(a for t, _, a in snap["slots"] if t >= start)
    return {"jobs_per_minute": round(jobs / (window_s / 60), 3),
            "audio_seconds_per_second": round(audio / window_s, 4)}


def histogram(kept: dict[str, float], name: str,
              bounds: tuple[float, ...]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) buckets ending with +Inf, and the sum, of a kept histogram."""
    buckets, total = [], 0.0
    for slot, le in enumerate([*map(str, bounds), "+Inf"], start=1):
        total += kept.get(f"{name}:{slot}", 0.0)
        buckets.append((le, total))
    return buckets, kept.get(f"{name}:sum", 0.0)
