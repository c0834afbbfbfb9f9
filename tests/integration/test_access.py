"""API keys, rate limits and idempotent submits, on the real API and Redis."""

from __future__ import annotations

import io
import os
import subprocess
import uuid

import pytest

from asr_service.api.problems import PROBLEM_JSON
from tests import samples
from tests.integration.conftest import ROOT
from tests.integration.flow import wait_for


@pytest.fixture
def keyed(make_client):
    return make_client(api_keys="alpha-key, beta-key")


def test_every_endpoint_but_health_needs_a_key(keyed):
    some = str(uuid.uuid4())
    calls = [("post", "/api/v1/asr/submit"), ("get", f"/api/v1/asr/result/{some}"),
             ("get", "/api/v1/asr/history"), ("get", f"/api/v1/asr/audio/{some}"),
             ("get", "/api/v1/asr/queue/status"), ("post", f"/api/v1/asr/retry/{some}"),
             ("delete", f"/api/v1/asr/task/{some}"), ("get", "/api/v1/stats")]
    for method, path in calls:
        response = getattr(keyed, method)(path)
        assert response.status_code == 401, path
        assert response.content_type == PROBLEM_JSON
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.get("/api/v1/health").status_code in (200, 503)  # never 401


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer beta-key"},
                                     {"X-API-Key": "alpha-key"}])
def test_a_valid_key_in_either_header_is_accepted(keyed, headers):
    assert keyed.get("/api/v1/asr/history", headers=headers).status_code == 200


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer alpha"},
                                     {"X-API-Key": "alpha-key, beta-key"},
                                     {"Authorization": "Basic alpha-key"}])
def test_a_wrong_key_is_401(keyed, headers):
    response = keyed.get("/api/v1/asr/history", headers=headers)
    assert response.status_code == 401 and response.content_type == PROBLEM_JSON


def test_rate_limit_is_per_key_with_retry_after(make_client):
    limited = make_client(api_keys="one,two", rate_limit="3/minute")
    answers = [limited.get(path, headers={"X-API-Key": "one"}).status_code
               for path in ("/api/v1/asr/history", "/api/v1/stats", "/api/v1/asr/history",
                            "/api/v1/stats")]  # one budget for all endpoints
    assert answers == [200, 200, 200, 429]
    refused = limited.get("/api/v1/asr/history", headers={"X-API-Key": "one"})
    assert refused.content_type == PROBLEM_JSON
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert "3 per 1 minute" in refused.get_json()["detail"]
    assert limited.get("/api/v1/asr/history", headers={"X-API-Key": "two"}).status_code == 200
    assert limited.get("/api/v1/health").status_code != 429  # probes are never limited


def test_same_idempotency_key_returns_the_same_task_once(client, worker):
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    data = samples.encode("wav", 1.0)
    first = submit_with(client, data, key)
    task_id = first.get_json()["task_id"]
    wait_for(client, task_id)
    again = submit_with(client, data, key)

    assert first.status_code == again.status_code == 202
    assert again.get_json()["task_id"] == task_id
    assert again.get_json()["status"] == "succeeded"
    assert again.headers["Idempotent-Replayed"] == "true"
    other = submit_with(client, data, {"Idempotency-Key": f"order-{uuid.uuid4()}"})
    assert other.get_json()["task_id"] != task_id
    history = client.get("/api/v1/asr/history?limit=200").get_json()["items"]
    assert [j["task_id"] for j in history].count(task_id) == 1


def test_idempotency_keys_of_different_clients_do_not_collide(make_client):
    keyed = make_client(api_keys="one,two", queue_name="parked-idempotency")
    data = samples.encode("wav", 1.0)
    key = {"Idempotency-Key": "same-key"}
    mine = submit_with(keyed, data, {**key, "X-API-Key": "one"}).get_json()["task_id"]
    theirs = submit_with(keyed, data, {**key, "X-API-Key": "two"}).get_json()["task_id"]
    assert mine != theirs
    for task_id, api_key in ((mine, "one"), (theirs, "two")):
        keyed.delete(f"/api/v1/asr/task/{task_id}", headers={"X-API-Key": api_key})


def test_malformed_idempotency_key_is_422(client):
    response = submit_with(client, samples.encode("wav", 1.0), {"Idempotency-Key": "x" * 300})
    assert response.status_code == 422 and response.content_type == PROBLEM_JSON
    assert "Idempotency-Key" in response.get_json()["detail"]


def submit_with(client, data: bytes, headers: dict[str, str]):
    """Submit with extra headers."""
    return client.post("/api/v1/asr/submit", headers=headers, content_type="multipart/form-data",
                       data={"audio": (io.BytesIO(data), "a.wav")})


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1 10.0.0.5", "::"])
def test_make_runs_redis_refuses_to_listen_beyond_loopback_without_a_password(bind: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "redis.sh")], capture_output=True,
                          text=True, timeout=30, env={**env, "REDIS_BIND": bind})
    assert done.returncode == 1 and "set REDIS_PASSWORD" in done.stderr, done
