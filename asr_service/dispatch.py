"""The Celery task name and the dispatch of a job's delivery: shared by the API's submit and
retry and the workers' sweeps, so neither side imports the other.

A dispatch that fails after the job was stored is not undone: the job is complete in the
store, and the stranded-job sweep sends it within a minute (stranded.py).
"""

from __future__ import annotations

import logging

from celery import Celery

from asr_service.jobs import Job

TASK_NAME = "asr.transcribe"
LIVE_TASK_NAME = "asr.live"
log = logging.getLogger(__name__)


class Sent:
    """What a send answers here: the task id. Celery's AsyncResult would build the app's
    result backend for it, once per thread, and under gevent every request is a new
    greenlet: ~1 ms a submit for a result nobody reads."""

    def __init__(self, task_id: str) -> None:
        self.id = task_id  # (send_task sets `ignored` on it)


class Dispatcher:
    """Sends a job's current delivery to its queue."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, job: Job) -> None:
        """Publish the Celery message of the job's current delivery."""
        # ignore_result: the job store holds the outcome. Without it Celery subscribes the sender
        # to the task's result channel (SUBSCRIBE + UNSUBSCRIBE on a connection of its own) for
        # every job sent, a result nobody reads (make bench-control).
        self.celery.send_task(TASK_NAME, args=[job.id], task_id=job.celery_id, queue=job.queue,
                              ignore_result=True, result_cls=Sent)

    def try_send(self, job: Job) -> bool:
        """send(), but a broker failure leaves the job to the stranded-job sweep."""
        try:
            self.send(job)
            return True
        except Exception as exc:  # kombu raises several types when the broker is unreachable
            log.warning("dispatch failed; the sweep sends it later: %s", exc,
                        extra={"job_id": job.id})
            return False


def send_live(celery: Celery, session_id: str, queue: str, max_session_s: int) -> None:
    """Ask the model's worker group to run a live session (live/runner.py): the session's
    length bounds the task, not TASK_TIME_LIMIT_S."""
    celery.send_task(LIVE_TASK_NAME, args=[session_id], queue=queue, ignore_result=True,
                     result_cls=Sent, soft_time_limit=max_session_s + 30,
                     time_limit=max_session_s + 60)
