"""Flower, started as `make flower` starts it, sees our worker and the tasks it ran."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import samples
from tests.harness import eventually, free_port, start_process, stop_process
from tests.integration.conftest import ROOT, settings_env
from tests.integration.flow import submit, wait_for

START_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def flower(settings, worker) -> Iterator[str]:
    """`celery -A celery_app flower` on a free port, on the test Redis; yields its base URL."""
    port = free_port()
    env = {**settings_env(settings), "FLOWER_UNAUTHENTICATED_API": "true"}
    base = f"http://127.0.0.1:{port}"
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", "celery_app", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        ready=lambda: worker_seen(base, worker.name),  # Flower lists our worker
        ignoring=requests.RequestException, timeout=START_TIMEOUT_S, interval=0.3, env=env,
        cwd=ROOT, log_path=Path(settings.log_dir) / "flower.out",
    )
    try:
        yield base
    finally:
        stop_process(proc)


def worker_seen(base: str, name: str) -> dict | None:
    """Flower's view of our worker (it asks the workers over the broker)."""
    workers = requests.get(f"{base}/api/workers", params={"refresh": 1}, timeout=10).json()
    return next((info for host, info in workers.items() if host.startswith(f"{name}@")), None)


def test_flower_api_lists_our_worker(flower, worker, settings):
    info = worker_seen(flower, worker.name)
    assert info is not None
    assert info["stats"]["pool"]["max-concurrency"] == settings.worker_count
    assert "asr.transcribe" in info["registered"]


def test_flower_api_shows_a_finished_task(flower, client, worker):
    time.sleep(1)  # Flower subscribes to task events once its web server is up
    task_id = submit(client, samples.encode("wav", 1.0)).get_json()["task_id"]
    assert wait_for(client, task_id)["status"] == "succeeded"

    def finished() -> dict | None:
        tasks = requests.get(f"{flower}/api/tasks", timeout=10).json()
        return next((t for t in tasks.values()
                     if task_id in (t.get("args") or "") and t.get("state") == "SUCCESS"), None)

    task = eventually(finished, 20, interval=0.3, ignoring=requests.RequestException,
                      message=f"Flower has no finished task for {task_id}")
    assert task["name"] == "asr.transcribe"
    assert task["worker"].startswith(f"{worker.name}@")
    assert task["runtime"] > 0
