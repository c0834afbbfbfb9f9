"""Redis down: quick 503s everywhere, and API, workers and queued jobs come back on their own."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest

from asr_service.api.problems import PROBLEM_JSON
from asr_service.app import create_app
from tests import samples
from tests.harness import eventually, report
from tests.integration.conftest import RedisServer, Worker
from tests.integration.flow import submit, wait_for

pytestmark = pytest.mark.slow  # Redis stopped and restarted under a worker


@pytest.fixture
def persistent_redis(tmp_path):
    server = RedisServer(tmp_path / "redis-data", persistent=True)
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


def every_endpoint(client, task_id: str) -> dict[str, object]:
    """One request to each endpoint of the API."""
    calls = {
        "submit": lambda: submit(client, samples.encode("wav", 1.0)),
        "result": lambda: client.get(f"/api/v1/asr/result/{task_id}"),
        "history": lambda: client.get("/api/v1/asr/history"),
        "audio": lambda: client.get(f"/api/v1/asr/audio/{task_id}"),
        "queue": lambda: client.get("/api/v1/asr/queue/status"),
        "retry": lambda: client.post(f"/api/v1/asr/retry/{task_id}"),
        "delete": lambda: client.delete(f"/api/v1/asr/task/{task_id}"),
        "health": lambda: client.get("/api/v1/health"),
        "stats": lambda: client.get("/api/v1/stats"),
    }
    answers = {}
    for name, call in calls.items():
        started = time.monotonic()
        response = call()
        answers[name] = (response, time.monotonic() - started)
    return answers


def test_redis_restart_answers_503_then_recovers_and_keeps_queued_jobs(
        settings, persistent_redis, tmp_path):
    base = replace(settings, redis_url=persistent_redis.url, log_dir=str(tmp_path / "logs"),
                   queue_name=f"live-{uuid.uuid4().hex[:6]}")
    parked = replace(base, queue_name=f"parked-{uuid.uuid4().hex[:6]}")  # no worker yet
    live, parked_client = create_app(base).test_client(), create_app(parked).test_client()
    worker = Worker(base, "outage-live")
    worker.start()
    try:
        queued = [submit(parked_client, samples.encode("wav", 1.0)).get_json()["task_id"]
                  for _ in range(3)]

        persistent_redis.stop()
        answers = every_endpoint(live, queued[0])
        for name, (response, seconds) in answers.items():
            assert response.status_code == 503, (name, response.get_json())
            assert response.content_type == PROBLEM_JSON, name
            assert seconds < 3, (name, seconds)
        assert "redis unreachable" in answers["health"][0].get_json()["detail"]
        slowest = max(seconds for _, seconds in answers.values())

        persistent_redis.start()  # same port, same append-only file
        restarted = time.monotonic()
        eventually(lambda: live.get("/api/v1/health").status_code == 200, 60, interval=0.5,
                   message=lambda: str(live.get("/api/v1/health").get_json()))
        recovered_in = time.monotonic() - restarted
        assert wait_for(live, submit(live, samples.encode("wav", 1.0)).get_json()["task_id"],
                        timeout=60)["status"] == "succeeded"

        assert [parked_client.get(f"/api/v1/asr/result/{t}").get_json()["status"]
                for t in queued] == ["queued"] * 3
        assert parked_client.get("/api/v1/asr/queue/status").get_json()["depth"] == 3
        late = Worker(parked, "outage-parked")
        late.start()
        try:
            assert [wait_for(parked_client, t)["status"] for t in queued] == ["succeeded"] * 3
        finally:
            late.stop()
    finally:
        worker.stop()
    report("redis", redis_restarts=1, endpoints_503=len(answers),
           slowest_503_s=round(slowest, 3), api_healthy_again_after_s=round(recovered_in, 1),
           queued_jobs_kept=len(queued), lost=0)
