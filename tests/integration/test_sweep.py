"""The periodic sweep against a real redis-server of its own (no worker needed): O(page) cost,
a lock held as long as the work, retention expiry at maxmemory, lost and orphaned messages."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from asr_service.broker import publish_held
from asr_service.broker import task_id as broker_task_id
from asr_service.jobs import Job, JobStore, Status, encode_fields
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from asr_service.stranded import LIST_LAG_S, PAGE, TAKEN_GRACE_S, StrandedSweep
from asr_service.sweep import SWEEP_LOCK, Sweep, Sweeper
from tests.harness import eventually
from tests.integration.conftest import RedisServer, report

QUEUE = "asr"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Its own server: the OOM test sets maxmemory, which would hit every other test."""
    own = RedisServer(Path(tmp_path_factory.mktemp("sweep-redis")))
    own.start()
    yield own
    own.stop()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    yield client
    client.config_set("maxmemory", 0)


class Sent(list):
    """Stand-in for Dispatcher.try_send: records what the sweep sends."""

    def __call__(self, job: Job) -> bool:
        self.append(job)
        return True


def message(delivery: str, size: int = 1000) -> bytes:
    """A kombu Redis-transport message as Celery publishes it (body padded to a real size)."""
    return json.dumps({
        "body": "x" * size, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": "asr.transcribe", "id": delivery, "root_id": delivery,
                    "argsrepr": "()", "origin": "gen1@api"},
        "properties": {"correlation_id": delivery, "delivery_mode": 2, "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": QUEUE},
                       "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }).encode()


def fill(r: redis.Redis, n: int, age: float, in_list: bool = True) -> list[str]:
    """n queued jobs `age` seconds old (distinct times), each with its message in the queue."""
    store, ids, start = JobStore(r, 10), [], time.time() - age
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        job_id, at = str(uuid.uuid4()), start + i * 1e-4
        job = Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
                  content_type="audio/wav", size_bytes=46, duration_s=0.1, queue=QUEUE,
                  created_at=at, queued_at=at)
        pipe.hset(store.keys.job(job_id), mapping=encode_fields(vars(job)))
        pipe.zadd(store.keys.status(Status.QUEUED), {job_id: at})
        if in_list:
            pipe.lpush(QUEUE, message(job_id))
        ids.append(job_id)
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return ids


def take(r: redis.Redis, delivery: str, at: float) -> None:
    """A worker took this message: kombu's QoS.append."""
    tag = str(uuid.uuid4())
    r.zadd("unacked_index", {tag: at})
    r.hset("unacked", tag, json.dumps([json.loads(message(delivery)), "", QUEUE]))


def parts(r: redis.Redis, sent: Sent | None = None) -> tuple[Lifecycle, StrandedSweep, Sweep]:
    sent = Sent() if sent is None else sent
    store, lifecycle = JobStore(r, 10), Lifecycle(r, 3600, 10)
    stranded = StrandedSweep(store, lifecycle, sent)
    return lifecycle, stranded, Sweep(store, lifecycle, stranded, sent)


def one_run_ms(r: redis.Redis, stranded: StrandedSweep, sweep: Sweep) -> float:
    started = time.perf_counter()
    sweep.run()
    return 1000 * (time.perf_counter() - started)


def test_one_sweep_costs_a_page_whatever_the_backlog(r):
    figures = {}
    for n in (200, 20_000):
        r.flushall()
        fill(r, n, age=3600)
        _, stranded, sweep = parts(r)
        r.config_resetstat()
        runs = [one_run_ms(r, stranded, sweep) for _ in range(5)]
        stats = r.info("commandstats")
        reads = stats.get("cmdstat_hgetall", {}).get("calls", 0)
        assert reads <= 5 * PAGE  # one page of records per run, never the backlog
        assert "cmdstat_lrange" not in stats and "cmdstat_hvals" not in stats
        assert r.zcard("asr:stranded:suspected") == 0  # every message is in its queue
        figures[n] = round(statistics.median(runs), 1)
    report("sweep-cost", queued_200_ms=figures[200], queued_20000_ms=figures[20_000],
           page=PAGE)


def test_the_cursor_walks_the_whole_backlog_a_page_per_run(r):
    ids = fill(r, 2 * PAGE + 5, age=3600)
    _, stranded, _ = parts(r)
    now = time.time()
    pages = [stranded._next_page(now) for _ in range(4)]
    assert pages[0] + pages[1] + pages[2] == ids
    assert pages[3] == ids[:PAGE]  # back to the start


