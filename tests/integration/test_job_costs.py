"""What an active job holds in Redis: no TTL until it ends, its share of the budget and of the
caps, given back exactly however it ends; and a re-claim is not a worker death."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from asr_service.errors import OwnerQueueFull, QueueFull, StorageFull
from asr_service.jobs import ErrorType, Job, JobStore, Keys, Status
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from asr_service.settings import JOB_OVERHEAD_BYTES

KEYS = Keys()


@pytest.fixture
def redis_db(redis_server) -> redis.Redis:
    """A Redis database of its own, so the counters are exact."""
    client = redis.Redis.from_url(redis_server.url.replace("/0", "/4"))
    client.flushdb()
    return client


def new_job(owner: str = "") -> Job:
    job_id, now = str(uuid.uuid4()), time.time()
    return Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
               content_type="audio/wav", size_bytes=3, duration_s=1.0, created_at=now,
               queued_at=now, owner=owner)


def create(lifecycle: Lifecycle, owner: str = "", audio: bytes = b"abc") -> str:
    job = new_job(owner)
    assert lifecycle.create(job, audio) == ("created", job.id)
    return job.id


def counters(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(f"{KEYS.prefix}recordings:bytes")
    return {k.decode(): int(v) for k, v in raw.items()}


def ttls(client: redis.Redis, job_id: str) -> tuple[int, int]:
    return client.ttl(KEYS.job(job_id)), client.ttl(KEYS.audio(job_id))


def alive(client: redis.Redis, runner: Runner) -> Runner:
    client.set(KEYS.runner(runner.token), "host:1", ex=60)
    return runner


def test_an_active_job_has_no_ttl_until_it_ends(redis_db):
    lifecycle = Lifecycle(redis_db, retention_s=2, max_recordings=100)
    job_id = create(lifecycle)
    assert ttls(redis_db, job_id) == (-1, -1)  # queued: never expires, however long it waits

    runner = alive(redis_db, Runner("r1", 1))
    assert lifecycle.claim(job_id, job_id, runner, "w", 3, 60).outcome is Outcome.OK
    assert ttls(redis_db, job_id) == (-1, -1)
    assert lifecycle.fail(job_id, job_id, ErrorType.AUDIO_INVALID, "bad", runner.token)
    assert all(ttl > 0 for ttl in ttls(redis_db, job_id))  # terminal: retention applies

    lifecycle.retry(job_id, "retried")
    assert ttls(redis_db, job_id) == (-1, -1)
    redis_db.expire(KEYS.job(job_id), 5)  # a job queued by an older version had a TTL
    lifecycle.claim(job_id, "retried", Runner("r2", 2), "w", 3, 60)
    redis_db.delete(KEYS.lease(job_id))  # its runner r2 never beat: dead, lease lapsed
    assert lifecycle.recover(job_id, "retried", "recovered") is not None
    assert ttls(redis_db, job_id) == (-1, -1)


def test_counters_return_to_zero_even_when_a_recording_expired_by_ttl(redis_db):
    lifecycle = Lifecycle(redis_db, retention_s=3600, max_recordings=100,
                          max_stored_bytes=10**6)
    runner = alive(redis_db, Runner("r1", 1))
    ids = [create(lifecycle, audio=b"x" * 1000) for _ in range(3)]
    assert counters(redis_db) == {"stored": 3000, "active": 3 * (1000 + JOB_OVERHEAD_BYTES)}
    for job_id in ids[:2]:
        lifecycle.claim(job_id, job_id, runner, "w", 3, 60)
        lifecycle.succeed(job_id, job_id, runner.token, {"duration_s": 1.0}, 0.1)
    assert counters(redis_db)["active"] == 1000 + JOB_OVERHEAD_BYTES
    # What the TTL backstop does when no worker sweeps: one job's recording expired, another
    # job's record and recording both, and a history page has met the missing record since.
    redis_db.delete(KEYS.audio(ids[0]), KEYS.audio(ids[1]), KEYS.job(ids[1]))
    assert JobStore(redis_db, 100).history(10, 0)[0] == 2

    assert lifecycle.expire(now=time.time() + 3601) == 2
    lifecycle.delete(ids[2])

    assert counters(redis_db) == {"stored": 0, "active": 0}
    assert not redis_db.exists(f"{KEYS.prefix}recordings:sizes", f"{KEYS.prefix}active:costs",
                               f"{KEYS.prefix}active:owner:")


def test_a_retry_goes_through_the_budget_and_the_caps(redis_db):
    one_job = 3 + JOB_OVERHEAD_BYTES
    lifecycle = Lifecycle(redis_db, retention_s=3600, max_recordings=100,
                          max_stored_bytes=one_job)
    runner = alive(redis_db, Runner("r1", 1))
    failed = create(lifecycle)
    lifecycle.claim(failed, failed, runner, "w", 3, 60)
    lifecycle.fail(failed, failed, ErrorType.AUDIO_INVALID, "bad", runner.token)
    holder = create(lifecycle)  # takes the whole budget

    with pytest.raises(StorageFull):
        lifecycle.retry(failed, "retry-1")
    assert JobStore(redis_db, 100).get(failed).status == Status.FAILED  # nothing changed
    lifecycle.delete(holder)
    assert lifecycle.retry(failed, "retry-2").status == Status.QUEUED
    assert counters(redis_db)["active"] == one_job

    capped = Lifecycle(redis_db, retention_s=3600, max_recordings=100, max_active=1)
    lifecycle.delete(failed)
    done = create(capped, owner="key:a")
    capped.claim(done, done, runner, "w", 3, 60)
    capped.fail(done, done, ErrorType.AUDIO_INVALID, "bad", runner.token)
    create(capped, owner="key:b")
    with pytest.raises(QueueFull):
        capped.retry(done, "retry-3")


def test_active_jobs_are_capped_in_all_and_per_tenant(redis_db):
    lifecycle = Lifecycle(redis_db, retention_s=3600, max_recordings=100, max_active=3,
                          max_active_per_owner=2)
    first = create(lifecycle, owner="key:a")
    create(lifecycle, owner="key:a")
    third = new_job(owner="key:a")
    assert lifecycle.create(third, b"abc") == ("owner-full", third.id)
    create(lifecycle, owner="key:b")  # another tenant still gets in
    fourth = new_job(owner="key:c")
    assert lifecycle.create(fourth, b"abc") == ("queue-full", fourth.id)
    assert not redis_db.exists(KEYS.job(third.id), KEYS.job(fourth.id))
    assert isinstance(lifecycle.caps.error("owner-full"), OwnerQueueFull)

    lifecycle.delete(first)  # a place of key:a frees up
    assert lifecycle.create(third, b"abc")[0] == "created"


def test_reclaims_after_redis_blips_are_not_worker_deaths(redis_db):
    lifecycle = Lifecycle(redis_db, retention_s=3600, max_recordings=100)
    job_id = create(lifecycle)
    runner = alive(redis_db, Runner("r1", 1))
    for _ in range(5):  # Redis failed mid-job (JobBusy) or a claim was NotReplicated: the
        # lease lapses, the same delivery comes back to its live runner and claims again
        claimed = lifecycle.claim(job_id, job_id, runner, "w", 3, 60)
        assert claimed.outcome is Outcome.OK and claimed.job.deliveries == 0
        redis_db.delete(KEYS.lease(job_id))
    # ... or to another process while r1 lives: not known dead yet, then known alive
    other = alive(redis_db, Runner("r0", 9))
    assert lifecycle.claim(job_id, job_id, other, "w", 3, 60).outcome is Outcome.BUSY
    claimed = lifecycle.claim(job_id, job_id, other, "w", 3, 60, runner_ttl_s=0)
    assert claimed.outcome is Outcome.OK and claimed.job.deliveries == 0

    redis_db.delete(KEYS.runner("r0"))  # now its worker process really dies ...
    second = alive(redis_db, Runner("r2", 2))
    assert lifecycle.claim(job_id, job_id, second, "w", 3, 60).job.deliveries == 1
    redis_db.delete(KEYS.lease(job_id))  # ... and again, found by the sweep before its
    recovered = lifecycle.recover(job_id, job_id, "recovered")  # heartbeat lapsed
    third = alive(redis_db, Runner("r3", 3))
    assert recovered is not None and recovered.deliveries == 1
    assert lifecycle.claim(job_id, "recovered", third, "w", 3, 60).outcome is Outcome.BUSY
    redis_db.delete(KEYS.runner("r2"))  # its heartbeat lapses: it had died
    assert lifecycle.claim(job_id, "recovered", third, "w", 3, 60).job.deliveries == 2
    redis_db.delete(KEYS.runner("r3"))  # a third death: given up
    gave_up = lifecycle.claim(job_id, "recovered", alive(redis_db, Runner("r4", 4)), "w", 3, 60)

    assert gave_up.outcome is Outcome.GAVE_UP
    assert gave_up.job.error["type"] == "worker-lost"
    assert "died 3 times" in gave_up.job.error["detail"]
