"""Recordings beyond MAX_RECORDINGS are removed, oldest first, never a queued or running one."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from asr_service.jobs import FAILED, PROCESSING, QUEUED, SUCCEEDED, Job, JobStore
from asr_service.runs import Outcome, claim
from tests import samples
from tests.integration.flow import submit, wait_for


@pytest.fixture
def store(redis_server) -> JobStore:
    """A job store on its own Redis database, so counts are exact."""
    client = redis.Redis.from_url(redis_server.url.replace("/0", "/3"))
    client.flushdb()
    return JobStore(client, retention_s=3600, max_recordings=2)


def add(store: JobStore, status: str, age: float) -> str:
    job_id = str(uuid.uuid4())
    now = time.time() - age
    store.create(Job(id=job_id, status=QUEUED, celery_id=job_id, filename="a.wav",
                     content_type="audio/wav", size_bytes=3, duration_s=1.0,
                     created_at=now, queued_at=now), b"abc")
    if status != QUEUED:
        assert claim(store, job_id, job_id, "w", 3, 60).outcome is Outcome.RUN
    if status not in (QUEUED, PROCESSING):
        store.mark_finished(job_id, job_id, status)
    return job_id


def test_oldest_finished_recordings_go_first_and_active_ones_stay(store):
    queued_old = add(store, QUEUED, age=50)
    done_old = add(store, SUCCEEDED, age=40)
    running = add(store, PROCESSING, age=30)
    failed = add(store, FAILED, age=20)
    newest = add(store, SUCCEEDED, age=10)

    removed = store.prune_recordings()

    assert removed == [done_old, failed, newest]
    assert store.audio(queued_old) == b"abc" and store.audio(running) == b"abc"
    gone = store.get(done_old)
    assert gone.audio_available is False and gone.status == SUCCEEDED


def test_pruning_waits_for_active_jobs_to_finish(store):
    first = add(store, QUEUED, age=30)
    add(store, QUEUED, age=20)
    add(store, QUEUED, age=10)
    assert store.prune_recordings() == []  # three recordings, all still needed

    claim(store, first, first, "w", 3, 60)
    store.mark_finished(first, first, SUCCEEDED)
    assert store.prune_recordings() == [first]


def test_stale_delivery_cannot_touch_a_retried_job(store):
    job_id = add(store, FAILED, age=1)
    store.requeue(job_id, "new-delivery")
    assert claim(store, job_id, job_id, "w", 3, 60).outcome is Outcome.SKIP  # old Celery id
    assert store.get(job_id).status == QUEUED
    assert claim(store, job_id, "new-delivery", "w", 3, 60).job.status == PROCESSING


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


def test_history_pages_skip_expired_records(store):
    oldest, expired, newest = (add(store, QUEUED, age=age) for age in (30, 20, 10))
    store.redis.delete(store.job_key(expired))  # what the record's TTL does

    total, page = store.history(limit=2, offset=0)

    assert [j.id for j in page] == [newest, oldest]
    assert total == 2  # the expired entry left the index when the page met it
    assert [j.id for j in store.history(limit=5, offset=0, status=QUEUED)[1]] == [newest, oldest]
