"""Flower behind basic auth (FLOWER_BASIC_AUTH), as a shared deployment should run it."""

from __future__ import annotations

import subprocess
import sys
import time

import requests

from tests.integration.conftest import ROOT, free_port, settings_env


def test_flower_basic_auth_guards_ui_and_api(settings):
    port = free_port()
    env = {**settings_env(settings), "FLOWER_BASIC_AUTH": "ops:s3cret"}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_app", "flower",
                             f"--port={port}", "--address=127.0.0.1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = requests.get(f"{base}/api/workers", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "flower did not start"
                time.sleep(0.3)
        assert anonymous.status_code == 401
        assert requests.get(f"{base}/", timeout=5).status_code == 401
        assert requests.get(f"{base}/api/workers", auth=("ops", "wrong"),
                            timeout=5).status_code == 401
        assert requests.get(f"{base}/api/workers", auth=("ops", "s3cret"),
                            timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
