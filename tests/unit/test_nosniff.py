"""Every answer of the API tells browsers not to guess its type (X-Content-Type-Options)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from asr_service.app import create_app
from asr_service.settings import Settings
from tests import samples


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    with socket.socket() as s:  # a port nobody listens on: Redis calls fail at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_dir: Path = tmp_path_factory.mktemp("logs")
    return create_app(Settings(redis_url=f"redis://127.0.0.1:{port}/0",
                               log_dir=str(log_dir))).test_client()


@pytest.mark.parametrize(("method", "path", "status"), [
    ("get", "/openapi.json", 200),
    ("get", "/dashboard", 200),
    ("get", "/api/v1/health", 503),
    ("get", "/api/v1/asr/result/not-a-task", 404),
    ("get", "/api/v1/asr/result/3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6b?format=srt", 503),
    ("post", "/api/v1/asr/submit", 422),
    ("post", "/v1/audio/transcriptions", 400),  # OpenAI error shape and status
])
def test_every_answer_says_nosniff(client: FlaskClient, method: str, path: str,
                                   status: int) -> None:
    data = {"audio": (io.BytesIO(samples.sdp_session()), "s.sdp"),
            "file": (io.BytesIO(samples.sdp_session()), "s.sdp"), "model": "whisper-1"}
    answer = getattr(client, method)(path, **({"data": data} if method == "post" else {}))

    assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
