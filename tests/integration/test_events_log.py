"""events.jsonl: one line per job lifecycle event, from the API and the worker of a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests import samples
from tests.harness import eventually, read_jsonl
from tests.integration.flow import submit, wait_for


@pytest.fixture
def client(make_client):
    """An API app set up now: logging is per process, so the app set up last (a lane's, another
    test's) decides where events.jsonl and api.log go; which ran before depends on the order."""
    return make_client()


def events_of(settings, job_id: str, until: str, timeout: float = 10,
              count: int = 0) -> list[dict]:
    """The job's events, once `until` (and at least `count` lines) was written (the worker
    writes after the job is done)."""
    path = Path(settings.log_dir) / "events.jsonl"

    def written() -> list[dict] | None:
        found = [e for e in read_jsonl(path) if e["job_id"] == job_id]
        return found if any(e["event"] == until for e in found) and len(found) >= count \
            else None

    return eventually(written, timeout, interval=0.1, message=f"no {until} for {job_id}")


def test_a_succeeded_job_logs_submitted_started_succeeded(client, worker, settings):
    data = samples.encode("wav", 3.0)
    task_id = submit(client, data, "meeting.wav").get_json()["task_id"]
    body = wait_for(client, task_id)
    events = events_of(settings, task_id, "job.succeeded")

    assert [e["event"] for e in events] == ["job.submitted", "job.started", "job.succeeded"]
    submitted, started, succeeded = events
    assert submitted["audio_s"] == body["duration_s"] == 3.0
    assert started["worker"] == succeeded["worker"] == body["worker"]
    assert started["queue_wait_s"] == succeeded["queue_wait_s"] == round(body["queue_wait_s"], 3)
    assert succeeded["audio_s"] == 3.0
    assert succeeded["processing_s"] == round(body["processing_s"], 3)
    # The event rounds the job's own rtf once; the result's rtf is already rounded to 4 places,
    # and rounding it again can differ (0.0195 -> 0.019 vs 0.02). Compare with the job's rtf.
    assert succeeded["rtf"] == round(body["rtf"], 3)
    assert succeeded["rtf"] == pytest.approx(body["result"]["rtf"], abs=0.0006)
    assert submitted["ts"] <= started["ts"] <= succeeded["ts"]


def test_failed_retried_and_deleted_jobs_are_logged(client, worker, settings):
    task_id = submit(client, samples.corrupt_m4a(), "broken.m4a").get_json()["task_id"]
    assert wait_for(client, task_id)["status"] == "failed"
    assert client.post(f"/api/v1/asr/retry/{task_id}").status_code == 202
    wait_for(client, task_id)
    assert client.delete(f"/api/v1/asr/task/{task_id}").status_code in (200, 204)
    expected = ["job.submitted", "job.started", "job.failed", "job.retried",
                "job.started", "job.failed", "job.deleted"]
    events = events_of(settings, task_id, "job.deleted", count=len(expected))

    # The API and the worker append to one file, each line once its transition committed: the
    # API can retry a failure (and log it) before the worker has written that failure's line,
    # so the file's order is not the job's. Put the lines in the job's order, by attempt.
    def in_job_order(e: dict) -> tuple[float, int]:
        phase = {"job.submitted": 0, "job.retried": 0, "job.started": 1, "job.failed": 2}
        attempt = math.inf if e["event"] == "job.deleted" else e.get("attempt", 0)
        return attempt, phase.get(e["event"], 3)

    assert [e["event"] for e in sorted(events, key=in_job_order)] == expected
    failed = next(e for e in events_of(settings, task_id, "job.deleted")
                  if e["event"] == "job.failed")
    assert failed["error"] and failed["attempt"] == 1
    assert failed["worker"].startswith("test-worker@") and failed["audio_s"] > 0
    assert failed["queue_wait_s"] >= 0 and failed["processing_s"] >= 0


def test_logs_are_json_lines_per_component_without_audio_or_secrets(client, worker, settings):
    wait_for(client, submit(client, samples.encode("wav", 1.0)).get_json()["task_id"])
    log_dir = Path(settings.log_dir)
    for component in ("api", "worker"):
        lines = (log_dir / f"{component}.log").read_text().splitlines()
        assert lines, component
        assert {json.loads(line)["component"] for line in lines} == {component}
    events = (log_dir / "events.jsonl").read_bytes()
    assert b"RIFF" not in events and b"WAVE" not in events  # no recording bytes
    assert max(map(len, events.splitlines())) < 2000
    assert settings.redis_url.encode() not in events
