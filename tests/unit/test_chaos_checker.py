"""The soak's checker and schedule on made-up histories: each rule finds what it is for."""

from __future__ import annotations

import json

import pytest

from tests.chaos.checker import StreamEvent, check, finals, table, timeline
from tests.chaos.nemesis import KINDS, schedule

REFS = {"a": "alpha", "b": "bravo"}


def submit(job: str, t: float = 1.0, op: str = "submit", clip: str = "a", key: str | None = None,
           status: int = 202) -> dict:
    return {"t0": t, "t1": t + 0.01, "client": "c0", "op": op, "api": "x", "job": job,
            "key": key, "clip": clip, "status": status}


def life(job: str, *events: tuple[float, str, str]) -> list[StreamEvent]:
    return [StreamEvent(t, kind, job, status) for t, kind, status in events]


def ran(job: str, status: str = "succeeded", t: float = 1.0) -> list[StreamEvent]:
    return life(job, (t, "job.submitted", "queued"), (t + 1, "job.started", "processing"),
                (t + 2, "job.finished", status))


def done(text: str = "alpha", status: str = "succeeded", **more: object) -> dict:
    return {"status": status, "result_text": text, "read": 10.0, **more}


def verdict(records, stream, finals, arrivals=(), faults=(), leftovers=None):
    return check(list(records), list(stream), list(arrivals), REFS, list(faults), finals,
                 leftovers or {}, max_deliveries=3, retention_s=30)


def rules(v) -> list[str]:
    return [x["rule"] for x in v.violations]


def test_a_clean_history_passes():
    v = verdict([submit("j1")], ran("j1"), {"j1": done()})
    assert v.violations == [] and v.figures["accepted"] == 1


@pytest.mark.parametrize("final", [{}, {"status": "processing", "read": 10.0},
                                   {"status": "gone", "read": 4.0}])
def test_an_accepted_job_that_never_ended_or_vanished_is_lost(final):
    assert rules(verdict([submit("j1")], ran("j1"), {"j1": final})) == ["lost"]


def test_a_job_read_gone_after_its_retention_is_not_lost():
    assert verdict([submit("j1")], ran("j1"), {"j1": {"status": "gone", "read": 40.0}}
                   ).violations == []


def test_a_worker_lost_failure_needs_as_many_kills_as_deliveries():
    final = {"j1": done(status="failed", error={"type": "worker-lost"})}
    kill = {"kind": "worker-kill", "started": 2.5, "healed": 3.0, "target": "b", "note": ""}
    assert rules(verdict([submit("j1")], ran("j1"), final, faults=[kill] * 2)) == ["lost"]
    assert verdict([submit("j1")], ran("j1"), final, faults=[kill] * 3).violations == []
    timeout = {"j1": done(status="failed", error={"type": "timeout"})}
    assert rules(verdict([submit("j1")], ran("j1"), timeout, faults=[kill] * 3)) == ["lost"]


def test_a_job_deleted_by_its_client_is_excused_but_must_not_finish_afterwards():
    delete = {**submit("j1", t=2.0, op="delete"), "status": 204}
    stream = life("j1", (1.0, "job.submitted", "queued"), (2.0, "job.deleted", "queued"))
    assert verdict([submit("j1"), delete], stream, {}).violations == []
    late = [*stream, StreamEvent(3.0, "job.finished", "j1", "succeeded")]
    assert "finished-twice" in rules(verdict([submit("j1"), delete], late, {}))


def test_a_job_finished_twice_is_found_unless_its_client_retried_it():
    twice = [*ran("j1", "failed"), StreamEvent(5.0, "job.finished", "j1", "failed")]
    final = {"j1": done(status="failed", error={"type": "worker-lost"})}
    kills = [{"kind": "host-crash", "started": 2.5, "healed": 3.0, "target": "b", "note": ""}] * 3
    assert rules(verdict([submit("j1")], twice, final, faults=kills)) == ["finished-twice"]
    retry = {**submit("j1", t=4.0, op="retry"), "status": 202}
    assert verdict([submit("j1"), retry], twice, final, faults=kills).violations == []
    two_successes = [*ran("j1"), StreamEvent(5.0, "job.finished", "j1", "succeeded")]
    assert rules(verdict([submit("j1"), retry], two_successes, {"j1": done()})) \
        == ["finished-twice"]


