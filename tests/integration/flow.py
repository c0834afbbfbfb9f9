"""Client-side steps every integration test uses: submit like curl, poll for the result."""

from __future__ import annotations

import io
from typing import Any

from flask.testing import FlaskClient

from tests.harness import eventually


def submit(client: FlaskClient, data: bytes, filename: str = "clip.wav",
           **fields: Any) -> Any:
    """POST /submit as `curl -F audio=@clip.wav` would."""
    form = {"audio": (io.BytesIO(data), filename), **fields}
    return client.post("/api/v1/asr/submit", data=form, content_type="multipart/form-data")


def wait_for(client: FlaskClient, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the result until the job finished; return its body."""
    def finished() -> dict[str, Any] | None:
        body = _result(client, task_id)
        return body if body["status"] not in ("queued", "processing") else None

    return eventually(finished, timeout, interval=0.1,
                      message=lambda: f"task {task_id} still {_result(client, task_id)['status']}")


def _result(client: FlaskClient, task_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/asr/result/{task_id}").get_json()
