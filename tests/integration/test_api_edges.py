"""The API's edges on real processes: bodies in flight under gunicorn, its JSON access log,
401s under the rate limit, a Unix-socket Redis, and audio_url's cheap checks."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests import samples
from tests.harness import eventually, start_process, stop_process
from tests.integration.conftest import ApiServer, report

UPLOADS, UPLOAD_MB = 16, 60


@pytest.fixture(scope="module")
def gunicorn(settings, tmp_path_factory) -> Iterator[ApiServer]:
    """The real API under gunicorn (config/gunicorn.conf.py, 2 gevent workers, default
    MAX_INFLIGHT_UPLOAD_MB) on a queue no worker reads: accepted jobs only wait."""
    server = ApiServer(replace(settings, queue_name=f"edges-{uuid.uuid4().hex[:6]}"),
                       tmp_path_factory.mktemp("edges-gunicorn"))
    server.start()
    yield server
    server.stop()


def _big_wav() -> bytes:
    """UPLOAD_MB of silence that stays under the tests' MAX_AUDIO_SECONDS (48 kHz stereo)."""
    return samples.silent_wav(UPLOAD_MB * 2**20 - 44, channels=2, rate=48000)


def _post(port: int, body: bytes, boundary: str) -> int:
    """One multipart upload over its own connection; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/api/v1/asr/submit", body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _rss(server: ApiServer) -> int:
    total = 0
    for process in server.processes():
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.mark.slow  # big uploads through gunicorn
def test_concurrent_big_uploads_stay_within_the_in_flight_budget(gunicorn):
    """M8: 16 concurrent 60 MB uploads: every answer a 202 or a quick 503 (the body unread),
    and the API's memory grows by about its budget, not by 16 bodies."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
            f"filename=\"big.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode() \
        + _big_wav() + f"\r\n--{boundary}--\r\n".encode()
    port = gunicorn.settings.api_port
    baseline, peak, stop = _rss(gunicorn), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss(gunicorn))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(UPLOADS) as pool:
            statuses = list(pool.map(lambda _: _post(port, body, boundary), range(UPLOADS)))
    finally:
        stop.set()
        sampler.join()
        # Even when an assertion below fails: 30-minute jobs left queued would hold the session
        # worker and count among the recordings later tests of this lane keep (test_retention).
        _delete_accepted(gunicorn)
    elapsed = time.monotonic() - started
    growth_mb = (peak[0] - baseline) / 2**20
    report("inflight-uploads", uploads=UPLOADS, upload_mb=UPLOAD_MB,
           accepted=statuses.count(202), refused_503=statuses.count(503),
           rss_baseline_mb=round(baseline / 2**20), rss_growth_mb=round(growth_mb),
           seconds=round(elapsed, 1))
    assert set(statuses) <= {202, 503}, statuses
    assert 202 in statuses and 503 in statuses
    assert growth_mb < 700


def _delete_accepted(server: ApiServer) -> None:
    base = f"{server.url}/api/v1/asr"
    for item in requests.get(f"{base}/history?limit=100", timeout=10).json()["items"]:
        requests.delete(f"{base}/task/{item['task_id']}", timeout=10)


def test_access_log_lines_are_json_whatever_the_path(gunicorn):
    """L3: a backslash or a newline in the path neither breaks a line nor forges one."""
    for path in ("/x%5C", "/a%0A%7B%22forged%22%3A1%7D", "/q%22%5Cn"):
        assert requests.get(f"{gunicorn.url}{path}", timeout=10).status_code == 404

    def access_lines() -> list[dict] | None:
        lines = [line for line in gunicorn.log_path.read_text(errors="replace").splitlines()
                 if line.startswith("{")]
        entries = [json.loads(line) for line in lines]  # every JSON-looking line parses
        access = [e for e in entries if e.get("component") == "api-access"]
        return access if any(e["path"] == "/q\"\\n" for e in access) else None

    access = eventually(access_lines, 10, message="the access lines never appeared")
    paths = {e["path"] for e in access}
    assert {"/x\\", "/a\n{\"forged\":1}"} <= paths


def test_requests_with_a_wrong_key_count_against_the_rate_limit(make_client):
    """L2: key guessing meets RATE_LIMIT: past the limit, wrong keys get 429, not 401."""
    allowed = 3 + uuid.uuid4().int % 50  # a bucket no other test of the session fills
    limited = make_client(api_keys="k1", rate_limit=f"{allowed}/minute")
    answers = [limited.get("/api/v1/asr/history", headers={"X-API-Key": f"guess-{i}"})
               .status_code for i in range(allowed + 2)]
    assert answers == [401] * allowed + [429, 429]


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[str]:
    socket_path = tmp_path / "redis.sock"
    binary = shutil.which("redis-server")
    assert binary
    proc = start_process([binary, "--port", "0", "--unixsocket", str(socket_path),
                          "--save", "", "--dir", str(tmp_path)],
                         ready=redis.Redis(unix_socket_path=str(socket_path)).ping,
                         ignoring=(redis.ConnectionError, FileNotFoundError), timeout=10,
                         log_path=tmp_path / "redis.out")
    yield f"unix://{socket_path}?db=0"
    stop_process(proc)


def test_the_rate_limiter_works_over_a_unix_socket(make_client, unix_redis):
    """L7: REDIS_URL=unix://... reaches the limiter as redis+unix://, and it counts."""
    api = make_client(redis_url=unix_redis, rate_limit="2/minute")
    answers = [api.get("/api/v1/asr/history").status_code for _ in range(3)]
    assert answers == [200, 200, 429]


class _Counting(ThreadingHTTPServer):
    """A loopback server that serves one clip and counts the GETs."""

    def __init__(self, clip: bytes) -> None:
        self.clip, self.gets = clip, 0
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/clip.wav"


class _Handler(BaseHTTPRequestHandler):
    server: _Counting

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.gets += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.clip)))
        self.end_headers()
        self.wfile.write(self.server.clip)

    def log_message(self, *args: object) -> None:
        pass


def test_audio_url_is_not_fetched_before_the_cheap_checks(make_client):
    """M8: a refused callback_url, an unknown model or a replayed Idempotency-Key costs no
    download."""
    origin = _Counting(samples.encode("wav", 1.0))
    try:
        api = make_client(allow_private_urls=True)
        form = {"audio_url": origin.url()}
        refused = api.post("/api/v1/asr/submit", data={**form, "callback_url": origin.url()},
                           content_type="multipart/form-data")
        assert refused.status_code == 422  # no WEBHOOK_SECRET
        unknown = api.post("/api/v1/asr/submit", data={**form, "model": "nope"},
                           content_type="multipart/form-data")
        assert unknown.status_code == 404
        assert origin.gets == 0

        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = api.post("/api/v1/asr/submit", data=form, headers=key,
                         content_type="multipart/form-data")
        again = api.post("/api/v1/asr/submit", data=form, headers=key,
                         content_type="multipart/form-data")
        assert first.status_code == again.status_code == 202
        assert again.get_json()["task_id"] == first.get_json()["task_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert origin.gets == 1
        api.delete(f"/api/v1/asr/task/{first.get_json()['task_id']}")
    finally:
        origin.shutdown()
        origin.server_close()
