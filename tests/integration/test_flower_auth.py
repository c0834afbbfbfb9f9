"""Flower behind basic auth (FLOWER_BASIC_AUTH), as a shared deployment should run it."""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from tests.harness import free_port, start_process, stop_process
from tests.integration.conftest import ROOT, settings_env


def test_flower_basic_auth_guards_ui_and_api(settings):
    port = free_port()
    env = {**settings_env(settings), "FLOWER_BASIC_AUTH": "ops:s3cret"}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    base = f"http://127.0.0.1:{port}"
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", "celery_app", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        ready=lambda: requests.get(f"{base}/api/workers", timeout=5).status_code > 0,  # answers
        ignoring=(requests.ConnectionError, requests.Timeout), timeout=60, interval=0.3, env=env,
        cwd=ROOT, log_path=Path(settings.log_dir) / "flower-auth.out",
    )
    try:
        assert requests.get(f"{base}/api/workers", timeout=5).status_code == 401
        assert requests.get(f"{base}/", timeout=5).status_code == 401
        assert requests.get(f"{base}/api/workers", auth=("ops", "wrong"),
                            timeout=5).status_code == 401
        assert requests.get(f"{base}/api/workers", auth=("ops", "s3cret"),
                            timeout=10).status_code == 200
    finally:
        stop_process(proc)
