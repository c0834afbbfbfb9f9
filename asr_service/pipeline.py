"""One job from stored recording to normalized transcript: decode, transcribe, record."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis
from celery.exceptions import SoftTimeLimitExceeded

from asr_service.audio import TARGET_RATE, decode
from asr_service.diarize import DiarizeSpec
from asr_service.engine.base import Engine, TranscribeOptions, Transcript
from asr_service.errors import (
    AsrError,
    AudioInvalid,
    AudioTooLong,
    EngineError,
    EngineTimeLimit,
    JobNotFound,
)
from asr_service.jobs import ErrorType, Job, JobStore
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from asr_service.runs import RUNNER_TTL_S, holding_lease
from asr_service.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE_RETRY_S = 0.5
"""Pause between tries to reach Redis again while a claimed job waits out an outage."""
FULL_RETRY_S = 5
"""When a delivery refused by a full Redis comes back."""
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


class JobBusy(Exception):
    """Deliver this job again later: another live process runs it, or Redis failed mid-job."""

    def __init__(self, retry_in_s: int) -> None:
        super().__init__(f"running elsewhere; retry in {retry_in_s} s")
        self.retry_in_s = retry_in_s


@dataclass(frozen=True)
class Delivery:
    """One Celery delivery of a job, in the worker process that received it."""

    job_id: str
    delivery: str
    worker: str
    runner: Runner


class Labeller(Protocol):
    """Speaker labels for a transcript (diarize.runner.Diarizer, loaded on first use)."""

    def label(self, samples: Any, transcript: Transcript, spec: DiarizeSpec) -> Transcript:
        """The transcript with `speaker` on segments and words."""
        ...


def run_job(lifecycle: Lifecycle, store: JobStore, engine: Engine | None, settings: Settings,
            delivery: Delivery, diarizer: Labeller | None = None) -> None:
    """Run the current delivery of a job; the lifecycle records how it ended."""
    try:
        claimed = lifecycle.claim(delivery.job_id, delivery.delivery, delivery.runner,
                                  delivery.worker, settings.max_deliveries, settings.job_lease_s,
                                  RUNNER_TTL_S)
    except redis.exceptions.OutOfMemoryError as exc:
        # Redis is full (maxmemory): the claim wrote nothing and the job stays queued. This
        # delivery comes back later; if Redis refuses that message too, the stranded-job sweep
        # sends the job again once memory is back.
        log.warning("redis is full; the job stays queued: %s", exc,
                    extra={"job_id": delivery.job_id})
        raise JobBusy(FULL_RETRY_S) from exc
    if claimed.outcome is Outcome.BUSY:
        raise JobBusy(RUNNER_TTL_S + 1)
    if claimed.outcome is not Outcome.OK or claimed.job is None:
        log.info("not run: %s (deleted, finished, superseded or given up)", claimed.outcome,
                 extra={"job_id": delivery.job_id})
        return
    try:
        # A batching worker's job thread cannot be stopped; its result is refused instead.
        with holding_lease(lifecycle, delivery.job_id, delivery.runner.token,
                           settings.job_lease_s,
                           on_lost=None if settings.batching else _stop_this_job):
            _transcribe(lifecycle, store, engine, settings, claimed.job, delivery, diarizer)
    except redis.RedisError as exc:
        # Redis went away mid-job: that is no fault of the job. Its lease lapses; this same
        # delivery comes back after it (or the sweep re-queues the job) and runs it again.
        log.warning("redis failed mid-job; it will run again: %s", exc,
                    extra={"job_id": delivery.job_id})
        raise JobBusy(settings.job_lease_s + 1) from exc


def _stop_this_job() -> None:
    # Celery's prefork children turn SIGUSR1 into SoftTimeLimitExceeded in the task.
    os.kill(os.getpid(), signal.SIGUSR1)


def _transcribe(lifecycle: Lifecycle, store: JobStore, engine: Engine | None,
                settings: Settings, job: Job, delivery: Delivery,
                diarizer: Labeller | None) -> None:
    started = time.perf_counter()
    diarization_s = None
    try:
        if engine is None:
            raise AsrError("the worker has no engine loaded")
        audio = _through_outage(lambda: store.audio(job.id), settings.job_lease_s, job.id)
        samples = decode(audio, settings.max_audio_seconds)
        options = TranscribeOptions(language=job.language, hotwords=list(job.hotwords),
                                    turns=job.diarization is not None)
        transcript = engine.transcribe(samples, options)
        if (spec := DiarizeSpec.from_record(job.diarization)) is not None:
            if diarizer is None:
                raise AsrError("the worker has no diarizer")
            labelled_at = time.perf_counter()
            transcript = diarizer.label(samples, transcript, spec)
            diarization_s = time.perf_counter() - labelled_at
    except redis.RedisError:
        raise
    except JobNotFound:
        # Deleted between its claim and the read of its recording: nothing left to do.
        log.info("not run: deleted as it started", extra={"job_id": job.id})
        return
    except Exception as exc:
        kind, detail = _explain(exc, settings, job.id)
        _through_outage(lambda: lifecycle.fail(job.id, delivery.delivery, kind, detail,
                                               runner=delivery.runner.token),
                        settings.job_lease_s, job.id)
        raise
    processing_s = time.perf_counter() - started
    result = to_result(transcript, len(samples) / TARGET_RATE, processing_s, diarization_s)
    if _through_outage(lambda: lifecycle.succeed(job.id, delivery.delivery,
                                                 delivery.runner.token, result, processing_s),
                       settings.job_lease_s, job.id) is None:
        log.warning("result discarded: the job was deleted or is owned by another delivery",
                    extra={"job_id": job.id})


def _through_outage(call: Callable[[], T], within_s: float, job_id: str) -> T:
    """Read a job's audio or record its end even if Redis restarts or Sentinel fails over
    meanwhile: retried for up to `within_s`, the job's lease, during which nobody else may take
    the job over, so a claimed job goes on (it is not abandoned to the sweep) and its fenced
    end still lands on the (new) master (the transcript is not thrown away). Past that, the
    error propagates and the job runs again. An end sent again after its answer was lost is
    answered as the first (transition.lua); anything else the fences refuse, harmlessly."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except _TRANSIENT as exc:
            if time.monotonic() + OUTAGE_RETRY_S > deadline:
                raise
            log.warning("redis unavailable (%s); retrying", exc,
                        extra={"job_id": job_id})
            time.sleep(OUTAGE_RETRY_S)


