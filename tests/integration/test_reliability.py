"""No job lost: worker crashes, poison jobs, deploys and time limits, against real processes."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from tests import samples
from tests.harness import eventually, logged
from tests.integration.conftest import LONG_S, report
from tests.integration.flow import submit, wait_for

pytestmark = pytest.mark.slow  # fresh workers killed mid-job, 120 s recordings


def test_killed_workers_lose_no_job_and_run_none_twice(lane, client, worker):
    reference = wait_for(client, submit(client, samples.encode("wav", LONG_S)).get_json()
                         ["task_id"])["result"]["text"]
    crash = lane(job_lease_s=2)
    first = crash.worker()
    ids = [submit(crash.client, samples.encode("wav", LONG_S), f"j{i}.wav").get_json()["task_id"]
           for i in range(6)]
    kills = 0
    for target in (ids[0], ids[2]):  # the child process dies mid-job; Celery replaces it
        crash.wait_processing(target)
        os.kill(crash.worker_pid(target), signal.SIGKILL)
        kills += 1
    crash.wait_processing(ids[4])  # then the whole worker dies, main process and children
    kills += first.kill()
    crash.worker()  # a new worker comes up; the dead one's job is recovered from its lease

    finished = [wait_for(crash.client, task_id, timeout=120) for task_id in ids]

    assert [job["status"] for job in finished] == ["succeeded"] * len(ids)
    assert all(job["result"]["text"] == reference for job in finished)
    succeeded = logged(crash.events, "job.succeeded", ids)
    assert succeeded == Counter(ids)  # each ran to completion exactly once
    # The killed runs are counted from the claim the Lua transition committed, not from the
    # job.started log lines: a SIGKILL may land between that commit and the line's write.
    attempts = {job["task_id"]: job["attempts"] for job in finished}
    assert all(attempts[i] >= 2 for i in (ids[0], ids[2], ids[4])), attempts
    report("crash", jobs=len(ids), processes_killed=kills, lost=0,
           completed_twice=sum(n - 1 for n in succeeded.values()),
           restarts_after_kill=sum(attempts.values()) - len(ids))


def test_poison_job_fails_after_bounded_deliveries_and_the_queue_moves_on(lane):
    poison_lane = lane(max_deliveries=2, job_lease_s=2)
    poison_lane.worker()
    poison = submit(poison_lane.client, samples.encode("wav", LONG_S), "poison.wav") \
        .get_json()["task_id"]
    behind = [submit(poison_lane.client, samples.encode("wav", 2.0)).get_json()["task_id"]
              for _ in range(2)]
    kills = 0

    def gave_up() -> dict | None:
        nonlocal kills
        body = poison_lane.job(poison)
        if body["status"] not in ("queued", "processing"):
            return body
        if body["status"] == "processing" and body["attempts"] > kills:
            os.kill(poison_lane.worker_pid(poison), signal.SIGKILL)  # it kills its worker
            kills += 1
        return None

    failed = eventually(gave_up, 90, interval=0.01, message="the poison job never gave up")
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "worker-lost"
    assert "died 2 times" in failed["error"]["detail"]
    assert kills == 2
    assert [wait_for(poison_lane.client, t)["status"] for t in behind] == ["succeeded"] * 2
    report("poison", deliveries=kills, final_status=failed["status"])


def test_sigterm_lets_the_running_job_finish_once(lane):
    deploy = lane()
    old = deploy.worker()
    running = submit(deploy.client, samples.encode("wav", LONG_S)).get_json()["task_id"]
    waiting = submit(deploy.client, samples.encode("wav", 2.0)).get_json()["task_id"]
    deploy.wait_processing(running)

    old.proc.send_signal(signal.SIGTERM)  # what a deploy or `docker stop` sends
    assert old.proc.wait(timeout=60) == 0
    assert deploy.job(running)["status"] == "succeeded"
    assert deploy.job(waiting)["status"] == "queued"  # handed to nobody yet, not lost
    deploy.worker()  # the new version comes up

    assert wait_for(deploy.client, waiting)["status"] == "succeeded"
    succeeded = logged(deploy.events, "job.succeeded", [running, waiting])
    assert succeeded == Counter([running, waiting])


def test_soft_time_limit_fails_the_job_and_keeps_the_process(lane):
    limited = lane(task_time_limit_s=30, task_soft_time_limit_s=1)
    limited.worker()
    slow = submit(limited.client, samples.encode("wav", 3 * LONG_S)).get_json()["task_id"]
    quick = submit(limited.client, samples.encode("wav", 2.0)).get_json()["task_id"]

    failed = wait_for(limited.client, slow)
    done = wait_for(limited.client, quick)

    assert failed["status"] == "failed" and failed["error"]["type"] == "time-limit-exceeded"
    assert "soft time limit of 1 s" in failed["error"]["detail"]
    assert done["status"] == "succeeded"
    assert limited.worker_pid(quick) == limited.worker_pid(slow)


def test_hard_time_limit_fails_the_job_and_replaces_the_process(lane):
    limited = lane(task_time_limit_s=1, task_soft_time_limit_s=1)  # soft not before hard: none
    limited.worker()
    slow = submit(limited.client, samples.encode("wav", 3 * LONG_S)).get_json()["task_id"]
    limited.wait_processing(slow)
    slow_pid = limited.worker_pid(slow)
    quick = submit(limited.client, samples.encode("wav", 2.0)).get_json()["task_id"]

    failed = wait_for(limited.client, slow)
    done = wait_for(limited.client, quick, timeout=120)

    assert failed["status"] == "failed" and failed["error"]["type"] == "time-limit-exceeded"
    assert "hard time limit of 1 s" in failed["error"]["detail"]
    assert done["status"] == "succeeded"
    assert limited.worker_pid(quick) != slow_pid  # the killed process was replaced


def test_memory_bound_recycles_the_worker_process(lane):
    bounded = lane(worker_max_memory_mb=1)  # every process is above 1 MiB: replaced each job
    bounded.worker()
    ids = [submit(bounded.client, samples.encode("wav", 2.0)).get_json()["task_id"]
           for _ in range(2)]
    assert [wait_for(bounded.client, t, timeout=120)["status"] for t in ids] == ["succeeded"] * 2
    assert bounded.worker_pid(ids[0]) != bounded.worker_pid(ids[1])


def test_deleting_a_running_job_stops_it_and_the_worker_lives_on(lane):
    cancel = lane()
    cancel.worker()
    running = submit(cancel.client, samples.encode("wav", 3 * LONG_S)).get_json()["task_id"]
    cancel.wait_processing(running)
    pid = cancel.worker_pid(running)

    assert cancel.client.delete(f"/api/v1/asr/task/{running}").status_code == 204
    after = submit(cancel.client, samples.encode("wav", 2.0)).get_json()["task_id"]

    assert wait_for(cancel.client, after, timeout=30)["status"] == "succeeded"
    assert cancel.worker_pid(after) == pid  # same process, model still loaded
    assert cancel.client.get(f"/api/v1/asr/result/{running}").status_code == 404
    assert not any(e["event"] == "job.succeeded" and e["job_id"] == running
                   for e in cancel.events())
