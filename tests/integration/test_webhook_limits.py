"""What bounds webhook deliveries: they go with their job (delete, expiry, retention), one
destination cannot take every slot, a POST never outlives its lease, and /health says when no
deliverer takes them. Real redis-server, real deliverer (process or in-process), real worker."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from asr_service.app import create_app
from asr_service.jobs import ErrorType, Job, JobStore, Keys, Status
from asr_service.lifecycle import Lifecycle, Runner
from asr_service.settings import Settings
from asr_service.webhooks import OVERDUE_S, PER_DESTINATION, Deliverer
from tests import samples
from tests.harness import eventually, start_process, stop_process
from tests.integration.conftest import ROOT, RedisServer, report, settings_env
from tests.integration.flow import submit, wait_for
from tests.integration.test_webhooks import SECRET, Receiver, _queued_job

RETENTION_S = 600
TRANSCRIPT = "the secret words of a deleted meeting"


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Hooked settings on a redis-server of this test alone (expiry and claims see only its
    own deliveries)."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield replace(settings, redis_url=server.url, webhook_secret=SECRET,
                  allow_private_urls=True, webhook_retry_base_s=0.2, webhook_timeout_s=2.0,
                  result_retention_s=RETENTION_S, log_dir=str(tmp_path))
    server.stop()


def _succeeded(lifecycle: Lifecycle, settings: Settings, url: str) -> Job:
    """A job that ends succeeded with TRANSCRIPT through the lifecycle, as a worker would."""
    job_id, now = str(uuid.uuid4()), time.time()
    job = Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
              content_type="audio/wav", size_bytes=3, duration_s=1.0, created_at=now,
              queued_at=now, queue="nobody", callback_url=url)
    assert lifecycle.create(job, b"abc")[0] == "created"
    lifecycle.claim(job_id, job_id, Runner("test", 0), "test", 3, 60_000)
    result = {"text": TRANSCRIPT, "segments": [], "language": "en", "model": "m",
              "duration_s": 1.0, "processing_s": 0.1, "rtf": 0.1}
    lifecycle.succeed(job_id, job_id, "test", result, 0.1)
    return job


def _webhook_keys(client: redis.Redis) -> list[bytes]:
    return sorted(k for pattern in ("asr:webhook:*", "asr:webhooks:*")
                  for k in client.scan_iter(pattern))


def test_delete_and_expiry_take_the_jobs_deliveries_and_transcripts_with_them(own, tmp_path):
    receiver = Receiver(500)  # never accepted: the deliveries stay pending, bodies frozen
    hooked = replace(own, webhook_include_result=True, webhook_retry_base_s=60.0)
    deliverer = start_process([sys.executable, "-m", "asr_service.webhooks"], ready=lambda: True,
                              timeout=10, env=settings_env(hooked), cwd=ROOT,
                              log_path=tmp_path / "webhooks.out")
    client = redis.Redis.from_url(own.redis_url)
    lifecycle = Lifecycle(client, RETENTION_S, own.max_recordings)
    try:
        deleted, expired = (_succeeded(lifecycle, own, receiver.url) for _ in range(2))
        eventually(lambda: len(receiver.posts) == 2, 15, message="two first attempts")
    finally:
        stop_process(deliverer)
    store = JobStore(client, own.max_recordings)
    wids = [store.get(job.id).webhook["id"] for job in (deleted, expired)]
    for wid in wids:  # what M7 is about: the frozen body holds the transcript
        assert TRANSCRIPT in client.hget(Keys().webhook(wid), "body").decode()
        assert client.ttl(Keys().webhook(wid)) <= RETENTION_S + 3600, "not the old 3 days"
    active = _queued_job(own, receiver.url)[2]

    lifecycle.delete(deleted.id)
    assert not client.exists(Keys().webhook(wids[0])), "delete took its delivery"
    lifecycle.delete(active.id)  # deleting an active job still tells its receiver
    assert lifecycle.expire(now=time.time() + RETENTION_S + 1) == 1
    left = _webhook_keys(client)

    (cancel,) = [k for k in left if k.startswith(b"asr:webhook:")]
    delivery = {k.decode(): v.decode() for k, v in client.hgetall(cancel).items()}
    assert delivery["type"] == "job.cancelled" and delivery["job_id"] == active.id
    assert "body" not in delivery and TRANSCRIPT not in json.dumps(delivery)
    assert 0 < client.ttl(cancel) <= RETENTION_S, "kept no longer than the job would have been"
    assert client.zrange(Keys().webhooks_due, 0, -1) == [cancel.split(b":", 2)[2]]
    memos = {k for k in left if k.startswith(b"asr:webhooks:claim:")}  # ids: gone in a lease
    assert set(left) - memos <= {cancel, b"asr:webhooks:due",
                                 f"asr:webhooks:of:{active.id}".encode()}
    assert not any(TRANSCRIPT.encode() in (client.dump(k) or b"") for k in client.scan_iter())


class Clock:
    """A wall clock the test moves by hand (the deliverer's `now`)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def test_a_saturated_destination_waits_in_line_without_using_attempts(own):
    client = redis.Redis.from_url(own.redis_url)
    clock = Clock()
    deliverer = Deliverer(client, own, now=clock, lease_s=30.0)
    jammed = [_queued_job(own, "http://127.0.0.1:9/never")[2] for _ in range(5)]
    lifecycle, store, other = _queued_job(own, "http://localhost:9/elsewhere")
    for job in [*jammed, other]:
        lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
    clock.t = time.time() + 1

    first = deliverer._claim(16)

    assert [c.destination for c in first] == ["http://127.0.0.1:9"] * PER_DESTINATION + [
        "http://localhost:9"], "the other destination is served beside the jammed one"
    waiting = client.zrange("asr:webhooks:wait:http://127.0.0.1:9", 0, -1)
    assert len(waiting) == 5 - PER_DESTINATION and deliverer._claim(16) == []
    assert all(store.get(j.id).webhook["attempts"] == 0 for j in jammed), "waiting is no attempt"
    deliverer._record(first[0], deliverer._judge("HTTP 500", 1), first[0].webhook_id, 500)
    (turn,) = deliverer._claim(16)  # a freed slot: the oldest in line gets it
    assert turn.webhook_id == waiting[0].decode()

    clock.t += 31  # a deliverer died mid-POST: no `done`; the leases run out
    again = deliverer._claim(16)
    assert sorted(c.destination for c in again) == ["http://127.0.0.1:9"] * PER_DESTINATION + [
        "http://localhost:9"], "lapsed leases free their slots, and the line moves on"


SLOW_NAME = "slow.hooks.test"


def test_a_slow_name_cannot_make_a_lease_lapse_into_a_second_post(own, monkeypatch):
    receiver = Receiver(200)
    stalled, lookups = threading.Event(), []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # the first lookup takes 3 s, as a bad DNS
        if host != SLOW_NAME:
            return real(host, port, *args, **kwargs)
        lookups.append(time.monotonic())
        if len(lookups) == 1:
            stalled.wait(3.0)
            stalled.set()
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = redis.Redis.from_url(own.redis_url)
    hooked = replace(own, webhook_timeout_s=10.0)
    deliverer = Deliverer(client, hooked, lease_s=2.0)  # timeout 10 s, lease 2 s
    url = receiver.url.replace("127.0.0.1", SLOW_NAME)
    lifecycle, store, job = _queued_job(hooked, url)
    stop = threading.Event()
    runner = threading.Thread(target=deliverer.run, args=(stop,), daemon=True)
    runner.start()
    try:
        lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
        state = eventually(lambda: (w := store.get(job.id).webhook)["status"] == "delivered"
                           and w, 15, message=lambda: f"{store.get(job.id).webhook}")
        assert stalled.wait(5), "the slow lookup ended"
    finally:
        stop.set()
        runner.join(20)  # run() waits for every POST under way

    report("webhook slow DNS", lookups=len(lookups), posts=len(receiver.posts),
           attempts=state["attempts"])
    assert len(receiver.posts) == 1, "one POST: none from the lookup that outlived its lease"
    assert state["attempts"] == 2, "the slow lookup was an attempt that timed out"


def test_health_says_when_webhooks_wait_unsent(own):
    api = create_app(own).test_client()
    client = redis.Redis.from_url(own.redis_url)

    client.zadd(Keys().webhooks_due, {"msg_recent": time.time() - 5})
    assert not [r for r in api.get("/api/v1/health").get_json()["reasons"] if "webhook" in r]
    client.zadd(Keys().webhooks_due, {"msg_stuck": time.time() - OVERDUE_S - 60})
    body = api.get("/api/v1/health").get_json()

    assert body["status"] == "degraded"
    (reason,) = [r for r in body["reasons"] if "webhook" in r]
    assert "is a deliverer running" in reason and "make webhooks" in reason, reason


class Blackhole:
    """A receiver that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.accepted.append(self.sock.accept()[0])
        except OSError:  # closed
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/x"

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_receiver_that_never_answers_does_not_delay_the_others(
        settings, worker, make_client, tmp_path):
    blackhole, healthy = Blackhole(), Receiver(204)
    hooked = replace(settings, webhook_secret=SECRET, allow_private_urls=True,
                     webhook_timeout_s=10.0, webhook_retry_base_s=10.0, log_dir=str(tmp_path))
    deliverer = start_process([sys.executable, "-m", "asr_service.webhooks"], ready=lambda: True,
                              timeout=10, env=settings_env(hooked), cwd=ROOT,
                              log_path=tmp_path / "webhooks.out")
    api = make_client(webhook_secret=SECRET, allow_private_urls=True)
    jobs = []
    try:
        for _ in range(40):
            lifecycle, store, job = _queued_job(settings, blackhole.url)
            lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
            jobs.append(job.id)
        eventually(lambda: blackhole.accepted, 10, message="the blackhole was never called")
        task_id = submit(api, samples.encode("wav"), callback_url=healthy.url
                         ).get_json()["task_id"]
        jobs.append(task_id)
        wait_for(api, task_id)
        ended = store.get(task_id).finished_at
        eventually(lambda: healthy.posts, 30, message="the healthy receiver got nothing")
        delay = healthy.posts[0][2] - ended
        report("webhook fairness", healthy_delay_s=round(delay, 2), blackholed=40,
               blackhole_connections=len(blackhole.accepted))
        assert delay < 20, f"the healthy webhook waited {delay:.1f} s behind the blackhole"
    finally:
        blackhole.close()  # the POSTs under way fail now: the deliverer stops at once
        stop_process(deliverer)
        for job_id in jobs:  # with their deliveries (nothing left due for /health)
            lifecycle.delete(job_id)


def test_deliveries_that_a_full_redis_refused_free_their_slots_once_it_takes_writes(
        own, caplog):
    # Found by the chaos soak: two claims whose body write Redis refused (maxmemory) held their
    # destination's two slots for the whole lease (timeout + 30 s), so the jobs behind them,
    # with a short retention, expired with their webhooks unsent.
    client = redis.Redis.from_url(own.redis_url)
    receiver = Receiver(204)
    deliverer = Deliverer(client, own)  # the real lease: 2 s timeout + 30 s
    jobs = []
    for _ in range(PER_DESTINATION + 1):
        lifecycle, _, job = _queued_job(own, receiver.url)
        lifecycle.fail(job.id, job.celery_id, ErrorType.INTERNAL, "x")
        jobs.append(job.id)
    claim, filled = deliverer._claim, threading.Event()

    def claim_then_fill(limit: int):  # Redis fills up between the claim and the body's write
        claims = claim(limit)
        if claims and not filled.is_set():
            client.config_set("maxmemory", 1)
            filled.set()
        return claims

    deliverer._claim = claim_then_fill
    stop = threading.Event()
    runner = threading.Thread(target=deliverer.run, args=(stop,))
    runner.start()
    try:
        assert filled.wait(10), "nothing was claimed"
        caplog.set_level(logging.WARNING, logger="asr_service.webhooks")

        def refused() -> int:  # the claimed deliveries met the full Redis (logged either way)
            return len({getattr(r, "webhook_id", None) for r in caplog.records
                        if r.name == "asr_service.webhooks" and hasattr(r, "webhook_id")})

        eventually(lambda: refused() >= PER_DESTINATION, 10,
                   message="the claimed deliveries never met the full Redis")
        client.config_set("maxmemory", 0)
        back = time.time()
        eventually(lambda: len(receiver.posts) >= len(jobs), 15, interval=0.2,
                   message="the destination's slots stayed taken after Redis took writes")
        late = max(arrived for _, _, arrived in receiver.posts) - back
        report("webhook slots after a full redis", deliveries=len(jobs),
               last_arrival_after_memory_back_s=round(late, 2), lease_s=deliverer.lease_s)
        assert sorted(json.loads(body)["data"]["task_id"] for _, body, _ in receiver.posts) == \
            sorted(jobs)
    finally:
        client.config_set("maxmemory", 0)
        stop.set()
        runner.join(30)
        receiver.shutdown()
