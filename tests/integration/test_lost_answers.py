"""A link to Redis that drops after Redis ran a command and before its answer arrived (a Redis
killed between its fsync and its reply, a cable, a timeout): redis-py sends the command again
on a new connection (3 retries by default), and a caller that gave up sends it again later.
Each script such a resend can reach answers as the first time and changes nothing twice.
Real redis-server behind a proxy that cuts the link instead of passing one answer on."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from asr_service.jobs import ErrorType, Job, JobStore, Status
from asr_service.keys import Keys
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from asr_service.live.relay import _OPEN, LiveStore
from asr_service.settings import Settings
from asr_service.webhooks import PER_DESTINATION, Attempt, Deliverer
from tests.integration.conftest import RedisServer
from tests.integration.test_webhooks import SECRET


class AnswerCutter:
    """A TCP proxy to a Redis. Once `arm`ed with a marker, it passes on the first request
    holding it, then cuts that link where Redis's answer would go back (`cut` is set)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker: bytes | None = None
        self.cut = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes) -> None:
        self.cut.clear()
        self.marker = marker

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(self.target)
            doomed = threading.Event()  # this link carries the marked request
            threading.Thread(target=self._requests, args=(near, far, doomed), daemon=True).start()
            threading.Thread(target=self._answers, args=(far, near, doomed), daemon=True).start()

    def _requests(self, near: socket.socket, far: socket.socket, doomed: threading.Event) -> None:
        while data := self._recv(near):
            with self._lock:
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    doomed.set()
            far.sendall(data)

    def _answers(self, far: socket.socket, near: socket.socket, doomed: threading.Event) -> None:
        while data := self._recv(far):
            if doomed.is_set():  # Redis ran it: its answer never reaches the client
                for end in (near, far):  # shutdown: the FIN goes now, and recv()s return
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    end.close()
                self.cut.set()
                return
            near.sendall(data)

    @staticmethod
    def _recv(end: socket.socket) -> bytes:
        try:
            return end.recv(65536)
        except OSError:
            return b""

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a redis-server of this test alone (its totals and queues start empty)."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield replace(settings, redis_url=server.url, webhook_secret=SECRET,
                  allow_private_urls=True, log_dir=str(tmp_path))
    server.stop()


@pytest.fixture
def cutter(own: Settings) -> Iterator[AnswerCutter]:
    url = urlsplit(own.redis_url)
    proxy = AnswerCutter((url.hostname or "127.0.0.1", url.port or 6379))
    yield proxy
    proxy.close()


def _job(callback_url: str | None = None) -> Job:
    job_id, now = str(uuid.uuid4()), time.time()
    return Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
               content_type="audio/wav", size_bytes=3, duration_s=1.0, created_at=now,
               queued_at=now, queue="nobody-consumes-this", callback_url=callback_url)


@pytest.mark.parametrize("retries", [3, 0], ids=["redis-py resends", "the deliverer resends"])
def test_a_claim_whose_answer_was_lost_gets_its_deliveries_at_once(
        own: Settings, cutter: AnswerCutter, retries: int) -> None:
    # Found by the chaos soak: a Redis restart lost a claim's answer, redis-py sent the claim
    # again, and the deliveries the first one leased waited out the lease (33 s) unsent; the
    # soak's jobs (retention 15 s) expired with their webhooks first.
    direct = redis.Redis.from_url(own.redis_url)
    lifecycle = Lifecycle(direct, own.result_retention_s, own.max_recordings)
    store = JobStore(direct, own.max_recordings)
    job = _job("http://127.0.0.1:9/hook")
    assert lifecycle.create(job, b"abc")[0] == "created"
    lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
    webhook_id = store.get(job.id).webhook["id"]
    proxied = redis.Redis(port=cutter.port, retry=Retry(NoBackoff(), retries))
    deliverer = Deliverer(proxied, own)
    direct.script_load(deliverer._script.script)  # what is cut is its run, not a NOSCRIPT

    cutter.arm(b"\r\nclaim\r\n")
    if retries:
        claims = deliverer._claim(16)
    else:  # no resend inside redis-py: the error reaches the deliverer, whose next claim...
        with pytest.raises(redis.ConnectionError):
            deliverer._claim(16)
        claims = deliverer._claim(16)

    assert cutter.cut.is_set(), "the first answer was not lost"
    assert [c.webhook_id for c in claims] == [webhook_id], "leased, and nobody told"
    assert deliverer._claim(16) == [], "a new claim is a new claim: leased ones stay leased"


def test_a_create_sent_again_stores_and_counts_its_job_once(
        own: Settings, cutter: AnswerCutter) -> None:
    keys = Keys()
    direct = redis.Redis.from_url(own.redis_url)
    proxied = redis.Redis(port=cutter.port)  # redis-py's default: 3 retries
    lifecycle = Lifecycle(proxied, own.result_retention_s, own.max_recordings)
    job, audio = _job(), b"\x00" * 1000
    direct.script_load(lifecycle._create.script)  # what is cut is its run, not a NOSCRIPT

    cutter.arm(job.id.encode())
    assert lifecycle.create(job, audio) == ("created", job.id)

    assert cutter.cut.is_set(), "the first answer was not lost"
    totals = {k.decode(): int(v) for k, v in direct.hgetall(keys.recordings_bytes).items()}
    assert totals["stored"] == len(audio), totals
    submitted = [e for _, e in direct.xrange(keys.events)
                 if e[b"job_id"] == job.id.encode() and e[b"type"] == b"job.submitted"]
    assert len(submitted) == 1, submitted


