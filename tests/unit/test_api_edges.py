"""The API's edges without Redis: Host allow-list, Redis error replies, an unknown outcome, the
in-flight body budget, and a deleted job stopping through its lease."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from asr_service.api.inflight import Budget
from asr_service.app import create_app
from asr_service.runs import holding_lease
from asr_service.settings import Settings, SettingsError
from tests.harness import eventually
from tests.samples import encode
from tests.unit.test_api_errors import assert_problem, closed_port


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                              log_dir=str(log_dir), max_upload_mb=1, max_inflight_upload_mb=2,
                              public_url="https://asr.example.com"))

    @app.route("/test/reply/<code>")
    def reply(code: str) -> None:
        raise redis.exceptions.ResponseError(f"{code} something went wrong")

    @app.route("/test/script-reply")
    def script_reply() -> None:
        raise redis.exceptions.ResponseError(
            "Error in script 'f_0123': @user_script:12: NOREPLICAS Not enough good replicas")

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def submit(client: FlaskClient, data: bytes) -> object:
    return client.post("/api/v1/asr/submit", data={"audio": (io.BytesIO(data), "a.wav")},
                       content_type="multipart/form-data")


# --- L6: Host allow-list (DNS rebinding) ---

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io"])
def test_a_foreign_host_header_is_400_problem(client: FlaskClient, host: str) -> None:
    body = assert_problem(client.get("/api/v1/asr/history", headers={"Host": host}), 400)
    assert body["type"] == "/problems/bad-request"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "asr.example.com"])
def test_loopback_names_and_the_public_url_host_are_answered(client: FlaskClient,
                                                             host: str) -> None:
    # Redis is down here: 503 means the request got past the Host check.
    assert client.get("/api/v1/asr/history", headers={"Host": host}).status_code == 503


def test_allowed_hosts_default_and_explicit() -> None:
    assert Settings().allowed_hosts == ["localhost", "127.0.0.1", "127.0.0.1"]
    assert Settings(api_host="10.0.0.5", public_url="https://asr.example.com:8443/x",
                    ).allowed_hosts == ["localhost", "127.0.0.1", "10.0.0.5",
                                        "asr.example.com"]
    assert Settings(api_host="0.0.0.0").allowed_hosts is None  # names unknowable: any
    assert Settings(api_allowed_hosts="a.example, .b.example").allowed_hosts == [
        "a.example", ".b.example"]
    assert Settings(api_allowed_hosts="*").allowed_hosts is None


# --- L7: Redis replies that mean "not now" ---

@pytest.mark.parametrize("code", ["NOREPLICAS", "BUSY", "MASTERDOWN", "LOADING", "TRYAGAIN",
                                  "CLUSTERDOWN"])
def test_unavailable_redis_replies_are_503_with_retry_after(client: FlaskClient,
                                                            code: str) -> None:
    response = client.get(f"/test/reply/{code}")
    body = assert_problem(response, 503)
    assert body["type"] == "/problems/queue-unavailable"
    assert response.headers["Retry-After"] == "5"
    assert code not in body["detail"]  # the driver's text stays in the log


def test_a_reply_inside_a_script_error_is_recognised(client: FlaskClient) -> None:
    assert assert_problem(client.get("/test/script-reply"), 503)


def test_any_other_redis_reply_stays_a_500(client: FlaskClient) -> None:
    body = assert_problem(client.get("/test/reply/WRONGTYPE"), 500)
    assert "WRONGTYPE" not in body["detail"]


# --- M5: a timeout after the create script was sent ---

def test_a_timeout_while_storing_a_submit_is_503_naming_the_task(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    lifecycle = app.extensions["asr"].jobs.lifecycle

    def times_out(*_: object, **__: object) -> None:
        raise redis.TimeoutError("Timeout reading from 127.0.0.1:6379")

    monkeypatch.setattr(lifecycle, "create", times_out)
    response = submit(client, encode("wav", seconds=1.0))

    body = assert_problem(response, 503)
    assert body["type"] == "/problems/outcome-unknown"
    assert len(body["task_id"]) == 36
    assert f"/api/v1/asr/result/{body['task_id']}" in body["detail"]
    assert "same Idempotency-Key is safe" in body["detail"]
    assert response.headers["Retry-After"] == "5"
    assert "6379" not in response.get_data(as_text=True)


# --- M8: bodies in flight ---

def test_budget_is_all_or_nothing() -> None:
    budget = Budget(10)
    assert budget.reserve(6) and not budget.reserve(5) and budget.reserve(4)
    budget.release(6)
    assert budget.held == 4


def test_a_body_over_the_budget_is_503_unread_and_nothing_stays_held(app: Flask,
                                                                     client: FlaskClient) -> None:
    budget: Budget = app.extensions["asr_inflight"]
    held_elsewhere = budget.limit - 100_000  # other requests in flight
    assert budget.reserve(held_elsewhere)
    try:
        data = encode("wav", seconds=10.0)  # ~320 kB: more than what is left
        response = submit(client, data)
        body = assert_problem(response, 503)
        assert body["type"] == "/problems/uploads-busy"
        assert response.headers["Retry-After"] == "5"
    finally:
        budget.release(held_elsewhere)
    assert budget.held == 0
    # With room again, the same upload gets past the budget (to Redis, down here: 503 unknown).
    assert submit(client, data).get_json()["type"] == "/problems/outcome-unknown"
    assert budget.held == 0


def test_the_in_flight_budget_must_take_the_largest_upload() -> None:
    with pytest.raises(SettingsError, match="MAX_INFLIGHT_UPLOAD_MB=50 is below MAX_UPLOAD_MB"):
        Settings.from_env({"MAX_INFLIGHT_UPLOAD_MB": "50"})
    assert Settings.from_env({"MAX_INFLIGHT_UPLOAD_MB": "100"}).max_inflight_upload_mb == 100


# --- L6: Flower ---

def test_flower_refuses_an_unauthenticated_api() -> None:
    problem = Settings(flower_unauthenticated_api=True).flower_exposure_error()
    assert problem and "FLOWER_BASIC_AUTH" in problem
    assert Settings(flower_unauthenticated_api=True,
                    flower_basic_auth="ops:pw").flower_exposure_error() is None


# --- L5: a deleted job stops itself ---

class _Lifecycle:
    """Renewal answers 'done'; the record exists or not."""

    def __init__(self, record_exists: bool) -> None:
        self.renewals = threading.Event()
        self.redis = SimpleNamespace(exists=lambda key: int(record_exists))
        self.keys = SimpleNamespace(job=lambda job_id: f"job:{job_id}")

    def renew(self, job_id: str, token: str, lease_s: float) -> str:
        self.renewals.set()
        return "done"


@pytest.mark.parametrize(("record_exists", "stopped"), [(False, True), (True, False)])
def test_done_stops_the_body_only_when_the_job_was_deleted(record_exists: bool,
                                                           stopped: bool) -> None:
    lifecycle = _Lifecycle(record_exists)
    lost = threading.Event()
    with holding_lease(lifecycle, "j1", "tok", 0.03, on_lost=lost.set):  # type: ignore[arg-type]
        eventually(lifecycle.renewals.is_set, 5, interval=0.01)
        if stopped:
            eventually(lost.is_set, 5, interval=0.01)
    assert lost.is_set() is stopped


def test_openapi_documents_replication_pending(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in ("SubmitResponse", "Retried"):
        assert schemas[name]["properties"]["replication"]["enum"] == ["pending"]
    delete = client.get("/openapi.json").get_json()["paths"]["/api/v1/asr/task/{task_id}"]
    assert "Replication" in delete["delete"]["responses"]["204"]["headers"]
