"""Flower, started as `make flower` starts it, sees our worker and the tasks it ran."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from tests import samples
from tests.harness import eventually, free_port, start_process, stop_process
from tests.integration.conftest import ROOT, settings_env
from tests.integration.flow import submit, wait_for

START_TIMEOUT_S = 60


LOGIN = ("ops", "s3cret")


@pytest.fixture(scope="module")
def flower(settings, worker) -> Iterator[str]:
    """`celery -A celery_app flower --conf=config/flowerconfig.py` (as `make flower` runs it)
    on a free port, on the test Redis, with the login its JSON API needs; yields its URL."""
    port = free_port()
    env = settings_env(replace(settings, flower_port=port,
                               flower_basic_auth=":".join(LOGIN)))
    base = f"http://127.0.0.1:{port}"
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", "celery_app", "flower",
         "--conf=config/flowerconfig.py"],
        ready=lambda: worker_seen(base, worker.name),  # Flower lists our worker
        ignoring=(requests.RequestException, ValueError), timeout=START_TIMEOUT_S,
        interval=0.3, env=env, cwd=ROOT, log_path=Path(settings.log_dir) / "flower.out",
    )
    try:
        yield base
    finally:
        stop_process(proc)


def worker_seen(base: str, name: str) -> dict | None:
    """Flower's view of our worker (it asks the workers over the broker)."""
    workers = requests.get(f"{base}/api/workers", params={"refresh": 1}, auth=LOGIN,
                           timeout=10).json()
    return next((info for host, info in workers.items() if host.startswith(f"{name}@")), None)


def test_flower_api_lists_our_worker(flower, worker, settings):
    info = worker_seen(flower, worker.name)
    assert info is not None
    assert info["stats"]["pool"]["max-concurrency"] == settings.worker_count
    assert "asr.transcribe" in info["registered"]


def test_flower_api_shows_a_finished_task(flower, client, worker):
    # Flower subscribes to task events after its web server is up; it has once it saw an event
    # of our worker (a heartbeat), which its events-only status view lists.
    eventually(lambda: any(
        host.startswith(f"{worker.name}@") and alive for host, alive in requests.get(
            f"{flower}/api/workers", params={"status": 1}, auth=LOGIN, timeout=10).json().items()),
        30, interval=0.2, ignoring=requests.RequestException,
        message="Flower never received an event of our worker")
    task_id = submit(client, samples.encode("wav", 1.0)).get_json()["task_id"]
    assert wait_for(client, task_id)["status"] == "succeeded"

    def finished() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", auth=LOGIN, timeout=10).json()
        return next((t for t in tasks.values()
                     if task_id in (t.get("args") or "") and t.get("state") == "SUCCESS"), None)

    task = eventually(finished, 20, interval=0.3, ignoring=requests.RequestException,
                      message=f"Flower has no finished task for {task_id}")
    assert task["name"] == "asr.transcribe"
    assert task["worker"].startswith(f"{worker.name}@")
    assert task["runtime"] > 0


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "http://evil.example"}])
def test_flower_refuses_cross_site_posts_and_allows_no_foreign_origin(flower, headers):
    """A web page the operator opens (the browser adds the cached login) cannot drive Flower:
    no CORS grant, and a cross-site POST is refused (L6)."""
    read = requests.get(f"{flower}/api/workers", auth=LOGIN, timeout=10,
                        headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in read.headers
    revoke = requests.post(f"{flower}/api/task/revoke/00000000-0000-0000-0000-000000000000",
                           auth=LOGIN, headers=headers, timeout=10)
    assert revoke.status_code == 403


def test_flower_refuses_to_start_with_an_unauthenticated_api(settings):
    env = {**settings_env(replace(settings, flower_port=free_port())),
           "FLOWER_UNAUTHENTICATED_API": "true"}
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "celery_app", "flower",
                           "--conf=config/flowerconfig.py"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing FLOWER_UNAUTHENTICATED_API" in done.stderr + done.stdout
