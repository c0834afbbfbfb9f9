"""The webhook deliverer (a real `python -m asr_service.webhooks` process) against local
receivers: retries until accepted, gives up, cancelled jobs, and a deliverer killed mid-POST."""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from asr_service.jobs import ErrorType, Job, JobStore, Keys, Status
from asr_service.lifecycle import Lifecycle
from asr_service.settings import Settings
from tests.harness import eventually, start_process, stop_process, wait_ready
from tests.integration.conftest import ROOT, settings_env

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


DROP = 0  # in a Receiver's script: close the connection without an answer
HOLD_S = 10.0  # the longest a held POST waits for `release`


class Receiver(ThreadingHTTPServer):
    """Answers POSTs with the next status of `script` (the last one repeats; DROP closes the
    connection); records them. With `hold`, the first POST waits for `release` first."""

    def __init__(self, *script: int, hold: bool = False) -> None:
        self.script, self.posts = list(script), []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
        if len(server.posts) == 1:
            server.release.wait(HOLD_S)
        status = server.script.pop(0) if len(server.script) > 1 else server.script[0]
        if status == DROP:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the deliverer is gone (killed, or it gave up waiting)
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hooked(settings: Settings, tmp_path: Path) -> Settings:
    return replace(settings, webhook_secret=SECRET, allow_private_urls=True,
                   webhook_retry_base_s=0.2, webhook_timeout_s=2.0, log_dir=str(tmp_path))


@pytest.fixture
def deliverer(hooked: Settings, tmp_path: Path) -> Iterator[callable]:
    procs = []

    def start(**changes: object):
        env = settings_env(replace(hooked, **changes))
        procs.append(start_process([sys.executable, "-m", "asr_service.webhooks"],
                                   ready=lambda: True, timeout=10, env=env, cwd=ROOT,
                                   log_path=tmp_path / f"webhooks{len(procs)}.out"))
        return procs[-1]

    yield start
    for proc in procs:
        stop_process(proc)


def _queued_job(settings: Settings, callback_url: str) -> tuple[Lifecycle, JobStore, Job]:
    client = redis.Redis.from_url(settings.redis_url)
    lifecycle = Lifecycle(client, settings.result_retention_s, settings.max_recordings)
    job_id, now = str(uuid.uuid4()), time.time()
    job = Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
              content_type="audio/wav", size_bytes=3, duration_s=1.0, created_at=now,
              queued_at=now, queue="nobody-consumes-this", callback_url=callback_url)
    assert lifecycle.create(job, b"abc")[0] == "created"
    return lifecycle, JobStore(client, settings.max_recordings), job


def _signed_by_us(headers: dict[str, str], body: bytes, arrived: float) -> dict:
    """The event, once its signature and its fresh timestamp check out."""
    assert abs(int(headers["webhook-timestamp"]) - arrived) <= 2, "signed when sent"
    return Webhook(SECRET).verify(body, headers)