def test_a_success_sent_again_is_its_runs_own_and_counted_once(
        own: Settings, cutter: AnswerCutter) -> None:
    keys = Keys()
    direct = redis.Redis.from_url(own.redis_url)
    proxied = redis.Redis(port=cutter.port)
    lifecycle = Lifecycle(proxied, own.result_retention_s, own.max_recordings)
    job = _job()
    assert lifecycle.create(job, b"abc")[0] == "created"
    runner = Runner("test@host", 1)
    lifecycle.claim(job.id, job.celery_id, runner, "test@host", 3, 60)
    result = {"text": "hello", "segments": [], "language": "en", "model": "m",
              "duration_s": 1.0, "processing_s": 0.1, "rtf": 0.1}

    cutter.arm(b'"to": "succeeded"')
    done = lifecycle.succeed(job.id, job.celery_id, runner.token, result, 0.1)

    assert cutter.cut.is_set(), "the first answer was not lost"
    assert done is not None and done.status == Status.SUCCEEDED, "taken for a fenced-out run"
    finished = [e for _, e in direct.xrange(keys.events)
                if e[b"job_id"] == job.id.encode() and e[b"type"] == b"job.finished"]
    assert len(finished) == 1, finished
    assert int(direct.hget(keys.figures, "retained_rtf_n")) == 1


def test_an_outcome_sent_again_frees_its_slot_once(own: Settings, cutter: AnswerCutter) -> None:
    direct = redis.Redis.from_url(own.redis_url)
    lifecycle = Lifecycle(direct, own.result_retention_s, own.max_recordings)
    for _ in range(PER_DESTINATION + 2):
        job = _job("http://127.0.0.1:9/hook")
        assert lifecycle.create(job, b"abc")[0] == "created"
        lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
    deliverer = Deliverer(redis.Redis(port=cutter.port), own)
    first = deliverer._claim(16)
    assert len(first) == PER_DESTINATION, "the others wait in the destination's line"

    cutter.arm(b"\r\ndone\r\n")
    deliverer._record(first[0], Attempt("delivered", 1, ""), "a-job", 204)

    assert cutter.cut.is_set(), "the first answer was not lost"
    line = direct.zcard(Keys().webhooks_wait(first[0].destination))
    assert line == 1, "one slot freed, one delivery left the line: not two"
    assert len(deliverer._claim(16)) == 1


def test_a_live_session_opened_again_is_not_counted_against_its_key_twice(
        own: Settings, cutter: AnswerCutter) -> None:
    store = LiveStore(redis.Redis(port=cutter.port), Keys())
    store.client.script_load(_OPEN)  # what is cut is its run, not a NOSCRIPT
    session = uuid.uuid4().hex

    cutter.arm(session.encode())
    opened = store.open(session, "a-key", 1, {"model": "m"})

    assert cutter.cut.is_set(), "the first answer was not lost"
    assert opened, "refused by its own first open (the key's limit is 1)"


def test_a_retry_sent_again_is_the_retry_it_made(own: Settings, cutter: AnswerCutter) -> None:
    direct = redis.Redis.from_url(own.redis_url)
    lifecycle = Lifecycle(redis.Redis(port=cutter.port), own.result_retention_s,
                          own.max_recordings)
    job = _job()
    assert lifecycle.create(job, b"abc")[0] == "created"
    lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")

    cutter.arm(b'"to": "queued"')
    again = lifecycle.retry(job.id, "delivery-2")  # a 409 before: "task is queued"

    assert cutter.cut.is_set(), "the first answer was not lost"
    assert again.status == Status.QUEUED and again.celery_id == "delivery-2"
    requeued = [e for _, e in direct.xrange(Keys().events)
                if e[b"job_id"] == job.id.encode() and e[b"type"] == b"job.requeued"]
    assert len(requeued) == 1, requeued


def test_a_claim_sent_again_runs_the_job_it_took(own: Settings, cutter: AnswerCutter) -> None:
    lifecycle = Lifecycle(redis.Redis(port=cutter.port), own.result_retention_s,
                          own.max_recordings)
    job = _job()
    assert lifecycle.create(job, b"abc")[0] == "created"
    lifecycle.redis.script_load(lifecycle._transition.script)  # cut its run, not a NOSCRIPT
    runner = Runner("runner-1", 1)
    lifecycle.redis.set(Keys().runner(runner.token), "1")  # its heartbeat: it lives

    cutter.arm(b'"to": "processing"')
    moved = lifecycle.claim(job.id, job.celery_id, runner, "w@host", 3, 60)

    assert cutter.cut.is_set(), "the first answer was not lost"
    assert moved.outcome is Outcome.OK, "busy: its own lease, until that lapses"
    assert moved.job is not None and moved.job.runner == runner.token


def test_a_claim_unanswered_past_its_lease_is_not_sent_again(
        own: Settings, cutter: AnswerCutter) -> None:
    direct = redis.Redis.from_url(own.redis_url)
    lifecycle = Lifecycle(direct, own.result_retention_s, own.max_recordings)
    job = _job("http://127.0.0.1:9/hook")
    assert lifecycle.create(job, b"abc")[0] == "created"
    lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
    deliverer = Deliverer(redis.Redis(port=cutter.port, retry=Retry(NoBackoff(), 0)), own,
                          lease_s=2.0)
    direct.script_load(deliverer._script.script)
    cutter.arm(b"\r\nclaim\r\n")
    with pytest.raises(redis.ConnectionError):
        deliverer._claim(16)
    time.sleep(2.1)  # an outage outlasted the lease: the claim's own lease has ended

    (claim,) = deliverer._claim(16)

    assert claim.lease_end > time.monotonic() + 1.0, "a lease that ended, taken for a new one"
