"""A worker group scales 1 -> 3 -> 1 while jobs run, its pods stopped as Kubernetes stops them
(SIGTERM, the grace period, then SIGKILL of every process): no job lost, none run twice."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import redis

from asr_service.keys import Keys
from asr_service.sweep import SWEEP_EVERY_S
from tests import samples
from tests.harness import eventually, logged, wait_ready
from tests.integration.conftest import LONG_S, Lane, Worker, report
from tests.integration.flow import submit, wait_for

pytestmark = pytest.mark.slow  # three workers started and stopped, ~1 min

LEASE_S = 3
JOBS = 12
READY_TIMEOUT_S = 180


def pod(lane: Lane, tmp_path: Path, index: int) -> Worker:
    """A worker as deploy/k8s runs it: prefetch off, a ready file its probe tests."""
    settings = replace(lane.settings, worker_ready_file=str(tmp_path / f"pod{index}.ready"))
    worker = Worker(settings, f"{lane.settings.queue_name}-{index}", ["--disable-prefetch"])
    lane.workers.append(worker)  # the lane stops whatever is left
    worker.start(wait=False)
    return worker


def ready(worker: Worker) -> None:
    """The readiness probe: `test -f $WORKER_READY_FILE`."""
    assert worker.proc is not None
    wait_ready(worker.proc, Path(worker.settings.worker_ready_file).exists, READY_TIMEOUT_S,
               worker.log_path, interval=0.1)


def sigterm(worker: Worker) -> list[psutil.Process]:
    """The kubelet stops a pod: SIGTERM to the container's main process (Celery's warm
    shutdown). Returns the container's processes, for the SIGKILL after the grace period."""
    assert worker.proc is not None
    main = psutil.Process(worker.proc.pid)
    tree = [main, *main.children(recursive=True)]
    worker.proc.send_signal(signal.SIGTERM)
    return tree


def after_grace(worker: Worker, tree: list[psutil.Process], grace_s: float,
                ) -> tuple[int | None, float]:
    """The grace period, then SIGKILL to every process left in the container. Returns (its
    exit code, None when it had to be killed; when it ended)."""
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout=grace_s), time.time()
    except subprocess.TimeoutExpired:
        killed_at = time.time()
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        worker.proc.wait(timeout=10)
        return None, killed_at


def running_on(lane: Lane, worker: Worker, ids: list[str]) -> str | None:
    """A job a process of this worker is running now, if any."""
    assert worker.proc is not None
    pids = {p.pid for p in psutil.Process(worker.proc.pid).children(recursive=True)}
    for task_id in ids:
        if lane.job(task_id)["status"] == "processing" and lane.worker_pid(task_id) in pids:
            return task_id
    return None


def test_scale_out_and_in_under_load_loses_no_job_and_runs_none_twice(lane, tmp_path):
    started = time.monotonic()
    group = lane(job_lease_s=LEASE_S)
    first = pod(group, tmp_path, 0)
    ready(first)
    clip = samples.encode("wav", LONG_S)  # ~1 s of work each for the tiny model
    ids = [submit(group.client, clip, f"j{i}.wav").get_json()["task_id"] for i in range(JOBS)]

    scaled_out = [pod(group, tmp_path, 1), pod(group, tmp_path, 2)]  # KEDA: 1 -> 3
    for worker in scaled_out:
        ready(worker)

    def both_busy() -> tuple[str, str] | None:
        running = [running_on(group, w, ids) for w in scaled_out]
        return (running[0], running[1]) if all(running) else None

    finishing, cut = eventually(both_busy, 60, interval=0.02,
                                message="the new pods never ran jobs at the same time")
    # KEDA: 3 -> 1, both pods at once. One pod's grace period outlasts its job (it finishes and
    # exits), the other's is cut short mid-job (SIGKILL): its job must come back once the lease
    # lapses, and run again on the pod that stays.
    trees = [sigterm(w) for w in scaled_out]
    killed_exit, killed_at = after_grace(scaled_out[1], trees[1], grace_s=0.2)
    finished_exit, _ = after_grace(scaled_out[0], trees[0], grace_s=60)

    jobs = {task_id: wait_for(group.client, task_id, timeout=120) for task_id in ids}

    assert [job["status"] for job in jobs.values()] == ["succeeded"] * JOBS  # 0 lost
    assert len({job["result"]["text"] for job in jobs.values()}) == 1
    succeeded = logged(group.events, "job.succeeded", ids)
    assert succeeded == Counter(ids)  # 0 run twice: each job committed its success once
    assert finished_exit == 0 and jobs[finishing]["attempts"] == 1  # finished in its grace
    assert killed_exit is None and jobs[cut]["attempts"] == 2  # cut, handed back, run again
    assert not Path(scaled_out[0].settings.worker_ready_file).exists()  # unready at shutdown
    # When it was queued again, from the lifecycle's stream (written in the same atomic step as
    # the change; the events.jsonl line follows it and a busy host can write it late).
    stream = redis.Redis.from_url(group.settings.redis_url).xrange(Keys().events)
    requeued = [int(entry_id.split(b"-")[0]) / 1000 for entry_id, fields in stream
                if fields[b"job_id"].decode() == cut and fields[b"type"] == b"job.requeued"]
    handed_back_s = requeued[0] - killed_at
    # The runner's heartbeat lapses (RUNNER_TTL_S 6 s, then the lease, 3 s) and the next sweep
    # (every 10 s) requeues the job.
    assert handed_back_s <= 6 + LEASE_S + SWEEP_EVERY_S + 2, handed_back_s
    duration = time.monotonic() - started
    report("scale", jobs=JOBS, replicas="1->3->1", lost=0,
           run_twice=sum(n - 1 for n in succeeded.values()),
           attempts=sum(job["attempts"] for job in jobs.values()),
           finished_in_grace=finishing, killed_mid_job=cut,
           handed_back_s=round(handed_back_s, 2), duration_s=round(duration, 1))
