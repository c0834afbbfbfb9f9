"""Celery tasks: thin wrappers that hand a job id to the transcription pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Task, shared_task

from asr_service.dispatch import LIVE_TASK_NAME, TASK_NAME, send_live
from asr_service.pipeline import Delivery, JobBusy, run_job

if TYPE_CHECKING:
    from asr_service.worker import WorkerRuntime


# ignore_result: the transcript is stored by the lifecycle with the job's success, fenced by
# its delivery; Celery's result backend would keep a second, unfenced copy.
@shared_task(name=TASK_NAME, bind=True, ignore_result=True)
def transcribe(self: Task, job_id: str) -> None:
    """Transcribe one stored recording; the job record says how it ended."""
    runtime: WorkerRuntime = self.app.runtime  # worker.create_worker put it there
    try:
        run_job(runtime.lifecycle, runtime.store, runtime.engine, runtime.settings,
                Delivery(job_id, self.request.id, self.request.hostname or "unknown",
                         runtime.runner), runtime.diarizer)
    except JobBusy as busy:
        # Redelivered while the process that died with it may still hold the lease.
        raise self.retry(countdown=busy.retry_in_s, max_retries=None) from None


@shared_task(name=LIVE_TASK_NAME, bind=True, ignore_result=True)
def live_session(self: Task, session_id: str) -> str:
    """Run a live session with this process's model until the client leaves (live/runner.py).
    A delivery that finds the session held by a live process, or gone, ends at once; one whose
    worker shuts down sends the session to the others."""
    import uuid

    from asr_service.engine.online import online_model
    from asr_service.live.relay import LiveStore
    from asr_service.live.runner import Session

    runtime: WorkerRuntime = self.app.runtime
    assert runtime.engine is not None, "a live session reached a process without a model"
    store = LiveStore(runtime.redis_client, runtime.keys)
    online = online_model(runtime.settings, runtime.engine.device)  # loaded at start (prefork)
    outcome = Session(store, runtime.engine, session_id, uuid.uuid4().hex, online,
                      runtime.draining.is_set).run()
    if outcome == "handed-over":
        send_live(self.app, session_id, runtime.settings.queue_name,
                  runtime.settings.live_max_session_s)
    return outcome
