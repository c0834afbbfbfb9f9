"""Nothing listens beyond loopback without authentication: `make run`'s stack, seen with `ss`,
and the API and Flower refusing an exposed address without a login."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from tests.harness import report, wait_ready
from tests.integration.conftest import ROOT, free_port, settings_env

# `make run` keeps its Redis under run/ in the repo root: one xdist lane for what touches it.
pytestmark = pytest.mark.xdist_group("repo-root")

LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|::1)$")


def listeners(pids: set[int]) -> list[tuple[str, str, str]]:
    """(port, local address, process name) of every TCP listening socket these processes
    hold."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        address, _, port = cols[3].rpartition(":")
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append((port, address, name))
    return found


@pytest.mark.slow  # `make run`'s whole stack
@pytest.mark.skipif(not shutil.which("ss"), reason="ss (iproute2) is not installed")
def test_make_run_listens_on_loopback_only(settings, tmp_path):
    redis_port, api_port, flower_port = free_port(), free_port(), free_port()
    env = {**settings_env(settings), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "API_PORT": str(api_port), "FLOWER_PORT": str(flower_port),
           "LOG_DIR": str(tmp_path / "logs"), "WORKER_COUNT": "1"}
    with (tmp_path / "run.out").open("wb") as log:
        stack = subprocess.Popen(["scripts/run.sh"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(stack, lambda: (
            requests.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=2).ok
            and requests.get(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=2).ok),
            120, tmp_path / "run.out", interval=0.5, ignoring=requests.RequestException)
        tree = {stack.pid, *(p.pid for p in psutil.Process(stack.pid).children(recursive=True))}
        found = listeners(tree)

        ports = {int(port) for port, _, _ in found}
        assert {redis_port, api_port, flower_port} <= ports, found  # all three were seen
        exposed = [entry for entry in found if not LOOPBACK.match(entry[1])]
        assert not exposed, exposed
        deliverer = {p.pid for p in psutil.Process(stack.pid).children(recursive=True)
                     if "asr_service.webhooks" in p.cmdline()}
        assert deliverer and not listeners(deliverer), "the webhook deliverer listens on nothing"
        report("listeners", found=sorted(set(found)))
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        try:
            stack.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
        shutil.rmtree(ROOT / "run" / "redis", ignore_errors=True)


def test_the_api_refuses_an_exposed_address_without_keys(settings, tmp_path):
    env = {**settings_env(settings), "API_HOST": "0.0.0.0", "API_PORT": str(free_port()),
           "LOG_DIR": str(tmp_path)}
    refused = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), "-c",
                              "config/gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "API_KEYS" in refused.stderr and "0.0.0.0" in refused.stderr


def test_flower_refuses_an_exposed_address_without_a_login(settings):
    env = {**settings_env(settings), "FLOWER_HOST": "0.0.0.0", "FLOWER_PORT": str(free_port())}
    env.pop("FLOWER_BASIC_AUTH", None)
    refused = subprocess.run([sys.executable, "-m", "celery", "-A", "celery_app", "flower",
                              "--conf=config/flowerconfig.py"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH" in refused.stdout + refused.stderr


def test_compose_has_no_default_secret_and_requires_the_user_to_set_them():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert services["api"]["environment"]["API_KEYS"].startswith("${API_KEYS:?")
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] \
        .startswith("${FLOWER_BASIC_AUTH:?")
    assert "${REDIS_PASSWORD:?" in " ".join(services["redis"]["command"])
    text = (ROOT / "docker" / "compose.yaml").read_text()
    assert "change-me" not in text and ":-admin" not in text