def test_a_success_logged_twice_by_the_hosts_is_found():
    line = {"event": "job.succeeded", "job_id": "j1"}
    v = check([submit("j1")], ran("j1"), [], REFS, [], {"j1": done()}, {}, 3, 30, [line, line])
    assert rules(v) == ["finished-twice"]


def test_a_job_created_whose_answer_was_lost_must_still_end():
    assert rules(verdict([], ran("j1")[:2], {})) == ["never-ended"]
    assert verdict([], ran("j1"), {}).violations == []


def test_wrong_texts_are_found_in_results_and_openai_answers():
    assert rules(verdict([submit("j1")], ran("j1"), {"j1": done("bravo")})) == ["wrong-text"]
    openai = {**submit(None, op="openai", clip="b", status=200), "body": {"text": "alpha"}}
    assert rules(verdict([openai], [], {})) == ["wrong-text"]


def test_one_idempotency_key_naming_two_jobs_is_found():
    records = [submit("j1", op="submit_keyed", key="k"), submit("j2", op="submit_keyed", key="k")]
    stream = ran("j1") + ran("j2")
    assert rules(verdict(records, stream, {"j1": done(), "j2": done()})) == ["idempotency"]


def hook(job: str, t: float, kind: str = "job.succeeded", verified: bool = True) -> dict:
    return {"t": t, "verified": verified,
            "body": json.dumps({"type": kind, "data": {"task_id": job}})}


def test_webhooks_missing_unsigned_or_after_a_delete_are_found():
    records = [submit("j1", op="submit_callback")]
    assert rules(verdict(records, ran("j1"), {"j1": done()})) == ["webhook-missing"]
    assert verdict(records, ran("j1"), {"j1": done()}, [hook("j1", 4.0)]).violations == []
    assert rules(verdict(records, ran("j1"), {"j1": done()}, [hook("j1", 4.0, verified=False)])
                 ) == ["webhook-unsigned"]
    delete = {**submit("j1", t=3.5, op="delete"), "status": 204}
    stream = [*ran("j1"), StreamEvent(3.5, "job.deleted", "j1", "succeeded")]
    assert verdict([*records, delete], stream, {}, [hook("j1", 3.4)]).violations == []
    assert rules(verdict([*records, delete], stream, {}, [hook("j1", 3.6)])) \
        == ["webhook-after-delete"]
    assert verdict([*records, delete], stream, {}, [hook("j1", 3.6, "job.cancelled")]
                   ).violations == []


def test_leftovers_are_violations_and_the_timeline_names_the_job():
    v = verdict([submit("j1")], ran("j1"), {"j1": done()}, leftovers={"asr:job:j1": "hash"})
    assert rules(v) == ["leftovers"]
    lines = timeline("j1", [submit("j1")], ran("j1"), [], [
        {"kind": "redis-pause", "target": "redis", "started": 1.5, "healed": 2.0, "note": ""}])
    assert any("FAULT redis-pause" in line for line in lines)
    assert any("job.finished" in line for line in lines)


def test_figures_time_each_fault_to_the_next_202_and_finished_job():
    fault = {"kind": "redis-pause", "target": "redis", "started": 1.5, "healed": 2.5,
             "note": ""}
    records = [submit("j1"), submit("j2", t=3.0)]
    v = verdict(records, ran("j1") + ran("j2", t=3.0), {"j1": done(), "j2": done()},
                faults=[fault])
    row = v.figures["faults"]["redis-pause"]
    assert row["count"] == 1 and row["to_202_p50_s"] == pytest.approx(1.51)
    assert row["to_finish_p50_s"] == pytest.approx(1.5) and row["jobs_affected"] == 1  # j1


