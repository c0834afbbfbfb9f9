"""Every endpoint's success path and main error path, on the real stack."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from asr_service.api.problems import PROBLEM_JSON
from asr_service.cluster import HEARTBEAT_TTL_S
from tests import samples
from tests.harness import eventually
from tests.integration.conftest import ROOT, settings_env
from tests.integration.flow import submit, wait_for


@pytest.fixture
def succeeded(client, worker) -> dict:
    """A job that ran to completion."""
    return wait_for(client, submit(client, samples.encode("wav", 2.0), "ok.wav")
                    .get_json()["task_id"])


@pytest.fixture
def idle_client(make_client):
    """An API sending to a queue no worker consumes: its jobs stay queued."""
    return make_client(queue_name=f"idle-{uuid.uuid4().hex[:6]}")


def corrupt_m4a() -> bytes:
    """Probes fine (its first frames decode) but breaks in the middle."""
    data = bytearray(samples.encode("m4a", 10.0))
    third = len(data) // 3
    data[third: 2 * third] = b"\x5a" * third
    return bytes(data)


def test_unknown_task_is_404_problem_on_every_task_endpoint(client):
    unknown = str(uuid.uuid4())
    for method, path in [("get", "result"), ("get", "audio"), ("post", "retry"),
                         ("delete", "task")]:
        response = getattr(client, method)(f"/api/v1/asr/{path}/{unknown}")
        assert response.status_code == 404, path
        assert response.content_type == PROBLEM_JSON
        assert unknown in response.get_json()["detail"]


def test_malformed_task_id_is_404(client):
    response = client.get("/api/v1/asr/result/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code == 404 and response.content_type == PROBLEM_JSON


def test_history_is_newest_first_paginated_and_filtered(client, worker):
    ids = [submit(client, samples.encode("wav", 1.0), f"h{i}.wav").get_json()["task_id"]
           for i in range(3)]
    for task_id in ids:
        wait_for(client, task_id)

    page = client.get("/api/v1/asr/history?limit=2&offset=0").get_json()
    assert [j["task_id"] for j in page["items"]] == ids[::-1][:2]
    assert page["total"] >= 3 and page["limit"] == 2
    second = client.get("/api/v1/asr/history?limit=1&offset=2").get_json()
    assert second["items"][0]["task_id"] == ids[0]
    done = client.get("/api/v1/asr/history?status=succeeded&limit=200").get_json()
    assert set(ids) <= {j["task_id"] for j in done["items"]}
    assert all(j["status"] == "succeeded" for j in done["items"])


def test_history_rejects_unknown_status(client):
    response = client.get("/api/v1/asr/history?status=finished")
    assert response.status_code == 422 and response.content_type == PROBLEM_JSON
    assert "status" in response.get_json()["errors"]
    assert "status: Must be one of" in response.get_json()["detail"]


def test_audio_download_returns_the_upload(client, worker):
    data = samples.encode("mp3", 1.0)
    task_id = submit(client, data, "réunion du 3 mai.mp3").get_json()["task_id"]
    response = client.get(f"/api/v1/asr/audio/{task_id}")
    assert response.status_code == 200
    assert response.data == data
    assert response.content_type == "audio/mpeg"
    assert "r%C3%A9union%20du%203%20mai.mp3" in response.headers["Content-Disposition"]
    wait_for(client, task_id)


def test_corrupt_audio_fails_the_job_and_retry_runs_it_again(client, worker):
    task_id = submit(client, corrupt_m4a(), "broken.m4a").get_json()["task_id"]
    failed = wait_for(client, task_id)
    assert failed["status"] == "failed" and failed["result"] is None
    assert failed["error"]["type"] == "audio-invalid"
    assert "could not be decoded" in failed["error"]["detail"]

    response = client.post(f"/api/v1/asr/retry/{task_id}")
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    again = wait_for(client, task_id)
    assert again["status"] == "failed" and again["attempts"] == 2


def test_retry_of_succeeded_job_is_409(client, succeeded):
    response = client.post(f"/api/v1/asr/retry/{succeeded['task_id']}")
    assert response.status_code == 409 and response.content_type == PROBLEM_JSON


def test_retry_of_queued_job_is_409_and_delete_cancels_it(idle_client):
    task_id = submit(idle_client, samples.encode("wav", 1.0)).get_json()["task_id"]
    assert idle_client.get(f"/api/v1/asr/result/{task_id}").get_json()["status"] == "queued"

    response = idle_client.post(f"/api/v1/asr/retry/{task_id}")
    assert response.status_code == 409
    assert "queued" in response.get_json()["detail"]

    assert idle_client.delete(f"/api/v1/asr/task/{task_id}").status_code == 204
    assert idle_client.get(f"/api/v1/asr/result/{task_id}").status_code == 404


def test_delete_removes_record_audio_result_and_history(client, succeeded):
    task_id = succeeded["task_id"]
    assert client.delete(f"/api/v1/asr/task/{task_id}").status_code == 204
    assert client.get(f"/api/v1/asr/result/{task_id}").status_code == 404
    assert client.get(f"/api/v1/asr/audio/{task_id}").status_code == 404
    history = client.get("/api/v1/asr/history?limit=200").get_json()
    assert task_id not in {j["task_id"] for j in history["items"]}
    celery = client.application.extensions["asr"].celery
    assert celery.backend.get_task_meta(task_id)["status"] == "PENDING"  # result forgotten


def only_the_session_worker(client) -> None:
    """Wait out the heartbeat of a worker an earlier test of this lane stopped (it drops out
    within HEARTBEAT_TTL_S if its goodbye did not land)."""
    eventually(lambda: [w["hostname"].split("@")[0] for w in
                        client.get("/api/v1/asr/queue/status").get_json()["workers"]]
               == ["test-worker"], HEARTBEAT_TTL_S + 5, interval=0.5,
               message="workers other than the session's stay listed")


def test_queue_status_counts_waiting_jobs_and_lists_workers(idle_client, worker):
    only_the_session_worker(idle_client)
    before = idle_client.get("/api/v1/asr/queue/status").get_json()
    ids = [submit(idle_client, samples.encode("wav", 1.0)).get_json()["task_id"]
           for _ in range(2)]
    status = idle_client.get("/api/v1/asr/queue/status").get_json()
    assert status["depth"] == before["depth"] + 2
    assert [w["hostname"].split("@")[0] for w in status["workers"]] == ["test-worker"]
    assert status["workers"][0]["concurrency"] == 1
    assert status["workers"][0]["device"] == "cpu"  # ASR_USE_GPU=false
    assert status["workers"][0]["engines_ready"] == 1
    for task_id in ids:
        idle_client.delete(f"/api/v1/asr/task/{task_id}")


def test_health_is_ok_with_redis_and_a_worker(client, worker):
    only_the_session_worker(client)
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "redis": True, "workers_online": 1,
                                    "reasons": []}


def test_health_is_503_problem_when_redis_is_unreachable(make_client):
    from tests.integration.conftest import free_port

    response = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0").get("/api/v1/health")
    assert response.status_code == 503 and response.content_type == PROBLEM_JSON
    assert response.get_json()["redis"] is False
    assert "redis unreachable" in response.get_json()["detail"]


def test_stats_reflect_finished_jobs(client, succeeded):
    stats = client.get("/api/v1/stats").get_json()
    assert stats["by_status"]["succeeded"] >= 1
    assert stats["audio_seconds_total"] >= 2.0
    assert stats["end_to_end_s"]["p50"] > 0 and stats["jobs_per_minute"] > 0
    assert 0 < stats["average_rtf"] < 5


@pytest.mark.parametrize(("data", "status", "kind"), [
    (b"", 422, "audio-invalid"),
    (b"this is not audio" * 100, 422, "audio-invalid"),
    (samples.encode("wav", 3.0), 422, "audio-too-long"),
])
def test_rejected_upload_queues_nothing(make_client, data, status, kind):
    short_limit = make_client(max_audio_seconds=2)
    before = short_limit.get("/api/v1/asr/queue/status").get_json()["depth"]
    total = short_limit.get("/api/v1/asr/history").get_json()["total"]
    response = submit(short_limit, data, "x.wav")
    assert response.status_code == status and response.content_type == PROBLEM_JSON
    assert response.get_json()["type"] == f"/problems/{kind}"
    assert short_limit.get("/api/v1/asr/queue/status").get_json()["depth"] == before
    assert short_limit.get("/api/v1/asr/history").get_json()["total"] == total


def test_api_process_never_imports_funasr_or_torch(settings):
    code = (
        "import sys, wsgi\n"
        "client = wsgi.app.test_client()\n"
        "assert client.get('/api/v1/health').status_code in (200, 503)\n"
        "assert client.get('/api/v1/stats').status_code == 200\n"
        "heavy = sorted(m for m in ('torch', 'funasr', 'modelscope') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=settings_env(settings),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout


def test_history_page_far_beyond_the_end_is_empty(client):
    body = client.get("/api/v1/asr/history?offset=1000000000&limit=5").get_json()
    assert body["items"] == [] and body["total"] >= 0
