"""Listeners of the lifecycle's events: the events.jsonl business log (one line per job
transition), kept out of the lifecycle so the domain core holds no presenter."""

from __future__ import annotations

from asr_service.jobs import Status
from asr_service.lifecycle import Event
from asr_service.logs import log_event


def log_event_line(event: Event) -> None:
    """Listener: one events.jsonl line per transition (job.succeeded/failed/cancelled for the
    end of a job, job.retried when it is queued again)."""
    job = event.job
    timings = {"worker": job.worker, "attempt": job.attempts, "audio_s": job.duration_s,
               "queue_wait_s": _round(job.queue_wait_s)}
    if event.kind == "job.submitted":
        log_event("job.submitted", job.id, audio_s=job.duration_s, size_bytes=job.size_bytes,
                  **event.details)
    elif event.kind == "job.started":
        log_event("job.started", job.id, worker=job.worker, attempt=job.attempts,
                  delivery=job.deliveries, queue_wait_s=_round(job.queue_wait_s))
    elif event.kind == "job.finished" and job.status == Status.SUCCEEDED:
        log_event("job.succeeded", job.id, **{**timings, **event.details},
                  processing_s=_round(job.processing_s), rtf=_round(job.rtf))
    elif event.kind == "job.finished":
        error = job.error or {}
        log_event(f"job.{job.status}", job.id, **timings, error=error.get("type"),
                  detail=error.get("detail"), processing_s=_round(job.processing_s))
    elif event.kind == "job.requeued":
        log_event("job.retried", job.id, reason=event.reason, attempt=job.attempts + 1)
    elif event.kind == "job.deleted":
        log_event("job.deleted", job.id, status=job.status)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
