"""The Idempotency-Key header: validated, and scoped per client so keys never collide."""

from __future__ import annotations

import hashlib

from flask import request
from flask_smorest import abort

from asr_service.api.access import client_id
from asr_service.keys import Keys

HEADER = "Idempotency-Key"
MAX_LENGTH = 255


def requested_key(keys: Keys) -> str | None:
    """The Redis key for the request's Idempotency-Key (None when absent); 422 when malformed.

    Scoped per client, so two clients choosing the same key never see each other's task.
    """
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_LENGTH or not key.isprintable():
        abort(422, message=f"the {HEADER} header must be 1-{MAX_LENGTH} printable characters")
    digest = hashlib.sha256(f"{client_id()}\n{key.strip()}".encode()).hexdigest()
    return keys.idempotency(digest)
