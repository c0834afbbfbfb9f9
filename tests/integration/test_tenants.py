"""API keys are tenants: a key sees only its own jobs, an admin key sees all (real API, Redis).

The jobs wait on a queue no worker consumes: ownership is decided by the API and the Lua
scripts, so no job has to run. Failed and processing jobs are made through the app's own
Lifecycle, as a worker would.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient

from asr_service.api.problems import PROBLEM_JSON
from asr_service.errors import JobNotFound
from asr_service.jobs import ErrorType
from asr_service.lifecycle import Runner
from tests import samples
from tests.integration.conftest import report

QUEUE = "parked-tenants"  # no worker consumes it: jobs stay queued


@dataclass
class Tenants:
    """An API with keys a, b and the admin key root, and the jobs each submitted."""

    client: FlaskClient
    keys: dict[str, str]
    mine: dict[str, list[str]]

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        headers = {"X-API-Key": self.keys[who]} if who else {}
        return getattr(self.client, method)(path, headers=headers, **kw)

    def submit(self, who: str) -> str:
        response = self.call(who, "post", "/api/v1/asr/submit",
                             content_type="multipart/form-data",
                             data={"audio": (io.BytesIO(samples.encode("wav", 1.0)), "a.wav")})
        assert response.status_code == 202, response.get_json()
        self.mine.setdefault(who, []).append(response.get_json()["task_id"])
        return self.mine[who][-1]

    def history(self, who: str, query: str = "") -> list[str]:
        body = self.call(who, "get", f"/api/v1/asr/history?limit=200{query}").get_json()
        return [item["task_id"] for item in body["items"]]

    @property
    def lifecycle(self) -> Any:
        return self.client.application.extensions["asr"].jobs.lifecycle

    @property
    def store(self) -> Any:
        return self.client.application.extensions["asr"].store


@pytest.fixture
def tenants(make_client):
    tag = uuid.uuid4().hex[:8]  # fresh keys: fresh tenants, whatever the session stored
    keys = {"a": f"a-{tag}", "b": f"b-{tag}", "root": f"root-{tag}"}
    made = Tenants(make_client(api_keys=f"{keys['a']},{keys['b']}",
                               admin_api_keys=keys["root"], queue_name=QUEUE), keys, {})
    yield made
    for ids in made.mine.values():
        for task_id in ids:
            made.call("root", "delete", f"/api/v1/asr/task/{task_id}")


def fail(tenants: Tenants, task_id: str) -> None:
    """The job fails as a worker would record it (so it can be retried)."""
    assert tenants.lifecycle.fail(task_id, task_id, ErrorType.AUDIO_INVALID, "bad audio")


def assert_unknown(response: Any, task_id: str) -> None:
    """The very answer an id never submitted gets."""
    assert response.status_code == 404 and response.content_type == PROBLEM_JSON
    assert response.get_json()["detail"] == (
        f"no task with id {task_id} (never submitted, deleted or expired)")


def test_another_keys_task_is_404_on_every_per_task_route(tenants):
    theirs = tenants.submit("a")
    failed = tenants.submit("a")
    fail(tenants, failed)
    calls = [("get", f"/api/v1/asr/result/{theirs}"),
             ("get", f"/api/v1/asr/result/{theirs}?format=txt"),
             ("get", f"/api/v1/asr/result/{theirs}?format=srt"),
             ("get", f"/api/v1/asr/audio/{theirs}"),
             ("post", f"/api/v1/asr/retry/{failed}"),
             ("delete", f"/api/v1/asr/task/{theirs}"),
             ("delete", f"/api/v1/asr/task/{failed}")]
    for method, path in calls:
        task_id = path.split("/")[-1].split("?")[0]
        assert_unknown(tenants.call("b", method, path), task_id)
    # Nothing changed: the owner still reads, downloads and retries its jobs.
    assert tenants.call("a", "get", f"/api/v1/asr/result/{theirs}").get_json()["status"] == \
        "queued"
    assert tenants.call("a", "get", f"/api/v1/asr/audio/{theirs}").status_code == 200
    assert tenants.call("a", "get", f"/api/v1/asr/result/{failed}").get_json()["status"] == \
        "failed"
    assert tenants.call("a", "post", f"/api/v1/asr/retry/{failed}").status_code == 202
    assert tenants.call("a", "delete", f"/api/v1/asr/task/{theirs}").status_code == 204


def test_long_poll_of_another_keys_task_is_404_at_once(tenants):
    theirs = tenants.submit("a")  # queued for good: a wait on it would last the full 30 s
    started = time.monotonic()
    response = tenants.call("b", "get", f"/api/v1/asr/result/{theirs}?wait=30")
    took = time.monotonic() - started
    assert_unknown(response, theirs)
    report("tenant long-poll 404", seconds=round(took, 3))
    assert took < 15  # not held for the 30 s a waiting owner would be


def test_history_shows_a_key_only_its_own_jobs_and_the_admin_all(tenants):
    a1, a2, b1 = tenants.submit("a"), tenants.submit("a"), tenants.submit("b")
    fail(tenants, a2)
    assert tenants.history("a") == [a2, a1]
    assert tenants.history("b") == [b1]
    assert set(tenants.history("root")) >= {a1, a2, b1}
    for query, a_sees, b_sees in (("&status=queued", [a1], [b1]),
                                  ("&status=failed", [a2], []),
                                  ("&status=succeeded", [], [])):
        assert tenants.history("a", query) == a_sees
        assert tenants.history("b", query) == b_sees
    assert set(tenants.history("root", "&status=queued")) >= {a1, b1}
    body = tenants.call("b", "get", "/api/v1/asr/history?limit=1").get_json()
    assert body["total"] == 1  # the total is the tenant's own too


def test_admin_key_reads_retries_and_deletes_any_tenants_job(tenants):
    theirs, failed = tenants.submit("a"), tenants.submit("b")
    fail(tenants, failed)
    assert tenants.call("root", "get", f"/api/v1/asr/result/{theirs}").status_code == 200
    assert tenants.call("root", "get", f"/api/v1/asr/audio/{theirs}").status_code == 200
    assert tenants.call("root", "post", f"/api/v1/asr/retry/{failed}").status_code == 202
    assert tenants.call("root", "delete", f"/api/v1/asr/task/{theirs}").status_code == 204
    assert tenants.history("a") == []
    assert tenants.call("root", "get", "/api/v1/asr/history").status_code == 200


def test_retry_and_delete_check_the_owner_in_the_same_atomic_step(tenants):
    theirs = tenants.submit("a")
    fail(tenants, theirs)
    lifecycle, stranger = tenants.lifecycle, "key:0000000000000000"
    with pytest.raises(JobNotFound):
        lifecycle.retry(theirs, f"{theirs}.retry.x", owner=stranger)
    with pytest.raises(JobNotFound):
        lifecycle.delete(theirs, owner=stranger)
    job = tenants.store.get(theirs)
    assert job.status == "failed" and job.celery_id == theirs  # untouched
    owner = job.owner
    assert owner.startswith("key:") and len(owner) == 20
    assert lifecycle.retry(theirs, f"{theirs}.retry.y", owner=owner).status == "queued"
    assert lifecycle.delete(theirs, owner=owner).id == theirs


def test_tenant_indexes_follow_every_transition_and_removal(tenants):
    task_id = tenants.submit("a")
    owner, keys, db = tenants.store.get(task_id).owner, tenants.store.keys, tenants.store.redis

    def where() -> list[str]:
        return [s for s in ("queued", "processing", "failed")
                if db.zscore(keys.owner_status(owner, s), task_id) is not None]

    assert db.zscore(keys.owner_history(owner), task_id) is not None and where() == ["queued"]
    tenants.lifecycle.claim(task_id, task_id, Runner("tenant-test", 1), "w", 3, 60)
    assert where() == ["processing"]
    fail(tenants, task_id)
    assert where() == ["failed"]
    tenants.call("a", "delete", f"/api/v1/asr/task/{task_id}")
    assert where() == [] and db.zscore(keys.owner_history(owner), task_id) is None


def test_an_expired_record_is_pruned_from_its_tenants_indexes(tenants):
    gone, kept = tenants.submit("a"), tenants.submit("a")
    store = tenants.store
    owner = store.get(gone).owner
    store.redis.delete(store.keys.job(gone))  # its TTL ran out before the retention sweep
    assert tenants.history("a") == [kept]
    assert tenants.history("a", "&status=queued") == [kept]
    assert store.redis.zscore(store.keys.owner_history(owner), gone) is None
    assert store.redis.zscore(store.keys.owner_status(owner, "queued"), gone) is None


def test_global_views_list_only_the_keys_own_task_ids(tenants):
    theirs = tenants.submit("a")
    tenants.lifecycle.claim(theirs, theirs, Runner("tenant-test", 1), "w", 3, 60)
    for who, sees in (("a", True), ("b", False), ("root", True)):
        status = tenants.call(who, "get", "/api/v1/asr/queue/status").get_json()
        assert (theirs in status["active"]) is sees, who
        dashboard = tenants.call(who, "get", "/api/v1/dashboard").get_json()
        assert (theirs in [j["task_id"] for j in dashboard["latest_jobs"]]) is sees, who
        # Aggregate figures are everyone's.
        assert tenants.call(who, "get", "/api/v1/stats").status_code == 200
        assert "depth" in status and "workers" in status
    fail(tenants, theirs)


def test_openai_endpoint_job_belongs_to_its_key(make_client):
    tag = uuid.uuid4().hex[:8]
    a, b = f"a-{tag}", f"b-{tag}"
    client = make_client(api_keys=f"{a},{b}", queue_name=QUEUE, sync_timeout_s=1)
    response = client.post("/v1/audio/transcriptions", headers={"X-API-Key": b},
                           content_type="multipart/form-data",
                           data={"file": (io.BytesIO(samples.encode("wav", 1.0)), "a.wav"),
                                 "model": "whisper-1"})
    assert response.status_code == 504  # nobody serves QUEUE: the job goes on as a task
    task_id = response.get_json()["error"]["task_id"]
    try:
        assert_unknown(client.get(f"/api/v1/asr/result/{task_id}",
                                  headers={"X-API-Key": a}), task_id)
        assert client.get(f"/api/v1/asr/result/{task_id}",
                          headers={"X-API-Key": b}).status_code == 200
    finally:
        client.delete(f"/api/v1/asr/task/{task_id}", headers={"X-API-Key": b})


def test_without_keys_every_client_is_one_tenant_with_legacy_jobs(tenants, make_client):
    """Jobs stored before tenants (no owner field) are the anonymous tenant's: every client of
    a keyless API sees them; with keys, only admin keys do."""
    anonymous, store = make_client(queue_name=QUEUE), tenants.store

    def submit() -> str:
        task_id = anonymous.post("/api/v1/asr/submit", content_type="multipart/form-data", data={
            "audio": (io.BytesIO(samples.encode("wav", 1.0)), "a.wav")}).get_json()["task_id"]
        tenants.mine.setdefault("", []).append(task_id)
        return task_id

    legacy, mine = submit(), submit()
    store.redis.hdel(store.keys.job(legacy), "owner")  # as stored before this change
    assert store.get(legacy).owner == store.get(mine).owner == ""
    for task_id in (legacy, mine):
        assert anonymous.get(f"/api/v1/asr/result/{task_id}").status_code == 200
        assert_unknown(tenants.call("a", "get", f"/api/v1/asr/result/{task_id}"), task_id)
        assert tenants.call("root", "get", f"/api/v1/asr/result/{task_id}").status_code == 200
    history = anonymous.get("/api/v1/asr/history?limit=200").get_json()["items"]
    assert {legacy, mine} <= {item["task_id"] for item in history}
    assert legacy not in tenants.history("a")
