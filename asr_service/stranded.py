"""Queued jobs whose Celery message the broker no longer holds, found in O(page) per sweep.

Reading whole queues to find a lost message costs O(backlog) (review M4). Instead:
- queued jobs are examined a page at a time, oldest first, from a cursor kept in Redis, so
  consecutive sweeps (by any worker) walk the whole backlog; jobs found missing once are
  looked at again by the next sweeps until they are present, gone or resent (two strikes:
  a message moving from a queue to a worker is in neither place for an instant);
- a queue list is FIFO (kombu LPUSHes, BRPOPs the other end), so its tail (LINDEX -1) is
  the oldest message it holds: a delivery sent more than LIST_LAG_S before the tail's was
  popped already (an empty list holds nothing). One read per queue, whatever its length.
  A message kombu restores (RPUSH to the tail) only makes this answer "maybe" more often;
- kombu's `unacked` (messages workers took, keyed by delivery tag) is O(in flight): its
  index is read whole, and only the entries not seen before are decoded.
Host death (review L7): a message a worker took and that no live worker says it holds
(workers publish their reserved task ids with each heartbeat, broker.publish_held) for TAKEN_GRACE_S
belonged to a host that died; its still-queued job is sent again under a new delivery.
Kombu would restore that message only after the visibility timeout (hours); when it comes,
its stale delivery id is skipped. Every resend is fenced by the delivery id, so a wrong
guess costs a wasted message and a place in line, never a second run.
"""

from __future__ import annotations

import logging
import time

from asr_service.broker import Broker
from asr_service.cluster import HEARTBEAT_TTL_S, STALE_WORKER_S
from asr_service.jobs import Job, JobStore, Status
from asr_service.lifecycle import Lifecycle
from asr_service.runs import STRANDED_AFTER_S, Dispatch, new_delivery

log = logging.getLogger(__name__)
LIST_LAG_S = 30  # bounds publish delays and clock skew between the hosts that send messages
TAKEN_GRACE_S = 30  # a taken message no live worker reports for this long is orphaned
PAGE = 200

class StrandedSweep:
    """One page of the stranded-job sweep per call; state between calls lives in Redis."""

    def __init__(self, store: JobStore, lifecycle: Lifecycle, dispatch: Dispatch,
                 page: int = PAGE) -> None:
        self.store, self.lifecycle = store, lifecycle
        self.redis = store.redis
        self.dispatch = dispatch
        self.page = page
        self.broker = Broker(store.redis, store.keys, fresh_s=HEARTBEAT_TTL_S,
                             stale_s=STALE_WORKER_S)
        self.cursor_key = store.keys.stranded_cursor  # "score member" of the last job examined
        self.suspects_key = store.keys.stranded_suspected  # zset "id delivery" -> first missed

    def run(self, now: float | None = None) -> list[str]:
        """Send again the examined queued jobs whose message is lost; returns their ids."""
        now = time.time() if now is None else now
        suspects = {m.decode() for m in self.redis.zrange(self.suspects_key, 0, self.page - 1)}
        ids = dict.fromkeys([m.partition(" ")[0] for m in suspects] + self._next_page(now))
        taken = self.broker.taken()
        floors: dict[str, float | None] = {}
        sent, missing, kept = [], {}, set()
        for job in self.store.load_many(list(ids)):
            if job.status != Status.QUEUED or job.queued_at >= now - STRANDED_AFTER_S:
                continue
            if job.queue not in floors:
                floors[job.queue] = self.broker.oldest_sent(job.queue)
            floor = floors[job.queue]
            if job.celery_id in taken or (floor is not None
                                          and job.queued_at + LIST_LAG_S >= floor):
                continue
            member = f"{job.id} {job.celery_id}"
            if member not in suspects:
                missing[member] = now  # first time seen missing: look again next sweep
            elif self._resend(job, "message-lost"):
                sent.append(job.id)
            else:
                kept.add(member)
        pipe = self.redis.pipeline(transaction=False)
        if missing:
            pipe.zadd(self.suspects_key, missing, nx=True)
        if gone := suspects - kept:  # present again, resent, claimed, deleted or superseded
            pipe.zrem(self.suspects_key, *gone)
        pipe.execute()
        return sent

    def orphaned(self, now: float | None = None) -> list[str]:
        """Send again the queued jobs whose message a dead worker took (host death)."""
        now = time.time() if now is None else now
        taken = self.broker.taken()
        old = {d: at for d, at in taken.items() if at < now - TAKEN_GRACE_S}
        if not old:
            return []
        held = self.broker.held(now)
        orphans = {d for d in old if d not in held}
        sent, needed = [], set()
        for job in self.store.load_many(sorted({d.partition(".")[0] for d in orphans})):
            if job.status == Status.QUEUED and job.celery_id in orphans:
                if self._resend(job, "message-orphaned"):
                    sent.append(job.id)
                else:
                    needed.add(job.celery_id)  # still the job's one message: keep it
        # The rest ran, ended, were deleted or sent again: nobody needs the dead one's copy.
        self.broker.forget(orphans - needed)
        return sent

    def _resend(self, job: Job, why: str) -> bool:
        moved = self.lifecycle.redispatch(job.id, job.celery_id, new_delivery(job.id, "resent"),
                                          reason=why)
        if moved is None:
            return False
        self.dispatch(moved)
        return True

    def _next_page(self, now: float) -> list[str]:
        """The next page of queued jobs created before the young cutoff, oldest first; the
        cursor goes back to the start once a page comes back short."""
        index, cutoff = self.store.keys.status(Status.QUEUED), now - STRANDED_AFTER_S
        raw = self.redis.get(self.cursor_key)
        got: list[tuple[bytes, float]] = []
        if raw:
            score, _, member = raw.decode().partition(" ")
            rank = self.redis.zrank(index, member)
            if rank is not None:  # ties on created_at keep their order by rank
                got = self.redis.zrange(index, rank + 1, rank + self.page, withscores=True)
            else:  # it left the queue: carry on after its score
                got = self.redis.zrangebyscore(index, f"({score}", "+inf", start=0,
                                               num=self.page, withscores=True)
        else:
            got = self.redis.zrangebyscore(index, "-inf", "+inf", start=0, num=self.page,
                                           withscores=True)
        page = [(m.decode(), s) for m, s in got if s < cutoff]
        if len(page) < self.page:
            self.redis.delete(self.cursor_key)
        else:
            self.redis.set(self.cursor_key, f"{page[-1][1]!r} {page[-1][0]}")
        return [m for m, _ in page]
