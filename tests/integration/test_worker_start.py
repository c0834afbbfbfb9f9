"""A worker that cannot have its model or its GPU refuses to start, loudly, with exit code 1."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from tests.harness import eventually
from tests.integration.conftest import ROOT, settings_env

pytestmark = pytest.mark.slow  # each test starts a Celery worker process of its own


def start_worker(settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-n", "refuse@%h",
         "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=settings_env(settings), capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def no_cuda() -> None:
    """Skip on a host with CUDA; probed (torch imported in a child) only when the test runs."""
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    if subprocess.run([sys.executable, "-c", probe]).returncode == 0:
        pytest.skip("this machine has CUDA")


@pytest.mark.usefixtures("no_cuda")
def test_gpu_required_without_cuda_refuses_to_start(settings):
    out = start_worker(replace(settings, asr_use_gpu="true"))
    assert out.returncode == 1
    assert "ASR_USE_GPU=true but no CUDA device is available" in out.stdout + out.stderr


def test_unreachable_hub_alias_refuses_to_start_and_says_how_to_fix(settings):
    out = start_worker(replace(settings, asr_model="paraformer-zh"))
    assert out.returncode == 1
    said = out.stdout + out.stderr
    assert "ASR_MODEL='paraformer-zh'" in said and "could not be reached" in said
    assert "local model directory" in said


def test_missing_model_directory_refuses_to_start(settings, tmp_path):
    out = start_worker(replace(settings, asr_model=str(tmp_path / "nope")))
    assert out.returncode == 1
    assert "no such model directory" in out.stdout + out.stderr


@pytest.mark.slow  # a worker watched from start to model loaded
def test_health_waits_for_the_model_not_just_the_worker_process(settings, make_client,
                                                                 tmp_path):
    from tests.integration.conftest import Worker

    lane = replace(settings, queue_name="health-lane", log_dir=str(tmp_path))
    client = make_client(queue_name="health-lane")
    starting = Worker(lane, "health-probe")
    starting.start(wait=False)
    try:
        seen = set()

        def ready() -> bool:
            workers = client.get("/api/v1/asr/queue/status").get_json()["workers"]
            mine = [w for w in workers if w["hostname"].startswith("health-probe@")]
            if mine:
                seen.add(mine[0]["engines_ready"])
            return bool(mine and mine[0]["engines_ready"])

        eventually(ready, 120, message=lambda: f"health-probe never ready, saw {seen}")
        assert seen == {0, 1}, seen  # announced while loading, then ready
    finally:
        starting.stop()
