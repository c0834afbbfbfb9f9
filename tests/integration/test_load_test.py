"""scripts/run_load_test.sh: a short real run against the API under gunicorn, and its guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import free_port, start_process, stop_process
from tests.integration.conftest import ROOT, settings_env

pytestmark = pytest.mark.slow  # the load-test tool's runs

SCRIPT = ROOT / "scripts" / "run_load_test.sh"


@pytest.fixture(scope="module")
def gunicorn_api(settings, worker) -> Iterator[str]:
    """The API as `make api` runs it (gunicorn, config/gunicorn.conf.py) on a free port."""
    port = free_port()
    env = {**settings_env(settings), "API_PORT": str(port), "API_WORKERS": "2"}
    base = f"http://127.0.0.1:{port}"
    proc = start_process(
        [Path(sys.executable).parent / "gunicorn", "-c", "config/gunicorn.conf.py",
         "--bind", f"127.0.0.1:{port}", "wsgi:app"],
        ready=lambda: requests.get(f"{base}/api/v1/health", timeout=2).status_code == 200,
        ignoring=requests.RequestException, timeout=60, interval=0.2, env=env, cwd=ROOT,
        log_path=Path(settings.log_dir) / "gunicorn.out",
    )
    yield base
    stop_process(proc, timeout=30)


def run_script(*args: str, url: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASR_URL": url, "LOADTEST_OUT": str(out),
           "LOADTEST_ARGS": "--audio-seconds 2 --drain-timeout 20"}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=out.parent)


def test_short_load_run_reports_throughput_latency_and_resources(gunicorn_api, tmp_path):
    result = run_script("3", "6", url=gunicorn_api, out=tmp_path / "load")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    saved = json.loads((tmp_path / "load" / "loadtest-report.json").read_text())
    assert {k: v for k, v in saved.items() if k != "timeline"} == printed

    assert printed["concurrency"] == 3 and printed["duration_s"] == 6
    assert printed["jobs_submitted"] >= 6
    assert printed["jobs_completed"] == printed["jobs_submitted"]
    assert printed["jobs_failed"] == 0 and printed["errors_by_status"] == {}
    assert printed["throughput"]["jobs_per_min"] > 0
    assert printed["throughput"]["audio_seconds_per_s"] == pytest.approx(
        printed["throughput"]["jobs_per_s"] * 2, rel=0.01)
    for name in ("submit_latency_s", "end_to_end_latency_s"):
        p = printed[name]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"] < 30, name
    # gunicorn master + 2 workers; celery main process + 1 child, all sampled on this host
    assert printed["api_processes"]["processes"] == 3
    assert printed["api_processes"]["cpu_percent_max"] > 0
    assert printed["worker_processes"]["processes"] >= 2
    assert printed["worker_processes"]["rss_mb_max"] > 100
    assert len(saved["timeline"]) >= 5
    png = (tmp_path / "load" / "loadtest.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.parametrize("url", ["http://10.11.12.13:8000", "http://example.com"])
def test_load_test_refuses_targets_off_this_host(url, tmp_path):
    result = run_script("1", "1", url=url, out=tmp_path / "load")
    assert result.returncode == 2
    assert "refused" in result.stderr
    assert not (tmp_path / "load").exists()


def test_load_test_bounds_concurrency_and_duration(tmp_path):
    for args in (["0", "5"], ["65", "5"], ["2", "3601"], ["2", "-1"]):
        result = run_script(*args, url="http://127.0.0.1:1", out=tmp_path / "load")
        assert result.returncode == 2 and "must be between" in result.stderr, args
