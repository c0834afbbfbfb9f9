"""Idempotent submit: the same Idempotency-Key from the same client returns the same task."""

from __future__ import annotations

import hashlib

import redis
from flask import request
from flask_smorest import abort

from asr_service.api.access import client_id
from asr_service.jobs import PREFIX

HEADER = "Idempotency-Key"
MAX_LENGTH = 255


def requested_key() -> str | None:
    """The request's Idempotency-Key (None when absent); 422 when malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_LENGTH or not key.isprintable():
        abort(422, message=f"the {HEADER} header must be 1-{MAX_LENGTH} printable characters")
    return key.strip()


def _redis_key(key: str) -> str:
    # Scoped per client, so two clients choosing the same key never see each other's task.
    digest = hashlib.sha256(f"{client_id()}\n{key}".encode()).hexdigest()
    return f"{PREFIX}idempotency:{digest}"


def earlier_task(client: redis.Redis, key: str) -> str | None:
    """The task id an earlier submit with this key created, if any."""
    found = client.get(_redis_key(key))
    return found.decode() if found else None


def reserve(client: redis.Redis, key: str, task_id: str, ttl_s: int) -> str:
    """Bind the key to task_id unless a concurrent submit won; returns the task that holds it."""
    if client.set(_redis_key(key), task_id, nx=True, ex=ttl_s):
        return task_id
    return earlier_task(client, key) or task_id


def release(client: redis.Redis, key: str) -> None:
    """Forget the key (its submit failed, so a retry must be able to go through)."""
    client.delete(_redis_key(key))
