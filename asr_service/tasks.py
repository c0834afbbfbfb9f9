"""Celery tasks: thin wrappers that hand a job id to the transcription pipeline."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from asr_service.pipeline import JobBusy, run_job


@shared_task(name="asr.transcribe", bind=True)
def transcribe(self: Task, job_id: str) -> dict[str, Any] | None:
    """Transcribe one stored recording; the job record says how it ended."""
    app = self.app
    try:
        return run_job(
            app.store, app.engine, app.settings, job_id,
            celery_id=self.request.id, worker=self.request.hostname or "unknown",
            save_result=lambda result: app.backend.store_result(self.request.id, result,
                                                                "SUCCESS"),
        )
    except JobBusy as busy:
        # Redelivered while the process that died with it may still hold the lease.
        raise self.retry(countdown=busy.retry_in_s, max_retries=None) from None
