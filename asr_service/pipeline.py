"""One job from stored recording to normalized transcript: decode, transcribe, record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from asr_service.audio import TARGET_RATE, decode
from asr_service.engine.base import Engine, TranscribeOptions, Transcript
from asr_service.errors import AsrError
from asr_service.jobs import FAILED, SUCCEEDED, Job, JobStore
from asr_service.logs import log_event
from asr_service.runs import Outcome, claim, holding_lease
from asr_service.settings import Settings

log = logging.getLogger(__name__)


class JobBusy(Exception):
    """Another live process runs this job: deliver it again later."""

    def __init__(self, retry_in_s: int) -> None:
        super().__init__(f"running elsewhere; retry in {retry_in_s} s")
        self.retry_in_s = retry_in_s


def run_job(store: JobStore, engine: Engine | None, settings: Settings, job_id: str, *,
            celery_id: str, worker: str,
            save_result: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Run the current delivery of a job; returns the result, or None when it must not run."""
    claimed = claim(store, job_id, celery_id, worker, settings.max_deliveries,
                    settings.job_lease_s)
    if claimed.outcome is Outcome.BUSY:
        raise JobBusy(settings.job_lease_s)
    if claimed.outcome is Outcome.GAVE_UP:
        assert claimed.job is not None and claimed.job.error is not None
        log_event("job.failed", job_id, error="worker-lost", detail=claimed.job.error["detail"],
                  attempt=claimed.job.attempts)
        return None
    if claimed.outcome is Outcome.SKIP or claimed.job is None:
        log.info("skipped: job deleted, finished or superseded", extra={"job_id": job_id})
        return None
    job = claimed.job
    log_event("job.started", job_id, worker=worker, attempt=job.attempts,
              delivery=job.deliveries, queue_wait_s=_round(job.queue_wait_s))
    with holding_lease(store, job_id, settings.job_lease_s):
        return _transcribe(store, engine, settings, job, celery_id, worker, save_result)


def _transcribe(store: JobStore, engine: Engine | None, settings: Settings, job: Job,
                celery_id: str, worker: str,
                save_result: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    job_id = job.id
    started = time.perf_counter()
    try:
        if engine is None:
            raise AsrError("the worker has no engine loaded")
        samples = decode(store.audio(job_id), settings.max_audio_seconds)
        options = TranscribeOptions(language=job.language, hotwords=list(job.hotwords))
        transcript = engine.transcribe(samples, options)
    except Exception as exc:
        _fail(store, job, celery_id, *_explain(exc, settings))
        raise
    processing_s = time.perf_counter() - started
    result = to_result(transcript, len(samples) / TARGET_RATE, processing_s)
    # The result must be readable before the job says "succeeded", or a poller could miss it.
    save_result(result)
    if store.mark_finished(job_id, celery_id, SUCCEEDED, processing_s=processing_s) is None:
        return result  # deleted or superseded meanwhile: nothing to announce
    store.prune_recordings()  # recordings that were skipped while this job ran may go now
    log_event("job.succeeded", job_id, worker=worker, audio_s=_round(result["duration_s"]),
              processing_s=_round(processing_s), rtf=_round(result["rtf"]),
              queue_wait_s=_round(job.queue_wait_s), model=transcript.model)
    return result


def to_result(transcript: Transcript, duration_s: float, processing_s: float) -> dict[str, Any]:
    """The normalized transcript the API returns (times in seconds)."""
    return {
        "text": transcript.text,
        "segments": [
            {"start": s.start_ms / 1000, "end": s.end_ms / 1000, "text": s.text}
            for s in transcript.segments
        ],
        "language": transcript.language,
        "model": transcript.model,
        "duration_s": round(duration_s, 3),
        "processing_s": round(processing_s, 3),
        "rtf": round(processing_s / duration_s, 4) if duration_s else None,
    }


def _explain(exc: Exception, settings: Settings) -> tuple[str, str]:
    """The error type and detail a user sees for a failed job."""
    # The engine wraps what FunASR raises, so the soft limit may arrive as the cause.
    if isinstance(exc, SoftTimeLimitExceeded) or isinstance(exc.__cause__, SoftTimeLimitExceeded):
        return ("time-limit-exceeded",
                f"transcription stopped at the soft time limit of {settings.soft_time_limit_s} s"
                " (TASK_SOFT_TIME_LIMIT_S / TASK_TIME_LIMIT_S), or the job was cancelled")
    if isinstance(exc, AsrError):
        return exc.slug, exc.detail
    log.error("job failed", exc_info=exc)
    return "internal-error", f"{type(exc).__name__}: {exc}"


def _fail(store: JobStore, job: Job, celery_id: str, kind: str, detail: str) -> None:
    failed = store.mark_finished(job.id, celery_id, FAILED, error={"type": kind, "detail": detail})
    if failed:
        log_event("job.failed", job.id, error=kind, detail=detail, attempt=job.attempts,
                  worker=failed.worker, audio_s=job.duration_s,
                  queue_wait_s=_round(job.queue_wait_s), processing_s=_round(failed.processing_s))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
