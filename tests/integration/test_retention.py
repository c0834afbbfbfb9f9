"""Recordings beyond MAX_RECORDINGS are removed, oldest first, never a queued or running one."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from asr_service.figures import Figures
from asr_service.jobs import ErrorType, Job, JobStore, Status
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from asr_service.settings import JOB_OVERHEAD_BYTES
from tests import samples
from tests.integration.flow import submit, wait_for


@pytest.fixture
def redis_db(redis_server) -> redis.Redis:
    """A Redis database of its own, so counts are exact."""
    client = redis.Redis.from_url(redis_server.url.replace("/0", "/3"))
    client.flushdb()
    return client


@pytest.fixture
def store(redis_db) -> JobStore:
    return JobStore(redis_db, max_recordings=2)


@pytest.fixture
def lifecycle(redis_db) -> Lifecycle:
    return Lifecycle(redis_db, retention_s=3600, max_recordings=2)


RUNNER = Runner(token="runner-1", pid=1)


def add(lifecycle: Lifecycle, status: Status, age: float, audio: bytes = b"abc") -> str:
    job_id = str(uuid.uuid4())
    now = time.time() - age
    assert lifecycle.create(Job(id=job_id, status=Status.QUEUED, celery_id=job_id,
                                filename="a.wav", content_type="audio/wav",
                                size_bytes=len(audio), duration_s=1.0, created_at=now,
                                queued_at=now), audio)[0] == "created"

    if status != Status.QUEUED:
        assert lifecycle.claim(job_id, job_id, RUNNER, "w", 3, 60).outcome is Outcome.OK
    if status == Status.SUCCEEDED:
        assert lifecycle.succeed(job_id, job_id, RUNNER.token, {"duration_s": 1.0}, 0.1)
    elif status == Status.FAILED:
        assert lifecycle.fail(job_id, job_id, ErrorType.AUDIO_INVALID, "bad", RUNNER.token)
    return job_id


def test_oldest_finished_recordings_go_first_and_active_ones_stay(store, lifecycle):
    done_old = add(lifecycle, Status.SUCCEEDED, age=40)
    failed = add(lifecycle, Status.FAILED, age=20)
    assert store.audio(done_old) == b"abc" and store.audio(failed) == b"abc"  # 2 <= 2
    queued = add(lifecycle, Status.QUEUED, age=10)  # 3 > 2: the oldest finished one goes

    assert store.get(done_old).audio_available is False
    assert store.get(done_old).status == Status.SUCCEEDED  # the record stays
    assert store.audio(failed) == b"abc"
    running = add(lifecycle, Status.PROCESSING, age=5)  # 3 > 2 again: the next finished one
    assert store.get(failed).audio_available is False
    assert store.audio(queued) == b"abc" and store.audio(running) == b"abc"
    add(lifecycle, Status.QUEUED, age=1)  # only active recordings left: none is removed
    assert store.audio(queued) == b"abc" and store.audio(running) == b"abc"


def test_pruning_waits_for_active_jobs_to_finish(store, lifecycle):
    first = add(lifecycle, Status.QUEUED, age=30)
    add(lifecycle, Status.QUEUED, age=20)
    add(lifecycle, Status.QUEUED, age=10)
    assert store.audio(first) == b"abc"  # three recordings, all still needed

    lifecycle.claim(first, first, RUNNER, "w", 3, 60)
    lifecycle.succeed(first, first, RUNNER.token, {}, 0.1)
    assert store.get(first).audio_available is False  # finished: over the budget, it goes


def test_stale_delivery_cannot_touch_a_retried_job(store, lifecycle):
    job_id = add(lifecycle, Status.FAILED, age=1)
    lifecycle.retry(job_id, "new-delivery")
    assert lifecycle.claim(job_id, job_id, RUNNER, "w", 3, 60).outcome is Outcome.SKIP
    assert store.get(job_id).status == Status.QUEUED
    assert lifecycle.claim(job_id, "new-delivery", RUNNER, "w", 3, 60).job.status == \
        Status.PROCESSING


def test_retention_removes_finished_jobs_from_every_index(store, lifecycle):
    old = add(lifecycle, Status.SUCCEEDED, age=0)
    active = add(lifecycle, Status.QUEUED, age=0)
    assert lifecycle.expire(now=time.time()) == 0  # not yet past retention

    assert lifecycle.expire(now=time.time() + 3601) == 1
    assert not store.exists(old) and store.exists(active)
    assert store.history(10, 0)[0] == 1
    assert Figures(store.redis).snapshot(0)["counts"][Status.SUCCEEDED] == 0


def test_service_removes_old_recordings_and_says_so(make_client, worker):
    small = make_client(max_recordings=2)
    ids = []
    for i in range(4):
        task_id = submit(small, samples.encode("wav", 1.0), f"r{i}.wav").get_json()["task_id"]
        wait_for(small, task_id)
        ids.append(task_id)
    submit_last = submit(small, samples.encode("wav", 1.0)).get_json()["task_id"]
    wait_for(small, submit_last)

    for old in ids[:3]:
        response = small.get(f"/api/v1/asr/audio/{old}")
        assert response.status_code == 410, old
        assert "removed" in response.get_json()["detail"]
        body = small.get(f"/api/v1/asr/result/{old}").get_json()
        assert body["audio_available"] is False and body["status"] == "succeeded"
        assert body["result"]["text"] is not None  # the transcript outlives the recording
    assert small.get(f"/api/v1/asr/audio/{ids[3]}").status_code == 200
    assert small.get(f"/api/v1/asr/audio/{submit_last}").status_code == 200
    history = {j["task_id"]: j for j in small.get("/api/v1/asr/history?limit=200")
               .get_json()["items"]}
    assert history[ids[0]]["audio_available"] is False
    assert small.post(f"/api/v1/asr/retry/{ids[0]}").status_code == 409  # succeeded


def test_history_pages_skip_expired_records(store, lifecycle):
    oldest, expired, newest = (add(lifecycle, Status.QUEUED, age=age) for age in (30, 20, 10))
    store.redis.delete(store.keys.job(expired))  # what the record's TTL backstop does

    total, page = store.history(limit=2, offset=0)

    assert [j.id for j in page] == [newest, oldest]
    assert total == 2  # the expired entry left the index when the page met it
    assert [j.id for j in store.history(limit=5, offset=0, status="queued")[1]] == \
        [newest, oldest]


def test_the_audio_budget_removes_finished_recordings_first_and_refuses_when_full(redis_db):
    clip = b"x" * 20_000  # each active job holds 20,000 + JOB_OVERHEAD_BYTES of the budget
    budget = 3 * (len(clip) + JOB_OVERHEAD_BYTES) + 10  # three active jobs fit, not four
    budgeted = Lifecycle(redis_db, retention_s=3600, max_recordings=100, max_stored_bytes=budget)
    store = JobStore(redis_db, max_recordings=100)
    done = add(budgeted, Status.SUCCEEDED, age=30, audio=clip)
    queued = [add(budgeted, Status.QUEUED, age=20, audio=clip),
              add(budgeted, Status.QUEUED, age=10, audio=clip)]
    assert store.audio(done) == clip  # 60,000 recording bytes <= budget
    third = add(budgeted, Status.QUEUED, age=5, audio=clip)  # 80,000 > budget: the finished one
    assert store.get(done).audio_available is False
    assert all(store.audio(i) == clip for i in [*queued, third])

    job_id = str(uuid.uuid4())
    job = Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
              content_type="audio/wav", size_bytes=len(clip), duration_s=1.0,
              created_at=time.time())
    assert budgeted.create(job, clip) == ("full", job_id)  # four active jobs would not fit
    assert not store.exists(job_id) and not redis_db.exists(store.keys.audio(job_id))
    assert Figures(redis_db).snapshot(0)["counts"][Status.QUEUED] == 3
    budgeted.delete(queued[0])  # room again
    assert budgeted.create(job, clip)[0] == "created"