def test_failing_receiver_gets_three_signed_deliveries_then_the_job_shows_delivered(
        hooked, deliverer):
    receiver = Receiver(500, DROP, 200)
    deliverer()
    lifecycle, store, job = _queued_job(hooked, receiver.url)
    lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "ended by the test")

    state = eventually(lambda: (w := store.get(job.id).webhook)["status"] == "delivered" and w,
                       15, message=lambda: f"webhook: {store.get(job.id).webhook}")
    assert len(receiver.posts) == 3 and state["attempts"] == 3
    assert state["last_error"] is None and state["next_attempt_at"] is None
    assert state["id"].startswith("msg_") and state["type"] == "job.failed"
    events = [_signed_by_us(*post) for post in receiver.posts]
    assert {h["webhook-id"] for h, _, _ in receiver.posts} == {state["id"]}
    assert len({body for _, body, _ in receiver.posts}) == 1, "every retry sends the same body"
    assert events[0]["type"] == "job.failed" and events[0]["data"]["task_id"] == job.id
    assert events[0]["data"]["error"] == {"type": "internal-error",
                                          "detail": "ended by the test"}
    assert events[0]["data"]["links"]["result"] == f"/api/v1/asr/result/{job.id}"
    gaps = [b[2] - a[2] for a, b in zip(receiver.posts, receiver.posts[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.3, f"the backoff doubles: {gaps}"


NO_FOURTH_POST_WINDOW_S = 2.0


def test_a_receiver_that_always_fails_marks_the_delivery_failed(hooked, deliverer):
    receiver = Receiver(500)
    deliverer(webhook_max_attempts=3)
    lifecycle, store, job = _queued_job(hooked, receiver.url)
    lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")

    state = eventually(lambda: (w := store.get(job.id).webhook)["status"] == "failed" and w, 15)
    assert state["attempts"] == 3 and state["last_error"] == "HTTP 500"
    assert state["next_attempt_at"] is None
    assert store.redis.zscore(Keys().webhooks_due, state["id"]) is None, "no longer queued"
    # A negative check needs a window: a 4th attempt would come 0.2 * 2**3 * (0.9..1.1) s after
    # the 3rd, so a window of NO_FOURTH_POST_WINDOW_S would see it.
    time.sleep(NO_FOURTH_POST_WINDOW_S)
    assert len(receiver.posts) == 3, "no attempt after the last one"


def test_deleting_a_queued_job_sends_job_cancelled(hooked, deliverer):
    receiver = Receiver(204)
    deliverer()
    lifecycle, store, job = _queued_job(hooked, receiver.url)
    lifecycle.delete(job.id)

    eventually(lambda: receiver.posts, 10, message="no webhook")
    (post,) = receiver.posts
    event = _signed_by_us(*post)
    assert event["type"] == "job.cancelled" and event["data"]["status"] == "cancelled"
    assert event["data"]["task_id"] == job.id and not store.exists(job.id)
    wid = post[0]["webhook-id"]
    eventually(lambda: store.redis.hget(Keys().webhook(wid), "state") == b"delivered", 5)


# A deliverer whose claims are leased for 2 s (the real lease is WEBHOOK_TIMEOUT_S + 30 s).
SHORT_LEASE = """
import threading, redis
from asr_service.settings import Settings
from asr_service.webhooks import Deliverer
s = Settings.from_env()
Deliverer(redis.Redis.from_url(s.redis_url), s, lease_s=2.0).run(threading.Event())
"""


def test_a_delivery_cut_off_by_a_killed_deliverer_is_delivered_again(hooked, deliverer,
                                                                     tmp_path):
    receiver = Receiver(200, hold=True)
    doomed = start_process([sys.executable, "-c", SHORT_LEASE], ready=lambda: True, timeout=10,
                           env=settings_env(hooked), cwd=ROOT, log_path=tmp_path / "doomed.out")
    lifecycle, store, job = _queued_job(hooked, receiver.url)
    try:
        lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
        wait_ready(doomed, lambda: receiver.posts, 10, tmp_path / "doomed.out")  # its POST
        wid = receiver.posts[0][0]["webhook-id"]
        lease_end = store.redis.zscore(Keys().webhooks_due, wid)
        doomed.kill()  # SIGKILL mid-POST: it never records an outcome
        doomed.wait(5)
    finally:
        stop_process(doomed)
        receiver.release.set()
    deliverer()  # a real, ordinary deliverer takes it over once the lease runs out

    state = eventually(lambda: (w := store.get(job.id).webhook)["status"] == "delivered" and w,
                       10, message=lambda: f"webhook: {store.get(job.id).webhook}")
    (first, _, _), (second, body, arrived) = receiver.posts
    assert arrived >= lease_end - 0.01, "not sent again while the first deliverer's lease ran"
    assert first["webhook-id"] == second["webhook-id"], "the receiver can deduplicate on it"
    assert _signed_by_us(second, body, arrived)["data"]["task_id"] == job.id
    assert state["attempts"] == 1, "the killed attempt was never recorded"
