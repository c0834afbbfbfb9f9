"""URLs a client hands the service: `audio_url` (fetched by the API) and `callback_url` (a
signed webhook when the job ends), both behind the SSRF guard; on the real stack."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from tests import samples
from tests.harness import eventually, start_process, stop_process
from tests.integration.conftest import ROOT, settings_env
from tests.integration.flow import submit, wait_for

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
REFUSED = ["http://127.0.0.1:9/a.wav", "http://[::1]/a.wav",
           "http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/a.wav",
           "http://localhost/a.wav", "file:///etc/passwd"]


class Local(ThreadingHTTPServer):
    """A loopback HTTP server: serves `files` on GET, records every POST."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.posts = files, []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Local

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        data = self.server.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local() -> Iterator[Local]:
    server = Local({"/clip.wav": samples.encode("wav", seconds=4.0)})
    yield server
    server.shutdown()
    server.server_close()


def _total(api) -> int:
    return api.get("/api/v1/asr/history?limit=1").get_json()["total"]


@pytest.mark.parametrize("url", REFUSED)
@pytest.mark.parametrize("field", ["audio_url", "callback_url"])
def test_private_and_non_http_urls_are_refused_at_submit(make_client, field, url):
    api = make_client(webhook_secret=SECRET)
    before = _total(api)
    form = ({"audio_url": url} if field == "audio_url"
            else {"audio": (io.BytesIO(samples.encode("wav")), "a.wav"), "callback_url": url})
    answer = api.post("/api/v1/asr/submit", data=form, content_type="multipart/form-data")

    problem = answer.get_json()
    assert answer.status_code == 422 and answer.content_type == "application/problem+json"
    assert problem["type"] == "/problems/url-refused", problem
    assert _total(api) == before, "a refused URL must not leave a job behind"


def test_callback_url_needs_a_webhook_secret(make_client, local):
    answer = submit(make_client(allow_private_urls=True), samples.encode("wav"),
                    callback_url=local.url("/hook"))
    assert answer.status_code == 422 and "WEBHOOK_SECRET" in answer.get_json()["detail"]


def test_audio_url_is_fetched_with_the_opt_in(make_client, worker, local):
    guarded = make_client()
    refused = guarded.post("/api/v1/asr/submit", data={"audio_url": local.url("/clip.wav")},
                           content_type="multipart/form-data")
    assert refused.status_code == 422 and "ALLOW_PRIVATE_URLS" in refused.get_json()["detail"]

    api = make_client(allow_private_urls=True)
    fetched = api.post("/api/v1/asr/submit", data={"audio_url": local.url("/clip.wav")},
                       content_type="multipart/form-data")
    assert fetched.status_code == 202, fetched.get_json()
    uploaded = submit(api, local.files["/clip.wav"])
    by_url = wait_for(api, fetched.get_json()["task_id"])
    by_upload = wait_for(api, uploaded.get_json()["task_id"])
    assert by_url["status"] == "succeeded" and by_url["filename"] == "clip.wav"
    assert by_url["result"]["text"] == by_upload["result"]["text"]

    missing = api.post("/api/v1/asr/submit", data={"audio_url": local.url("/nope.wav")},
                       content_type="multipart/form-data")
    assert missing.status_code == 422 and "404" in missing.get_json()["detail"]
    small = make_client(allow_private_urls=True, max_upload_mb=1)
    local.files["/big.wav"] = samples.encode("wav", seconds=40.0)  # 1.3 MB
    big = small.post("/api/v1/asr/submit", data={"audio_url": local.url("/big.wav")},
                     content_type="multipart/form-data")
    assert big.status_code == 422 and "MAX_UPLOAD_MB" in big.get_json()["detail"]

    both = api.post("/api/v1/asr/submit", data={
        "audio_url": local.url("/clip.wav"), "audio": (io.BytesIO(b"x"), "a.wav")},
        content_type="multipart/form-data")
    assert both.status_code == 422


def test_webhook_follows_a_real_transcription(settings, worker, local, tmp_path):
    hooked = replace(settings, webhook_secret=SECRET, allow_private_urls=True,
                     webhook_include_result=True, public_url="https://asr.example.com",
                     log_dir=str(tmp_path))
    deliverer = start_process([sys.executable, "-m", "asr_service.webhooks"], ready=lambda: True,
                              timeout=10, env=settings_env(hooked), cwd=ROOT,
                              log_path=tmp_path / "webhooks.out")
    try:
        from asr_service.app import create_app

        api = create_app(hooked).test_client()
        task_id = submit(api, samples.encode("wav"), callback_url=local.url("/hook")
                         ).get_json()["task_id"]
        body = wait_for(api, task_id)
        eventually(lambda: local.posts, 20, message="no webhook arrived")
        store = api.application.extensions["asr"].store
        state = eventually(lambda: (w := store.get(task_id).webhook)["status"] == "delivered"
                           and w, 10)
    finally:
        stop_process(deliverer)

    (headers, raw), = local.posts
    event = Webhook(SECRET).verify(raw, headers)
    assert headers["webhook-id"] == state["id"] and state["attempts"] == 1
    assert event["type"] == "job.succeeded" and event["data"]["task_id"] == task_id
    assert event["data"]["result"]["text"] == body["result"]["text"]
    assert event["data"]["links"]["result"] == \
        f"https://asr.example.com/api/v1/asr/result/{task_id}"
    assert json.loads(raw) == event


def test_an_audio_url_with_a_non_ascii_digit_length_is_a_422_not_a_500(make_client):
    odd = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:  # "Content-Length: ²": str.isdigit() says yes, int() says no
        conn, _ = odd.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\nConnection: close\r\n\r\nxx")

    threading.Thread(target=answer, daemon=True).start()
    with odd:
        got = make_client(allow_private_urls=True).post(
            "/api/v1/asr/submit", data={"audio_url": f"http://127.0.0.1:{odd.getsockname()[1]}/a"},
            content_type="multipart/form-data")

    assert got.status_code == 422 and got.content_type == "application/problem+json"
    assert "invalid Content-Length" in got.get_json()["detail"]
