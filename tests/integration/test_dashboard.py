"""/dashboard in a real headless Chromium: loads cleanly, and its charts move during a load run."""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect
from werkzeug.serving import make_server

from asr_service.app import create_app
from scripts import loadtest
from tests.harness import eventually, start_process, stop_process
from tests.integration.conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "dashboard.png"
pytestmark = [
    pytest.mark.slow,  # headless chromium, gunicorn and a 12 s load run
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (`make test` installs the Debian package)"),
]

CHART_STATE = """(() => {
  const d = window.asrDashboard, series = {};
  for (const [name, chart] of Object.entries(d.charts))
    series[name] = Object.fromEntries(chart.data.datasets.map(s => [s.label, s.data]));
  const rows = [...document.querySelectorAll('#jobs tbody tr')].map(r => r.children[1].textContent);
  return {updates: d.updates, errors: d.errors, series, rows,
          total: d.last && d.last.stats.jobs_total};
})()"""


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, over the page's websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.last_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        return eventually(lambda: self.evaluate(expression), timeout, interval=0.25,
                          message=f"still false: {expression}")

    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and browser-logged errors (failed loads)."""
        self.call("Runtime.evaluate", expression="0")  # reads what arrived meanwhile
        errors = []
        for e in self.events:
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                errors.append(json.dumps(params["args"])[:500])
            elif e.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(json.dumps(params["entry"])[:500])
        return errors


def serve(settings) -> Iterator[str]:
    """The real app over real HTTP (a threaded werkzeug server on a free port)."""
    httpd = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture
def server(settings) -> Iterator[str]:
    yield from serve(settings)


@pytest.fixture
def keyed_server(settings) -> Iterator[str]:
    yield from serve(replace(settings, api_keys="dash-key-1"))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    yield from launch(tmp_path)


def launch(tmp_path: Path, *options: str) -> Iterator[DevTools]:
    """Headless Chromium (with more command-line `options`) and the DevTools protocol on a
    port it picks; its first page."""
    profile = tmp_path / "chromium-profile"
    port_file = profile / "DevToolsActivePort"  # chromium writes the port it picked
    proc = start_process(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         "--window-size=1400,1250", *options, "about:blank"],
        ready=lambda: port_file.exists() and bool(port_file.read_text().strip()),
        timeout=30, interval=0.1, log_path=tmp_path / "chromium.out",
    )
    try:
        port = port_file.read_text().split()[0]
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20) as ws:
            tools = DevTools(ws)
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride", width=1400, height=1250,
                       deviceScaleFactor=1, mobile=False)
            yield tools
    finally:
        stop_process(proc, timeout=10)


def values(series: list[float | None]) -> list[float]:
    return [v for v in series if v is not None]


def test_dashboard_charts_move_during_a_load_run(server, browser, worker, tmp_path):
    browser.call("Page.navigate", url=f"{server}/dashboard")
    browser.wait_for("window.asrDashboard && window.asrDashboard.updates >= 2", 20)
    before = browser.evaluate(CHART_STATE)

    # A short run of the real load-test tool against the page's server, while the page polls.
    # 10 s recordings keep the one worker busy most of the run, so the page's samples (every
    # 2 s) see jobs running or queued (with 3 s ones a busy host could sample only idle gaps).
    load = threading.Thread(target=loadtest.main, args=(
        ["3", "12", "--url", server, "--audio-seconds", "10", "--drain-timeout", "20",
         "--out-dir", str(tmp_path / "load")],))
    load.start()
    updates_at_start = browser.evaluate("window.asrDashboard.updates")
    browser.wait_for("window.asrDashboard.last.stats.jobs_total >= "
                     f"{before['total'] + 12}", 30)
    browser.wait_for("window.asrDashboard.last.end_to_end_s.p50 !== null", 10)
    # Late in the 12 s load run: the page redrew 4 times (every 2 s) since it began.
    browser.wait_for(f"window.asrDashboard.updates >= {updates_at_start + 4}", 30)
    shot = browser.call("Page.captureScreenshot", format="png")["data"]
    during = browser.evaluate(CHART_STATE)
    load.join(timeout=60)

    png = base64.b64decode(shot)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    (tmp_path / "dashboard.png").write_bytes(png)
    if os.environ.get("UPDATE_SCREENSHOT"):  # refresh the committed picture on purpose only
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(png)

    assert browser.console_errors() == []
    assert during["errors"] == 0 and during["updates"] >= before["updates"] + 4
    series = during["series"]
    assert during["total"] >= before["total"] + 12
    assert max(values(series["throughput"]["jobs / min"])) > \
        values(before["series"]["throughput"]["jobs / min"])[-1]
    assert max(values(series["throughput"]["audio s / s"])) > 0
    assert values(series["latency"]["end-to-end p50"]) and values(series["latency"]["submit p95"])
    assert max(values(series["queue"]["running"]) + values(series["queue"]["queue depth"])) >= 1
    assert series["queue"]["workers online"][-1] >= 1
    worker_cpu = [v for label, data in series["cpu"].items() if label.startswith(worker.name)
                  for v in values(data)]
    assert worker_cpu and max(worker_cpu) > 0
    worker_memory = [v for label, data in series["memory"].items()
                     if label.startswith(worker.name) for v in values(data)]
    assert worker_memory and min(worker_memory) > 50  # MiB: a process holding a model
    assert "succeeded" in during["rows"]


def test_dashboard_asks_for_the_api_key_when_the_service_requires_one(keyed_server, browser):
    browser.call("Page.navigate", url=f"{keyed_server}/dashboard")
    browser.wait_for("window.asrDashboard && window.asrDashboard.errors >= 1 && "
                     "!document.getElementById('key-form').hidden", 15)
    assert browser.evaluate("window.asrDashboard.updates") == 0

    browser.evaluate("document.getElementById('key-input').value = 'dash-key-1';"
                     "document.getElementById('key-form').requestSubmit(); true")
    browser.wait_for("window.asrDashboard.updates >= 1", 10)
    assert browser.evaluate("document.getElementById('key-form').hidden") is True
    errors = browser.console_errors()
    # The only error is the browser reporting the first, keyless 401.
    assert errors and all("401" in e for e in errors), errors
