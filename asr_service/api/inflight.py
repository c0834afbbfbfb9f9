"""A per-process budget of request bodies in flight, in bytes (MAX_INFLIGHT_UPLOAD_MB).

Each request that carries a body reserves its Content-Length (MAX_UPLOAD_MB when it is sent
chunked) before anything reads it, and gives it back when the request ends; an audio_url
download reserves MAX_UPLOAD_MB more before it starts. A request the budget cannot take gets a
503 with Retry-After at once, its body unread: thirty 100 MB uploads to one gevent worker no
longer add up to gigabytes of resident memory.
"""

from __future__ import annotations

import threading

from flask import Flask, Response, current_app, g, request

from asr_service.errors import UploadsBusy

BODY_METHODS = ("POST", "PUT", "PATCH")


class Budget:
    """Bytes that may be held at once; reserve() is all or nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()  # gevent workers need none; a gthread one would

    def reserve(self, size: int) -> bool:
        """Take `size` bytes if they fit under the limit."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def release(self, size: int) -> None:
        """Give back bytes reserve() took."""
        with self._lock:
            self.held -= size


def init_app(app: Flask, limit: int, max_upload: int) -> None:
    """Reserve each request's body before the view reads it; release it as the request ends.
    Register it after the key check and the rate limiter: a refused request holds nothing."""
    budget = Budget(limit)
    app.extensions["asr_inflight"] = budget

    @app.before_request
    def _reserve_body() -> Response | None:
        if request.method not in BODY_METHODS:
            return None
        length = request.content_length
        if length is None and "chunked" not in request.headers.get("Transfer-Encoding", ""):
            return None
        # Bigger than MAX_UPLOAD_MB: Werkzeug answers 413 without reading it, so count no more.
        reserve(min(max_upload, length) if length is not None else max_upload)
        return None

    @app.teardown_request
    def _release(_: BaseException | None) -> None:
        if held := g.pop("asr_inflight_bytes", 0):
            budget.release(held)


def reserve(size: int) -> None:
    """Hold `size` more bytes for the current request (until it ends); 503 if they do not fit."""
    budget: Budget = current_app.extensions["asr_inflight"]
    if not budget.reserve(size):
        raise UploadsBusy(
            f"this API process holds its MAX_INFLIGHT_UPLOAD_MB of request bodies "
            f"({budget.limit // 2**20} MiB); nothing was read or stored. Try again after "
            "Retry-After seconds")
    g.asr_inflight_bytes = g.get("asr_inflight_bytes", 0) + size
