"""What the broker (kombu's Redis transport) holds, read through its key layout without reading
whole queues: the one module that knows kombu's internals (queue lists, `unacked`)."""

from __future__ import annotations

import json
import time

import redis

from asr_service.keys import Keys

UNACKED = "unacked"  # kombu's Redis transport: messages taken by a worker, not acked
PRIORITY_SEP = "\x06\x16"  # kombu: the list of priority P of queue Q is Q + sep + P


def queue_lists(queue: str) -> list[str]:
    """The broker lists of a queue: kombu keeps one per message priority."""
    return [queue, *(f"{queue}{PRIORITY_SEP}{p}" for p in (3, 6, 9))]


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a broker queue (not yet taken by a worker)."""
    pipe = client.pipeline(transaction=False)
    for key in queue_lists(queue):
        pipe.llen(key)
    return int(sum(pipe.execute()))


def taken_jobs(client: redis.Redis, limit: int = 200) -> list[str]:
    """Job ids of messages workers have taken and not yet acknowledged (O(unacked): the
    workers' prefetch and delayed retries)."""
    deliveries = {task_id(raw, wrapped=True) for raw in client.hvals(UNACKED)}
    # A delivery id is the job id, or "<job id>.<why>.<nonce>" (runs.new_delivery).
    return sorted({d.partition(".")[0] for d in deliveries if d})[:limit]


def task_id(raw: bytes, wrapped: bool = False) -> str | None:
    """The Celery task id in a kombu message ([message, exchange, routing key] if wrapped)."""
    try:
        message = json.loads(raw)
        if wrapped:
            message = message[0]
        return message["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def publish_held(client: redis.Redis, node: str, deliveries: list[str],
                 keys: Keys | None = None) -> None:
    """A worker's heartbeat: the task ids of every message it has taken and not finished
    (Keys.workers_held: node token -> {"at": time, "ids": [task ids it holds]})."""
    held = {"at": time.time(), "ids": deliveries}
    client.hset((keys or Keys()).workers_held, node, json.dumps(held))


def withdraw_held(client: redis.Redis, node: str, keys: Keys | None = None) -> None:
    """A worker that stops holds nothing (kombu hands its messages back to the queue)."""
    client.hdel((keys or Keys()).workers_held, node)


class Broker:
    """What the broker holds, read without reading whole queues."""

    def __init__(self, client: redis.Redis, keys: Keys, fresh_s: float, stale_s: float) -> None:
        self.redis = client
        self.keys = keys
        self.fresh_s = fresh_s
        """A worker's list of held messages counts while younger than this."""
        self.stale_s = stale_s
        """A worker's list older than this is forgotten."""
        self._tags: dict[bytes, str | None] = {}  # delivery tag -> task id (tags never reused)

    def taken(self) -> dict[str, float]:
        """Task id -> when a worker took it, for every message taken and not acknowledged."""
        index = dict(self.redis.zrange(f"{UNACKED}_index", 0, -1, withscores=True))
        self._tags = {t: self._tags[t] for t in index if t in self._tags}
        new = [t for t in index if t not in self._tags]
        if new:
            for tag, raw in zip(new, self.redis.hmget(UNACKED, new), strict=True):
                self._tags[tag] = task_id(raw, wrapped=True) if raw else None
        return {task: index[tag] for tag, task in self._tags.items() if task}

    def forget(self, deliveries: set[str]) -> int:
        """Take these taken messages out of `unacked` (what a worker's ack does), for those a
        dead worker took: kombu would restore each only after the visibility timeout (hours),
        for a job that ended or was sent again long before. Without this, every crash leaves
        its messages there and `taken()`, O(unacked), grows with the crashes."""
        tags = [tag for tag, task in self._tags.items() if task in deliveries]
        if tags:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hdel(UNACKED, *tags)
            pipe.zrem(f"{UNACKED}_index", *tags)
            pipe.execute()
        return len(tags)

    def held(self, now: float) -> set[str]:
        """Task ids live workers say they hold; forgets the entries of long-gone workers."""
        key, live, stale = self.keys.workers_held, set(), []
        for node, raw in self.redis.hgetall(key).items():
            entry = json.loads(raw)
            if entry["at"] >= now - self.fresh_s:
                live.update(entry["ids"])
            elif entry["at"] < now - self.stale_s:
                stale.append(node)
        if stale:
            self.redis.hdel(key, *stale)
        return live

    def oldest_sent(self, queue: str) -> float | None:
        """When the oldest message in the queue's lists was sent: None if they are empty,
        -inf when that cannot be told (a stale or unknown message: then any may be there)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in queue_lists(queue):
            pipe.lindex(key, -1)
        tails = [t for t in pipe.execute() if t is not None]
        if not tails:
            return None
        oldest = float("inf")
        for raw in tails:
            delivery = task_id(raw) or ""
            job_id = delivery.partition(".")[0]
            current, queued_at = self.redis.hmget(self.keys.job(job_id), "celery_id",
                                                  "queued_at")
            if not current or json.loads(current) != delivery or queued_at is None:
                return float("-inf")
            oldest = min(oldest, float(json.loads(queued_at)))
        return oldest
