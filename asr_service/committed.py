"""What is known of a state change once its script was sent: applied on the master and
acknowledged by REDIS_MIN_REPLICAS replicas, applied but NotReplicated, or unknown.

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
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.sentinel import MasterNotFoundError

from asr_service.errors import OutcomeUnknown

log = logging.getLogger(__name__)
T = TypeVar("T")

WAIT_TIMEOUT_MS = 1000
"""How long a state change may wait for REDIS_MIN_REPLICAS replicas to acknowledge it."""


class NotReplicated(redis.ConnectionError):
    """The master applied a state change but too few replicas acknowledged it in time, so it
    may not survive a failover (a worker retries it; the API answers it done with
    `replication: pending`, since the master holds it). `answer`: the script's reply;
    `result`: what the API-facing call (create, retry, delete) would have returned."""

    def __init__(self, message: str, answer: Any = None) -> None:
        super().__init__(message)
        self.answer = answer
        self.result: Any = None


def applied(script: Script, args: list[Any], client: redis.Redis,
            min_replicas: int) -> tuple[Any, NotReplicated | None]:
    """Run one state-changing script; with min_replicas, wait until that many replicas hold
    its writes (WAIT on the same connection, hence the pipeline). A change the master applied
    is returned even when replicas lag, with the NotReplicated to raise once its event went
    out (it did happen on the master)."""
    if not min_replicas:
        return script(args=args), None
    pipe = client.pipeline(transaction=False)
    script(args=args, client=pipe)
    pipe.wait(min_replicas, WAIT_TIMEOUT_MS)
    answer, acknowledged = pipe.execute()
    if acknowledged < min_replicas:
        return answer, NotReplicated(f"{acknowledged} of the {min_replicas} replicas "
                                     "(REDIS_MIN_REPLICAS) acknowledged within "
                                     f"{WAIT_TIMEOUT_MS} ms", answer)
    return answer, None


def unless_lagging(lagging: NotReplicated | None, result: T) -> T:
    """The result, or the NotReplicated carrying it when replicas did not acknowledge it."""
    if lagging is not None:
        lagging.result = result
        raise lagging
    return result


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
