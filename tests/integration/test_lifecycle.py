"""The lifecycle's guarantees against real processes: nothing stranded, nothing run twice to
completion, delete is final, idempotent submit, a health a load balancer can use."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import redis

from asr_service.app import create_app
from asr_service.committed import WAIT_TIMEOUT_MS, NotReplicated
from asr_service.jobs import ErrorType, Job, JobStore, Keys, Status
from asr_service.lifecycle import Lifecycle, Outcome, Runner
from asr_service.runs import new_delivery
from tests import samples
from tests.harness import logged, reap, wait_ready
from tests.integration.conftest import (
    LONG_S,
    WORKER_START_TIMEOUT_S,
    Lane,
    RedisServer,
    Worker,
    report,
)
from tests.integration.flow import submit, wait_for

STRANDED_DEADLINE_S = 60  # what the service promises for a job whose message was lost


def finished_events(client: redis.Redis, job_id: str) -> list[str]:
    """The statuses of the job.finished events the lifecycle emitted for a job."""
    return [fields[b"status"].decode() for _, fields in client.xrange(Keys().events)
            if fields[b"type"] == b"job.finished" and fields[b"job_id"].decode() == job_id]


def succeeded_once(made: Lane, ids: list[str]) -> None:
    """Each job ended succeeded, with exactly one success recorded and logged."""
    client = made.client.application.extensions["asr"].store.redis
    assert [wait_for(made.client, i, timeout=STRANDED_DEADLINE_S + 30)["status"]
            for i in ids] == ["succeeded"] * len(ids)
    assert all(finished_events(client, i) == ["succeeded"] for i in ids)
    assert logged(made.events, "job.succeeded", ids) == Counter(ids)


def queue_key(made: Lane) -> str:
    return made.settings.queue_name


@pytest.mark.slow  # lane workers and 120 s recordings
def test_jobs_whose_message_never_reached_or_left_the_broker_run_once(lane):
    stranded = lane()
    store = stranded.client.application.extensions["asr"].store
    lifecycle = Lifecycle(store.redis, stranded.settings.result_retention_s,
                          stranded.settings.max_recordings)
    # 1. The API died between writing the record and sending the message: a record only.
    unsent = []
    for _ in range(2):
        job_id, now = str(uuid.uuid4()), time.time()
        data = samples.encode("wav", 2.0)
        lifecycle.create(Job(id=job_id, status=Status.QUEUED, celery_id=job_id,
                             filename="a.wav", content_type="audio/wav", size_bytes=len(data),
                             duration_s=2.0, queue=stranded.settings.queue_name,
                             created_at=now, queued_at=now), data)
        unsent.append(job_id)
    # 2. The broker lost the messages (its queue list is gone) after a normal submit.
    lost = [submit(stranded.client, samples.encode("wav", 2.0)).get_json()["task_id"]
            for _ in range(3)]
    assert store.redis.llen(queue_key(stranded)) == 3
    store.redis.delete(queue_key(stranded))

    started = time.monotonic()
    stranded.worker()
    succeeded_once(stranded, unsent + lost)
    took = time.monotonic() - started
    assert took < STRANDED_DEADLINE_S + 30
    report("stranded", jobs=len(unsent + lost), never_sent=len(unsent), message_lost=len(lost),
           all_succeeded_after_worker_start_s=round(took, 1), completed_twice=0)


def _truncate_before_last_push(aof_dir: Path, queue: str) -> int:
    """Cut the append-only file just before its last push to `queue`, as a crash that lost
    the last second of writes would; returns the bytes cut."""
    incr = max(aof_dir.glob("*.incr.aof"), key=lambda p: p.stat().st_mtime)
    data = incr.read_bytes()
    command = f"$5\r\nLPUSH\r\n${len(queue)}\r\n{queue}\r\n".encode()
    at = data.rfind(command)
    assert at > 0, "no push to the queue in the append-only file"
    start = data.rfind(b"*3\r\n", 0, at)
    incr.write_bytes(data[:start])
    return len(data) - start


@pytest.mark.slow  # a persistent Redis restarted under a worker
def test_a_job_whose_message_an_aof_lost_runs_once(settings, tmp_path):
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.workdir.mkdir()
    server.start()
    redis.Redis.from_url(server.url).config_set("appendfsync", "always")
    made = Lane(replace(settings, redis_url=server.url), tmp_path / "lane")
    try:
        ids = [submit(made.client, samples.encode("wav", 2.0)).get_json()["task_id"]
               for _ in range(2)]
        server.proc.send_signal(signal.SIGKILL)  # a crash: only what the AOF holds survives
        server.proc.wait(timeout=10)
        cut = _truncate_before_last_push(server.workdir / "appendonlydir", queue_key(made))
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.llen(queue_key(made)) == 1  # the last job's message is gone...
        assert {made.job(i)["status"] for i in ids} == {"queued"}  # ...its record is not

        made.worker()
        succeeded_once(made, ids)
        report("aof-lost-write", jobs=len(ids), aof_bytes_cut=cut, lost=0, completed_twice=0)
    finally:
        made.stop()
        server.stop()


def test_a_runner_that_lost_its_job_cannot_record_a_result(redis_server):
    client = redis.Redis.from_url(redis_server.url.replace("/0", "/4"))
    client.flushdb()
    lifecycle, store = Lifecycle(client, 3600, 10), JobStore(client, 10)
    job_id, now = str(uuid.uuid4()), time.time()
    lifecycle.create(Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a",
                         content_type="audio/wav", size_bytes=1, duration_s=1.0,
                         created_at=now, queued_at=now), b"x")
    first, second = Runner("first", 1), Runner("second", 1)
    client.set(store.keys.runner(first.token), "alive")
    assert lifecycle.claim(job_id, job_id, first, "w1", 3, 1).outcome is Outcome.OK
    assert lifecycle.claim(job_id, job_id, second, "w2", 3, 1).outcome is Outcome.BUSY
    client.delete(store.keys.lease(job_id))  # Redis was away longer than the lease...
    client.delete(store.keys.runner(first.token))  # ...and the first runner's heartbeat
    recovered = lifecycle.recover(job_id, job_id, new_delivery(job_id, "recovered"))
    assert recovered is not None  # the sweep re-queued it under a new delivery
    assert lifecycle.claim(job_id, recovered.celery_id, second, "w2", 3, 1).outcome \
        is Outcome.OK

    assert lifecycle.renew(job_id, first.token, 1) == "lost"
    assert lifecycle.succeed(job_id, job_id, first.token, {"text": "stale"}, 1.0) is None
    assert lifecycle.fail(job_id, job_id, ErrorType.INTERNAL, "stale", first.token) is None
    assert lifecycle.succeed(job_id, recovered.celery_id, second.token, {"text": "ok"}, 1.0)
    assert store.transcript(store.get(job_id)) == {"text": "ok"}
    assert lifecycle.renew(job_id, second.token, 1) == "done"  # its own end: nothing to stop
    assert finished_events(client, job_id) == ["succeeded"]


REDIS_PAUSE_S = 8  # a deliberate fault window: longer than the 1 s lease and the heartbeat


@pytest.mark.slow  # an 8 s fault window
def test_redis_paused_longer_than_the_lease_completes_once(lane, redis_server):
    paused = lane(job_lease_s=1)
    paused.worker()
    job_id = submit(paused.client, samples.encode("wav", 3 * LONG_S)).get_json()["task_id"]
    paused.wait_processing(job_id)

    redis_server.proc.send_signal(signal.SIGSTOP)
    time.sleep(REDIS_PAUSE_S)  # the fault window itself, not a wait for something
    redis_server.proc.send_signal(signal.SIGCONT)

    succeeded_once(paused, [job_id])
    started = sum(e["event"] == "job.started" and e["job_id"] == job_id
                  for e in paused.events())
    report("redis-paused", pause_s=REDIS_PAUSE_S, lease_s=1, runs_started=started, completed=1)


@pytest.fixture
def pid_namespaces() -> None:
    """Skip where the kernel refuses pid namespaces; probed only when the test runs."""
    works = shutil.which("unshare") and subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True
    ).returncode == 0
    if not works:
        pytest.skip("this kernel refuses pid namespaces")


class NamespacedWorker(Worker):
    """A worker in its own pid namespace: same hostname as the others, pids that collide."""

    def stop(self) -> None:
        """Stop the worker and everything in its namespace, whatever state it is in."""
        tree = psutil.Process(self.proc.pid).children(recursive=True) if self.proc else []
        # unshare blocks SIGTERM while it waits for its child, so stopping it alone runs into
        # stop_process's timeout: SIGTERM the worker's main process (the namespace's pid 1,
        # seen from here by its own pid) and unshare ends with it.
        if self.proc and self.proc.poll() is None:
            try:
                for main in psutil.Process(self.proc.pid).children():
                    main.terminate()
            except psutil.Error:
                pass
        super().stop()
        reap(tree, timeout=30)

    def start(self, wait: bool = True) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        from tests.integration.conftest import ROOT, settings_env

        self.proc = subprocess.Popen(
            # --kill-child: when unshare ends, its child (pid 1 of the namespace, the worker's
            # main process) gets SIGTERM, and the namespace's other processes go with it.
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM",
             sys.executable, "-m", "celery",
             "-A", "celery_app", "worker", "--pool=prefork", "--concurrency=1",
             "-n", f"{self.name}@%h", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=settings_env(self.settings), stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT)
        if wait:
            store = redis.Redis.from_url(self.settings.redis_url)
            # Its pid is the namespace's, not ours: ready is any heartbeat of its name.
            wait_ready(self.proc, lambda: any(
                json.loads(raw).get("engines_ready") for name, raw in
                store.hgetall(Keys().workers).items() if name.decode().startswith(f"{self.name}@")),
                WORKER_START_TIMEOUT_S, self.log_path, interval=0.2)


@pytest.mark.slow  # two namespaced workers
@pytest.mark.usefixtures("pid_namespaces")
def test_workers_sharing_a_hostname_in_separate_pid_namespaces_lose_nothing(lane):
    shared = lane(job_lease_s=2)
    for n in range(2):
        worker = NamespacedWorker(shared.settings, f"{shared.settings.queue_name}-ns{n}")
        shared.workers.append(worker)
        worker.start()
    ids = [submit(shared.client, samples.encode("wav", LONG_S)).get_json()["task_id"]
           for _ in range(6)]

    succeeded_once(shared, ids)
    workers = {shared.job(i)["worker"] for i in ids}
    assert not any(shared.job(i)["error"] for i in ids)
    report("pid-namespaces", workers=len(workers), jobs=len(ids), worker_lost=0)


@pytest.mark.slow  # a lane worker per parameter
@pytest.mark.parametrize("batch_wait_ms", [0, 50], ids=["prefork", "batching"])
def test_deleting_a_running_job_is_final(lane, batch_wait_ms):
    cancel = lane(asr_batch_wait_ms=batch_wait_ms)
    worker = cancel.worker()
    store = cancel.client.application.extensions["asr"].store
    running = submit(cancel.client, samples.encode("wav", 3 * LONG_S)).get_json()["task_id"]
    cancel.wait_processing(running)

    assert cancel.client.delete(f"/api/v1/asr/task/{running}").status_code == 204
    after = submit(cancel.client, samples.encode("wav", 2.0)).get_json()["task_id"]
    assert wait_for(cancel.client, after, timeout=60)["status"] == "succeeded"

    keys = store.keys
    assert not store.redis.exists(keys.job(running), keys.audio(running),
                                  keys.result(running), keys.lease(running))
    assert cancel.client.get(f"/api/v1/asr/result/{running}").status_code == 404
    assert running not in {j["task_id"] for j in
                           cancel.client.get("/api/v1/asr/history?limit=200").get_json()["items"]}
    if batch_wait_ms:  # a job thread is not interrupted (nor is Celery's control thread)
        assert "Traceback" not in worker.log_tail()


def test_idempotency_key_is_bound_with_the_job_and_checks_the_upload(make_client, worker):
    client = make_client()
    data, other = samples.encode("wav", 1.0), samples.encode("wav", 2.0)
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}

    def send(body: bytes):
        return client.post("/api/v1/asr/submit", headers=key, content_type="multipart/form-data",
                           data={"audio": (io.BytesIO(body), "a.wav")})

    with ThreadPoolExecutor(4) as pool:  # concurrent retries of one request: one job
        answers = list(pool.map(lambda _: send(data), range(4)))
    ids = {a.get_json()["task_id"] for a in answers}
    assert len(ids) == 1 and {a.status_code for a in answers} == {202}
    task_id = ids.pop()

    mismatch = send(other)
    assert mismatch.status_code == 422 and mismatch.content_type == "application/problem+json"
    assert task_id in mismatch.get_json()["detail"]

    wait_for(client, task_id)
    assert client.delete(f"/api/v1/asr/task/{task_id}").status_code == 204
    fresh = send(other)  # the key's job is gone: the key is free again
    assert fresh.status_code == 202 and fresh.get_json()["task_id"] != task_id
    assert "Idempotent-Replayed" not in fresh.headers


@pytest.mark.slow  # its own Redis and a worker started from cold
def test_health_stays_200_degraded_while_no_worker_has_a_model(settings, tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    own = replace(settings, redis_url=server.url, log_dir=str(tmp_path / "logs"))
    client = create_app(own).test_client()
    worker = Worker(own, "restarting")
    try:
        before = client.get("/api/v1/health")
        assert before.status_code == 200 and before.get_json()["status"] == "degraded"
        assert "no worker online" in before.get_json()["reasons"][0]
        ready = client.get("/api/v1/health?ready=workers")
        assert ready.status_code == 503 and ready.content_type == "application/problem+json"
        queued = submit(client, samples.encode("wav", 1.0))
        assert queued.status_code == 202  # jobs are accepted while no worker runs

        worker.start()
        assert client.get("/api/v1/health").get_json()["status"] == "ok"
        assert client.get("/api/v1/health?ready=workers").status_code == 200
        worker.proc.send_signal(signal.SIGTERM)  # a deploy restarts the worker
        worker.proc.wait(timeout=60)
        during = client.get("/api/v1/health")
        assert during.status_code == 200 and during.get_json()["status"] == "degraded"
        assert wait_for(client, queued.get_json()["task_id"])["status"] == "succeeded"
    finally:
        worker.stop()
        server.stop()


def test_a_state_change_no_replica_acknowledged_is_answered_pending(redis_server,
                                                                     make_client):
    """REDIS_MIN_REPLICAS=1 on a Redis without replicas: the write is applied but WAIT times
    out. The lifecycle raises NotReplicated carrying what the master did; the API answers it
    done with `replication: pending` (M5), never a 503 that hides a job which then runs."""
    client = redis.Redis.from_url(redis_server.url.replace("/0", "/5"))
    client.flushdb()
    lifecycle = Lifecycle(client, 3600, 10, min_replicas=1)
    now = time.time()
    job = Job(id=str(uuid.uuid4()), status=Status.QUEUED, celery_id="c", filename="a",
              content_type="audio/wav", size_bytes=1, duration_s=1.0, created_at=now,
              queued_at=now)
    started = time.monotonic()
    with pytest.raises(NotReplicated, match="0 of the 1 replicas") as lagging:
        lifecycle.create(job, b"x")
    assert time.monotonic() - started >= WAIT_TIMEOUT_MS / 1000 * 0.9
    assert lagging.value.result == ("created", job.id)
    assert JobStore(client, 10).get(job.id).status is Status.QUEUED  # the master holds it

    api = make_client(redis_url=redis_server.url.replace("/0", "/5"), redis_min_replicas=1)
    answer = submit(api, samples.encode("wav"))
    assert answer.status_code == 202, answer.get_data(as_text=True)
    task_id = answer.get_json()["task_id"]
    assert answer.get_json()["replication"] == "pending"
    stored = JobStore(client, 10).get(task_id)
    assert stored.status is Status.QUEUED
    assert client.llen("asr") >= 1  # dispatched, as any accepted job

    Lifecycle(client, 3600, 10).fail(task_id, stored.celery_id, ErrorType.CANCELLED, "test")
    retried = api.post(f"/api/v1/asr/retry/{task_id}")
    assert retried.status_code == 202, retried.get_data(as_text=True)
    assert retried.get_json()["replication"] == "pending"
    assert retried.get_json()["status"] == "queued"

    deleted = api.delete(f"/api/v1/asr/task/{task_id}")
    assert deleted.status_code == 204 and deleted.headers["Replication"] == "pending"
    assert api.get(f"/api/v1/asr/result/{task_id}").status_code == 404
    client.flushdb()  # no sweep may pick these up
