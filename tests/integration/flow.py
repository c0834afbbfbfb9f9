"""Client-side steps every integration test uses: submit like curl, long-poll for the result."""

from __future__ import annotations

import io
import time
from typing import Any

from flask.testing import FlaskClient

from tests.harness import eventually

ACTIVE = ("queued", "processing")
LONG_POLL_S = 30.0  # one ?wait= request; the API allows up to 60


def submit(client: FlaskClient, data: bytes, filename: str = "clip.wav",
           **fields: Any) -> Any:
    """POST /submit as `curl -F audio=@clip.wav` would."""
    form = {"audio": (io.BytesIO(data), filename), **fields}
    return client.post("/api/v1/asr/submit", data=form, content_type="multipart/form-data")


def wait_for(client: FlaskClient, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job's body once it finished, by the API's own long-poll (`?wait=`): each request is
    answered the moment the job ends, and asked again only when one wait (LONG_POLL_S) ran out.
    """
    deadline = time.monotonic() + timeout

    def finished() -> dict[str, Any] | None:
        wait = min(LONG_POLL_S, max(0.0, deadline - time.monotonic()))
        body = _result(client, task_id, wait)
        return body if body["status"] not in ACTIVE else None

    return eventually(finished, timeout, interval=0,
                      message=lambda: f"task {task_id} still {_result(client, task_id)['status']}")


def _result(client: FlaskClient, task_id: str, wait: float = 0) -> dict[str, Any]:
    return client.get(f"/api/v1/asr/result/{task_id}", query_string={"wait": f"{wait:.3f}"}
                      ).get_json()