def to_result(transcript: Transcript, duration_s: float, processing_s: float,
              diarization_s: float | None = None) -> dict[str, Any]:
    """The normalized transcript the API returns (times in seconds; `speaker` on segments and
    words, and the speakers found, when diarized)."""
    words = {"words": [{"word": w.word, "start": w.start_ms / 1000, "end": w.end_ms / 1000,
                        **_speaker(w.speaker)} for w in transcript.words]} \
        if transcript.words else {}
    speakers = {} if transcript.speakers is None else {
        "speakers": transcript.speakers, "diarization_s": round(diarization_s or 0.0, 3)}
    return {
        "text": transcript.text,
        "segments": [
            {"start": s.start_ms / 1000, "end": s.end_ms / 1000, "text": s.text,
             **_speaker(s.speaker)}
            for s in transcript.segments
        ],
        "language": transcript.language,
        "model": transcript.model,
        "duration_s": round(duration_s, 3),
        "processing_s": round(processing_s, 3),
        "rtf": round(processing_s / duration_s, 4) if duration_s else None,
        **words,
        **speakers,
    }


def _speaker(name: str | None) -> dict[str, str]:
    return {} if name is None else {"speaker": name}


# Errors whose detail is written for the user; any other keeps its internals in the log.
_USER_FACING = (AudioInvalid, AudioTooLong)


def _explain(exc: Exception, settings: Settings, job_id: str) -> tuple[ErrorType, str]:
    """The stable error type and the user-facing detail of a failed job; the internals go to
    the worker log under the job id."""
    # The engine wraps what FunASR raises, so the soft limit may arrive as the cause.
    if isinstance(exc, EngineTimeLimit):
        return ErrorType.TIME_LIMIT, exc.detail
    if isinstance(exc, SoftTimeLimitExceeded) or isinstance(exc.__cause__, SoftTimeLimitExceeded):
        return (ErrorType.TIME_LIMIT,
                f"transcription stopped at the soft time limit of {settings.soft_time_limit_s} s"
                " (TASK_SOFT_TIME_LIMIT_S / TASK_TIME_LIMIT_S), or the job was cancelled")
    if isinstance(exc, _USER_FACING):
        return ErrorType(exc.slug), exc.detail
    log.error("job failed", exc_info=exc, extra={"job_id": job_id})
    if isinstance(exc, EngineError):
        return (ErrorType.TRANSCRIPTION_FAILED, "the model failed on this recording; the "
                f"worker log has the details under job id {job_id}")
    return (ErrorType.INTERNAL, "the worker failed on this job; the worker log has the details "
            f"under job id {job_id}")
