"""Client-side steps every integration test uses: submit like curl, poll for the result."""

from __future__ import annotations

import io
import time
from typing import Any

from flask.testing import FlaskClient


def submit(client: FlaskClient, data: bytes, filename: str = "clip.wav",
           **fields: Any) -> Any:
    """POST /submit as `curl -F audio=@clip.wav` would."""
    form = {"audio": (io.BytesIO(data), filename), **fields}
    return client.post("/api/v1/asr/submit", data=form, content_type="multipart/form-data")


def wait_for(client: FlaskClient, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the result until the job finished; return its body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/asr/result/{task_id}").get_json()
        if body["status"] not in ("queued", "processing"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} still {body['status']} after {timeout} s")