def test_the_same_seed_gives_the_same_schedule_with_every_kind():
    first, again, other = schedule(7, 120), schedule(7, 120), schedule(8, 120)
    assert first == again and first != other
    assert {f.kind for f in first} == set(KINDS)
    assert all(2.0 <= f.at < 112 for f in first)
    assert [f.at for f in first] == sorted(f.at for f in first)


def test_recovery_counts_only_requests_sent_after_the_fault_and_names_lone_faults():
    pause = {"kind": "redis-pause", "target": "redis", "started": 1.5, "healed": 2.5, "note": ""}
    kill = {"kind": "worker-kill", "target": "b", "started": 2.0, "healed": 2.1, "note": ""}
    full = {"kind": "redis-full", "target": "redis", "started": 10.0, "healed": 11.0,
            "note": ""}
    slow_poll = {**submit("j1", t=1.0, op="poll", status=200), "t1": 4.0}  # sent before: no
    records = [slow_poll, submit("j2", t=3.0), submit("j3", t=12.0, status=503),
               submit("j4", t=13.0)]
    v = verdict(records, ran("j2", t=3.0) + ran("j4", t=13.0), {"j2": done(), "j4": done()},
                faults=[pause, kill, full])
    rows = v.figures["faults"]
    assert rows["redis-pause"]["to_ok_max_s"] == pytest.approx(1.51)  # j2's 202, not the poll
    assert rows["redis-full"]["to_ok_max_s"] == pytest.approx(3.01)  # the 503 is no answer
    assert (rows["redis-pause"]["alone"], rows["worker-kill"]["alone"],
            rows["redis-full"]["alone"]) == (0, 0, 1)
    assert rows["redis-full"]["alone_to_ok_max_s"] == pytest.approx(3.01)
    assert any(line.startswith("redis-full") for line in table(v.figures))


def test_a_404_to_a_delete_after_the_retention_is_an_expired_job_and_before_it_a_lost_one():
    # Found by the 30-minute soak: a client held up 33 s by faults asked to delete a job that
    # had succeeded and expired meanwhile (15 s retention); its last poll said "queued".
    records = [submit("j1"), submit("j1", t=2.0, op="poll", status=200),
               submit("j1", t=40.0, op="delete", status=404)]
    records[1]["body"] = {"status": "queued"}
    assert rules(verdict(records, ran("j1"), finals(records))) == []  # ended at 3, +30 s
    records[2].update(t0=20.0, t1=20.01)
    assert rules(verdict(records, ran("j1"), finals(records))) == ["lost"]


def _session(commits: list[tuple[str, str]], finals: list[tuple[str, str]], end: str) -> dict:
    return {"op": "live", "client": "l0", "session": "sess_1", "status": 101, "end": end,
            "commits": [{"item": i, "clip": c, "t": 1.0} for i, c in commits],
            "finals": [{"item": i, "text": t, "t": 1.5} for i, t in finals]}


@pytest.mark.parametrize(("session", "rule"), [
    (_session([("i0", "a")], [("i0", "A")], "done"), None),
    (_session([("i0", "a"), ("i1", "b")], [("i0", "A")], "closed 1006"), None),  # cut short
    (_session([("i0", "a")], [("i0", "A"), ("i0", "A")], "done"), "live final repeated"),
    (_session([("i0", "a")], [("i0", "B")], "done"), "live final wrong"),
    (_session([("i0", "a"), ("i1", "b")], [("i1", "B")], "closed 1006"), "live final skipped"),
    (_session([("i0", "a")], [], "done"), "live final skipped"),
    (_session([("i0", "a")], [], "stalled"), "live session stalled"),
])
def test_the_live_check_finds_repeated_wrong_skipped_and_stalled_finals(session: dict,
                                                                         rule: str | None):
    from tests.chaos.live import check as check_live

    violations, figures = check_live([session], {"a": "A", "b": "B"})

    assert [v["rule"] for v in violations][:1] == ([rule] if rule else [])
    assert figures["sessions"] == 1