def test_a_lost_message_is_resent_at_the_second_look_only(r):
    sent = Sent()
    lifecycle, stranded, _ = parts(r, sent)
    lost = fill(r, 1, age=3600, in_list=False)[0]  # empty queue: its message is nowhere
    assert stranded.run() == []  # a message between queue and worker is in neither place
    assert stranded.run() == [lost]
    assert [j.id for j in sent] == [lost] and sent[0].celery_id != lost
    assert time.time() - sent[0].queued_at < 60  # the new message's place in line
    assert stranded.run() == [] and r.zcard("asr:stranded:suspected") == 0


def test_a_message_behind_a_long_queue_is_not_taken_for_lost(r):
    _, stranded, _ = parts(r)
    fill(r, 3 * PAGE, age=3600)  # the tail of the queue is older than every job examined
    for _ in range(4):
        assert stranded.run() == []


def test_a_message_lost_behind_newer_ones_is_resent(r):
    lost = fill(r, 1, age=3600, in_list=False)[0]
    fill(r, 3, age=3600 - 2 * LIST_LAG_S)  # the queue's oldest message was sent well after
    _, stranded, _ = parts(r)
    assert stranded.run() == [] and stranded.run() == [lost]


def test_a_message_held_by_a_dead_host_is_resent_and_a_live_workers_is_not(r):
    sent = Sent()
    lifecycle, stranded, _ = parts(r, sent)
    dead, alive, young = fill(r, 3, age=3600, in_list=False)
    now = time.time()
    for job_id, at in ((dead, now - 2 * TAKEN_GRACE_S), (alive, now - 2 * TAKEN_GRACE_S),
                       (young, now), ("a-job-since-deleted", now - 2 * TAKEN_GRACE_S)):
        take(r, job_id, at)
    publish_held(r, "node-alive", [alive])
    assert stranded.orphaned() == [dead]
    assert stranded.run() == []  # the two others are in a worker's hands
    assert [j.id for j in sent] == [dead]
    # the dead host's copies leave kombu's unacked (they would stay for the visibility
    # timeout), the resent job's and the deleted job's; the live worker's and the young one stay
    assert sorted(broker_task_id(raw, wrapped=True) for raw in r.hvals("unacked")) \
        == sorted([alive, young])
    assert r.zcard("unacked_index") == 2
    # the dead host's old message, should it come back, is fenced out by its delivery id
    assert lifecycle.claim(dead, dead, Runner("r", 1), "w", 3, 60).outcome is Outcome.SKIP


def test_the_lock_is_held_as_long_as_the_sweep_runs(r):
    ttl, held_since = 0.3, []

    class Long:
        def __init__(self, held):
            self.held = held

        def run(self) -> dict[str, int]:
            token = r.get(SWEEP_LOCK)
            held_since.append(time.monotonic())
            # work for 4 lock lifetimes: the lock must stay ours throughout
            eventually(lambda: time.monotonic() - held_since[0] > 4 * ttl
                       and r.get(SWEEP_LOCK) == token, timeout=10, interval=0.05)
            assert r.get(SWEEP_LOCK) == token and self.held()
            return {"long": 1}

    sweeper = Sweeper(r, Long, every_s=10, lock_ttl_s=ttl)
    assert Sweeper(r, Long, lock_ttl_s=ttl).run_once() == {"long": 1}
    assert sweeper.run_once() is None  # handed over: the next sweep comes a period later
    r.set(SWEEP_LOCK, "another worker's token", px=60_000)
    assert sweeper.run_once() is None
    assert r.get(SWEEP_LOCK) == b"another worker's token"  # only its holder's token frees it


def test_a_full_redis_still_expires_finished_jobs_and_frees_memory(r):
    keep = Lifecycle(r, 3600, 1000)
    runner = Runner("runner", 1)
    for _ in range(200):
        job_id, now = str(uuid.uuid4()), time.time()
        keep.create(Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
                        content_type="audio/wav", size_bytes=20_000, duration_s=1.0,
                        created_at=now, queued_at=now), b"a" * 20_000)
        assert keep.claim(job_id, job_id, runner, "w", 3, 60).outcome is Outcome.OK
        assert keep.succeed(job_id, job_id, runner.token, {"text": "t" * 20_000}, 0.1)
    before = r.info("memory")["used_memory"]
    r.config_set("maxmemory", before + 64 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.set("filler", "x" * 256 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.set(SWEEP_LOCK, "old-style lock", nx=True, ex=10)

    store, expiring = JobStore(r, 1000), Lifecycle(r, 0, 1000)  # everything is past retention
    stranded = StrandedSweep(store, expiring, Sent())
    done = Sweeper(r, lambda held: Sweep(store, expiring, stranded, Sent(), held)).run_once()
    after = r.info("memory")["used_memory"]
    assert done is not None and done["expired"] == 200
    assert r.zcard(store.keys.finished) == 0 and r.zcard(store.keys.history) == 0
    assert after < before - 200 * 20_000
    report("sweep-under-oom", maxmemory=before + 64 * 1024, used_before=before,
           used_after=after, expired=done["expired"])
