"""Audio in Redis is bounded: a full budget or a full Redis is a 503 to retry, storing nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis

from asr_service.api.problems import PROBLEM_JSON
from asr_service.app import create_app
from tests import samples
from tests.integration.conftest import RedisServer
from tests.integration.flow import submit


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


def test_submit_over_the_audio_budget_is_503_and_stores_nothing(settings, own_redis, tmp_path):
    client = create_app(replace(settings, redis_url=own_redis.url, max_stored_audio_mb=1,
                                log_dir=str(tmp_path))).test_client()
    clip = samples.encode("wav", 20.0)  # 640 KB: one fits in 1 MB, two do not
    first = submit(client, clip)
    assert first.status_code == 202  # no worker: it stays queued, holding its recording

    refused = submit(client, clip)

    assert refused.status_code == 503 and refused.content_type == PROBLEM_JSON
    assert refused.headers["Retry-After"].isdigit()
    assert "MAX_STORED_AUDIO_MB" in refused.get_json()["detail"]
    history = client.get("/api/v1/asr/history").get_json()
    assert history["total"] == 1 and history["items"][0]["task_id"] == first.get_json()["task_id"]
    assert client.get("/api/v1/asr/queue/status").get_json()["depth"] == 1


def test_a_redis_out_of_memory_is_503_with_retry_after(settings, own_redis, tmp_path):
    raw = redis.Redis.from_url(own_redis.url)
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 200_000)
    client = create_app(replace(settings, redis_url=own_redis.url,
                                log_dir=str(tmp_path))).test_client()
    submit(client, samples.encode("wav", 20.0))  # the write that crosses maxmemory

    full = submit(client, samples.encode("wav", 1.0))

    assert full.status_code == 503 and full.content_type == PROBLEM_JSON
    assert full.headers["Retry-After"].isdigit()
    assert "out of memory" in full.get_json()["detail"]
    raw.config_set("maxmemory", 0)
