"""A full Redis (maxmemory, noeviction) and a flood of tiny jobs: the API answers 202 or
503/429 with Retry-After, workers live through it, and no accepted job is lost."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import pytest
import redis

from asr_service.app import create_app
from asr_service.cluster import Cluster
from asr_service.jobs import Job, Keys, Status
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from tests import samples
from tests.harness import eventually
from tests.integration.conftest import LONG_S, RedisServer, report
from tests.integration.flow import submit, wait_for

pytestmark = pytest.mark.slow  # its own Redis filled to maxmemory under lane workers
KEYS = Keys()


def smallest_wav() -> bytes:
    """The smallest upload the API accepts: a 46-byte WAV of one sample."""
    return samples.silent_wav(2, rate=16000)


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    raw = redis.Redis.from_url(server.url)
    raw.config_set("maxmemory-policy", "noeviction")
    yield server
    server.stop()


def flood(client, limit: int = 3000, accepted: list[str] | None = None) -> Counter[int]:
    """Submit the smallest upload until refused; every refusal is a problem with Retry-After."""
    codes: Counter[int] = Counter()
    for _ in range(limit):
        response = submit(client, smallest_wav(), "t.wav")
        codes[response.status_code] += 1
        if response.status_code == 202 and accepted is not None:
            accepted.append(response.get_json()["task_id"])
        if response.status_code != 202:
            assert response.status_code in (429, 503), response.get_json()
            assert response.headers["Retry-After"].isdigit()
            assert response.content_type == "application/problem+json"
            return codes
    raise AssertionError(f"{limit} tiny submits were all accepted")


def test_a_flood_of_the_smallest_uploads_ends_in_429_and_503_not_oom(settings, own_redis,
                                                                     tmp_path):
    raw = redis.Redis.from_url(own_redis.url)
    base = replace(settings, redis_url=own_redis.url, log_dir=str(tmp_path))
    used = raw.info("memory")["used_memory"]
    raw.config_set("maxmemory", used + 4_000_000)  # room for ~1000 jobs: the caps bite first

    per_key = flood(create_app(replace(base, max_queued_jobs=40, max_queued_jobs_per_key=25))
                    .test_client())
    total = flood(create_app(replace(base, max_queued_jobs=40, max_queued_jobs_per_key=0))
                  .test_client())

    assert per_key == {202: 25, 429: 1}
    assert total == {202: 15, 503: 1}
    assert raw.zcard(KEYS.status("queued")) == 40
    report("tiny-flood", accepted=40, refused_per_key=per_key[429], refused_total=total[503],
           budget_bytes_per_job=int(raw.hget(f"{KEYS.prefix}recordings:bytes", "active")) // 40)
    raw.config_set("maxmemory", 0)


def test_a_full_redis_keeps_its_workers_and_loses_no_accepted_job(lane, own_redis):
    raw = redis.Redis.from_url(own_redis.url)
    made = lane(redis_url=own_redis.url, result_retention_s=2)
    worker = made.worker()
    running = submit(made.client, samples.encode("wav", LONG_S)).get_json()["task_id"]
    waiting = [submit(made.client, samples.encode("wav", 2.0)).get_json()["task_id"]
               for _ in range(3)]
    made.wait_processing(running)
    raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 100_000)
    full_at = time.monotonic()

    accepted = [*waiting]
    codes = flood(made.client, accepted=accepted)
    raw.config_set("maxmemory", 1)  # and it stays full, whatever a finished job frees
    # The running job still ends (its first write frees memory); the worker then takes the next
    # message, and Redis refuses to record it as unacked: the worker must live on.
    assert wait_for(made.client, running)["status"] == "succeeded"
    eventually(lambda: "OutOfMemoryError" in worker.log_path.read_text(errors="replace"), 60,
               message="the worker never met the full Redis")
    # A queued job waits three times RESULT_RETENTION_S, and is still there, with no TTL.
    eventually(lambda: time.monotonic() - full_at > 3 * made.settings.result_retention_s, 30)
    assert all(raw.ttl(KEYS.job(i)) == -1 and raw.ttl(KEYS.audio(i)) == -1 for i in waiting)
    late = made.worker(start=False)  # a worker started while Redis is full waits for it
    late.start(wait=False)
    eventually(lambda: "maxmemory" in late.log_path.read_text(errors="replace"), 60,
               message="the late worker never met the full Redis")
    assert worker.proc.poll() is None and late.proc.poll() is None

    raw.config_set("maxmemory", 0)
    freed_at = time.monotonic()

    def succeeded() -> bool:  # from the business log: with a 2 s retention, records go soon
        return {e["job_id"] for e in made.events() if e["event"] == "job.succeeded"} >= \
            set(accepted)

    eventually(succeeded, 120, interval=0.5, message="an accepted job never succeeded")
    recovery_s = time.monotonic() - freed_at
    failed = [e for e in made.events() if e["event"] in ("job.failed", "job.cancelled")]

    assert failed == []
    late.wait_ready()
    assert worker.proc.poll() is None
    assert {k.decode(): int(v) for k, v in
            raw.hgetall(f"{KEYS.prefix}recordings:bytes").items()}["active"] == 0
    assert raw.zcard(KEYS.status("queued")) + raw.zcard(KEYS.status("processing")) == 0
    assert not raw.exists(f"{KEYS.prefix}active:costs", f"{KEYS.prefix}active:owner:")
    report("redis-full", accepted=len(accepted), refused=codes[503] + codes[429],
           workers=2, workers_exited=0, lost=0, oom_s=round(freed_at - full_at, 1),
           recovery_s=round(recovery_s, 1))


def test_a_claim_under_a_full_redis_writes_nothing_and_works_once_memory_is_back(own_redis):
    raw = redis.Redis.from_url(own_redis.url)
    lifecycle = Lifecycle(raw, retention_s=60, max_recordings=10)
    now = time.time()
    job = Job(id="j1", status=Status.QUEUED, celery_id="j1", filename="a.wav",
              content_type="audio/wav", size_bytes=3, duration_s=1.0, created_at=now,
              queued_at=now)
    lifecycle.create(job, b"abc")
    raw.set(KEYS.runner("r1"), "host:1")
    raw.config_set("maxmemory", 1)

    with pytest.raises(redis.exceptions.OutOfMemoryError):
        lifecycle.claim("j1", "j1", Runner("r1", 1), "w", 3, 60)
    assert raw.hget(KEYS.job("j1"), "status") == b'"queued"'
    assert raw.hget(KEYS.job("j1"), "attempts") == b"0" and not raw.exists(KEYS.lease("j1"))

    raw.config_set("maxmemory", 0)
    assert lifecycle.claim("j1", "j1", Runner("r1", 1), "w", 3, 60).outcome is Outcome.OK


def test_a_model_loaded_while_redis_is_full_is_announced_once_there_is_room(lane, own_redis):
    """Found by the chaos soak: the one write saying "my model is loaded" was refused and never
    made again, so the worker ran jobs while /health and ?ready=workers said it never loaded."""
    raw = redis.Redis.from_url(own_redis.url)
    made = lane(redis_url=own_redis.url)
    raw.config_set("maxmemory", 1)
    worker = made.worker(start=False)
    worker.start(wait=False)
    eventually(lambda: "engine ready" in worker.log_path.read_text(errors="replace"), 120,
               message="the model never loaded")
    raw.config_set("maxmemory", 0)
    cluster = Cluster(raw, made.settings.queue_name)
    eventually(lambda: any(w.pid == worker.proc.pid and w.engines_ready
                           for w in cluster.workers()), 20, interval=0.2,
               message="the loaded model was never announced")
