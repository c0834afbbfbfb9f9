"""Sending a job's message: kombu's in-memory transport (a real one, not a mock) as the broker."""

from __future__ import annotations

import threading
import time

from celery import Celery

from asr_service.dispatch import TASK_NAME, Dispatcher, Sent
from asr_service.jobs import Job, Status


def test_a_send_never_builds_a_result_backend() -> None:
    # Under gevent each request is a new greenlet, and Celery's AsyncResult builds the app's
    # backend once per thread: ~1 ms a submit, for a result nobody reads. A backend that cannot
    # be built shows whether a send asks for one.
    app = Celery(broker="memory://", backend="no-such-backend://")
    now = time.time()
    job = Job(id="job-1", status=Status.QUEUED, celery_id="job-1.d1", filename="a.wav",
              content_type="audio/wav", size_bytes=3, duration_s=1.0, created_at=now,
              queued_at=now, queue="asr-test")
    sent: list[object] = []
    thread = threading.Thread(target=lambda: sent.append(Dispatcher(app).send(job)))
    thread.start()
    thread.join(10)

    assert sent == [None], "the send failed (it built the backend?)"
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("asr-test", no_ack=True).get(timeout=1)
    assert (message.headers["task"], message.headers["id"]) == (TASK_NAME, "job-1.d1")
    assert Sent("x").id == "x"
