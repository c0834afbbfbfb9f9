"""What a client is told when Redis fails while a state change is being committed.

A submit, retry or delete is one Lua script. Once it was sent, a timeout or a dropped
connection says nothing about whether Redis ran it (redis-py also re-sends a command after such
an error), so the answer must not claim it failed: it is an OutcomeUnknown naming the task, with
a way to find out. NotReplicated is not unknown: the master ran it (the caller answers it done,
`replication: pending`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.sentinel import MasterNotFoundError

from asr_service.errors import OutcomeUnknown
from asr_service.lifecycle import NotReplicated

log = logging.getLogger(__name__)


@contextmanager
def outcome_of(task_id: str, fate: str) -> Iterator[None]:
    """Turn a Redis failure inside the block into OutcomeUnknown for `task_id`, whose detail
    ends with `fate` (how the client learns what happened, and what is safe to repeat)."""
    try:
        yield
    except NotReplicated:
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if never_sent(exc):
            raise
        log.warning("outcome unknown: %s", exc, extra={"job_id": task_id})
        raise OutcomeUnknown(
            f"Redis failed while this change was being stored, so it may or may not have "
            f"happened. {fate}", task_id) from exc


def never_sent(exc: redis.RedisError) -> bool:
    """Whether the command certainly never reached Redis: no master known, or no free
    connection in the pool (both raised before anything is written to a socket)."""
    return isinstance(exc, MasterNotFoundError) or "No connection available" in str(exc)
