"""The checker: reads a soak's history and proves what the service promises, or names the
first job that breaks it with its timeline. Pure functions over plain data (records, stream
entries, webhook arrivals, faults), so each rule is tested on a made-up history too
(tests/unit/test_chaos_checker.py).

The rules:
- lost: every accepted submit (202/200) ends in a terminal state, or in a delete its client
  asked for; a job failed only with `worker-lost` when at least MAX_DELIVERIES process-killing
  faults overlapped its life (anything else is a healthy job the faults turned into a failure).
- never-ended: every job the lifecycle created (also those whose 202 never reached its client)
  finished or was deleted.
- finished-twice: no job finished more often than its client retried it plus one, none
  succeeded twice (in the stream or in the hosts' events.jsonl), none finished after it was
  deleted.
- wrong-text: a succeeded job's text, and an OpenAI answer's, is what the engine gives for that
  clip alone.
- idempotency: one Idempotency-Key never named two jobs.
- webhook-missing / webhook-unsigned / webhook-after-delete: every finished job with a callback
  got its event at least once, every POST was signed, and no job's end arrived after its
  client deleted it (only the job.cancelled of that delete may).
- leftovers: after one retention period no key of a job remains and the budgets are zero.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")
SUBMITS = ("submit", "submit_keyed", "submit_callback", "submit_url")


@dataclass(frozen=True)
class StreamEvent:
    """One entry of the lifecycle's event stream (asr:events)."""

    t: float
    type: str
    job: str
    status: str
    reason: str = ""


@dataclass
class Verdict:
    violations: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, rule: str, job: str | None, detail: str) -> None:
        self.violations.append({"rule": rule, "job": job, "detail": detail})


def check(records: list[dict], stream: list[StreamEvent], arrivals: list[dict],
          references: dict[str, str], faults: list[dict], finals: dict[str, dict],
          leftovers: dict[str, Any], max_deliveries: int, retention_s: float,
          logged: list[dict] = ()) -> Verdict:
    """Every rule over one soak's history (see the module's docstring); `logged`: the lines
    of every host's events.jsonl."""
    verdict = Verdict()
    accepted = _accepted(records)
    retried = Counter(r["job"] for r in records if r["op"] == "retry" and r["status"] in (200, 202))
    by_job: dict[str, list[StreamEvent]] = defaultdict(list)
    for event in stream:
        by_job[event.job].append(event)
    deleted = _deleted(records, by_job)

    for job, clip in accepted.items():
        final = finals.get(job, {})
        status = final.get("status")
        if job in deleted:
            continue
        ended = [e.t for e in by_job[job] if e.type == "job.finished"]
        if status == "gone" and ended and final["read"] >= ended[-1] + retention_s - 1:
            continue  # it ended and its retention passed before its client read it again
        if status not in TERMINAL:
            verdict.add("lost", job, f"accepted, then {status or 'never read'}")
        elif status == "failed":
            kills = _kills_during(faults, _life(by_job[job]))
            error = (final.get("error") or {}).get("type", "")
            if not (error == "worker-lost" and kills >= max_deliveries):
                verdict.add("lost", job, f"failed ({error}) with {kills} process kills "
                            "during its life")
        elif status == "succeeded" and final.get("result_text") != references.get(clip):
            verdict.add("wrong-text", job, f"clip {clip}: {final.get('result_text')!r} != "
                        f"{references.get(clip)!r}")

    for job, events in by_job.items():
        kinds = [e.type for e in events]
        if "job.submitted" in kinds and "job.finished" not in kinds \
                and "job.deleted" not in kinds:
            verdict.add("never-ended", job, "created, never finished nor deleted")
        finished = [e for e in events if e.type == "job.finished"]
        if len(finished) > 1 + retried[job] or \
                sum(e.status == "succeeded" for e in finished) > 1:
            verdict.add("finished-twice", job, ", ".join(e.status for e in finished))
        removed = [e.t for e in events if e.type == "job.deleted"]
        if removed and any(e.t > removed[0] for e in finished):
            verdict.add("finished-twice", job, "finished after it was deleted")

    succeeded_lines = Counter(e.get("job_id") for e in logged if e.get("event") == "job.succeeded")
    for job, times in succeeded_lines.items():
        if times > 1:
            verdict.add("finished-twice", job, f"events.jsonl logs job.succeeded {times} times")

    for record in records:
        if record["op"] == "openai" and record["status"] == 200:
            text = (record.get("body") or {}).get("text")
            if text != references.get(record["clip"]):
                verdict.add("wrong-text", None, f"OpenAI answer for {record['clip']}: {text!r}")

    jobs_of_key: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.get("key") and record["status"] in (200, 202) and record.get("job"):
            jobs_of_key[record["key"]].add(record["job"])
    for key, jobs in jobs_of_key.items():
        if len(jobs) > 1:
            verdict.add("idempotency", sorted(jobs)[1], f"key {key} named {sorted(jobs)}")

    _check_webhooks(verdict, records, by_job, arrivals, deleted)
    for name, value in leftovers.items():
        verdict.add("leftovers", None, f"{name}: {value}")
    verdict.figures = figures(records, stream, faults)
    return verdict


def finals(records: list[dict]) -> dict[str, dict]:
    """Each job's last answer to its client: a result body, or 'gone' (a 404 to a poll, a
    delete or a retry), with when."""
    found: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r["t1"]):
        if record["op"] not in ("poll", "delete", "retry") or not record.get("job"):
            continue
        if record["status"] == 200 and record["op"] == "poll":
            found[record["job"]] = {**(record.get("body") or {}), "read": record["t1"]}
        elif record["status"] == 404:
            found[record["job"]] = {"status": "gone", "read": record["t1"]}
    return found


def _accepted(records: list[dict]) -> dict[str, str]:
    """job id -> clip, for every submit some answer accepted."""
    return {r["job"]: r["clip"] for r in records
            if r["op"] in SUBMITS and r["status"] in (200, 202) and r.get("job")}


def _deleted(records: list[dict], by_job: dict[str, list[StreamEvent]]) -> dict[str, float]:
    """job id -> when it was deleted, for every job its client asked to delete and the stream
    shows deleted (an answer lost on the way may have hidden a delete that happened)."""
    asked = {r["job"] for r in records if r["op"] == "delete"}
    return {job: min(e.t for e in by_job[job] if e.type == "job.deleted")
            for job in asked if any(e.type == "job.deleted" for e in by_job.get(job, []))}


def _life(events: list[StreamEvent]) -> tuple[float, float]:
    times = [e.t for e in events] or [0.0]
    return min(times), max(times)


def _kills_during(faults: list[dict], life: tuple[float, float]) -> int:
    return sum(1 for f in faults if f["kind"] in ("worker-kill", "engine-kill", "host-crash",
                                                  "worker-term")
               and f["started"] and life[0] <= f["started"] <= life[1])


def _check_webhooks(verdict: Verdict, records: list[dict],
                    by_job: dict[str, list[StreamEvent]], arrivals: list[dict],
                    deleted: dict[str, float]) -> None:
    hooked = {r["job"] for r in records if r["op"] == "submit_callback"
              and r["status"] in (200, 202) and r.get("job")}
    arrived: dict[str, list[dict]] = defaultdict(list)
    for arrival in arrivals:
        try:
            event = json.loads(arrival["body"])
        except ValueError:
            event = {}
        job = (event.get("data") or {}).get("task_id")
        if not arrival.get("verified"):
            verdict.add("webhook-unsigned", job, f"a POST at {arrival['t']:.3f} failed "
                        "signature verification")
        if job:
            arrived[job].append({"t": arrival["t"], "type": event.get("type")})
    for job in sorted(hooked):
        finished = [e for e in by_job.get(job, []) if e.type == "job.finished"]
        if finished and job not in deleted and not arrived.get(job):
            verdict.add("webhook-missing", job, f"finished {finished[-1].status}, no webhook")
        if job in deleted:
            late = [a for a in arrived.get(job, [])
                    if a["t"] > deleted[job] and a["type"] != "job.cancelled"]
            if late:
                verdict.add("webhook-after-delete", job, f"{late[0]['type']} arrived "
                            f"{late[0]['t'] - deleted[job]:.3f} s after the delete")


def figures(records: list[dict], stream: list[StreamEvent], faults: list[dict]) -> dict:
    """Per fault kind: count (and how many no other fault overlapped), recovery (fault -> first
    2xx answer to a request sent after it, first 202, first finished job) p50/max, jobs whose
    life overlapped it and how long they took; availability during and between faults."""
    accepted_at = sorted(r["t1"] for r in records if r["op"] in SUBMITS
                         and r["status"] in (200, 202))
    finished_at = sorted(e.t for e in stream if e.type == "job.finished")
    submitted: dict[str, float] = {}
    ended: dict[str, float] = {}
    for event in stream:
        if event.type == "job.submitted":
            submitted.setdefault(event.job, event.t)
        elif event.type in ("job.finished", "job.deleted"):
            ended[event.job] = event.t
    answered = _first_answers(records)
    table: dict[str, dict[str, Any]] = {}
    for kind in sorted({f["kind"] for f in faults}):
        played = [f for f in faults if f["kind"] == kind and f["started"]]
        to_ok = [answered(f["started"]) for f in played]
        to_202 = [_first_after(accepted_at, f["started"]) for f in played]
        to_done = [_first_after(finished_at, f["started"]) for f in played]
        # A fault no other one overlapped: what "recovery after any single fault" measures.
        alone = [i for i, f in enumerate(played) if not any(
            g is not f and g["started"] and g["started"] <= f["healed"] and
            g["healed"] >= f["started"] for g in faults)]
        affected = [ended[j] - submitted[j] for j in ended if j in submitted
                    and any(submitted[j] <= f["healed"] and ended[j] >= f["started"]
                            for f in played)]
        table[kind] = {"count": len(played), "alone": len(alone),
                       "to_ok_p50_s": _p50(to_ok), "to_ok_max_s": _max(to_ok),
                       "alone_to_ok_max_s": _max([to_ok[i] for i in alone]),
                       "alone_to_finish_max_s": _max([to_done[i] for i in alone]),
                       "to_202_p50_s": _p50(to_202),
                       "to_202_max_s": _max(to_202), "to_finish_p50_s": _p50(to_done),
                       "to_finish_max_s": _max(to_done), "jobs_affected": len(affected),
                       "their_latency_p50_s": _p50(affected),
                       "their_latency_max_s": _max(affected)}
    windows = [(f["started"], f["healed"]) for f in faults if f["started"]]
    during, between = [], []
    for record in records:
        hit = any(a <= record["t0"] <= b for a, b in windows)
        (during if hit else between).append(record)
    return {"faults": table, "availability_during": _available(during),
            "availability_between": _available(between), "requests": len(records),
            "accepted": len(_accepted(records))}


def table(figures: dict) -> list[str]:
    """The figures per fault kind as printed lines."""
    keys = ("to_ok_p50_s", "to_ok_max_s", "to_202_p50_s", "to_202_max_s", "to_finish_p50_s",
            "to_finish_max_s", "alone_to_ok_max_s", "alone_to_finish_max_s",
            "their_latency_p50_s", "their_latency_max_s")
    lines = ["recovery, seconds from the fault to: ok = the first 2xx answer to a request sent "
             "after it, 202 = the first accepted submit, done = the first finished job; alone = "
             "faults no other one overlapped",
             f"{'fault':14} {'n':>3} {'alone':>5} {'ok p50':>8} {'ok max':>8} {'202 p50':>8} "
             f"{'202 max':>8} {'done p50':>8} {'done max':>8} {'alone ok':>8} {'alone dn':>8} "
             f"{'lat p50':>8} {'lat max':>8} {'jobs':>5}"]
    for kind, row in figures["faults"].items():
        lines.append(f"{kind:14} {row['count']:>3} {row['alone']:>5} " + " ".join(
            f"{'-' if row[k] is None else row[k]:>8}" for k in keys)
            + f" {row['jobs_affected']:>5}")
    return lines


def _first_answers(records: list[dict]) -> Any:
    """t -> seconds from t to the first 2xx answer of a request sent at t or later."""
    import bisect

    sent = sorted((r["t0"], r["t1"]) for r in records if r["status"] and r["status"] < 300)
    starts, soonest = [t0 for t0, _ in sent], [t1 for _, t1 in sent]
    for i in range(len(soonest) - 2, -1, -1):  # the earliest answer from index i on
        soonest[i] = min(soonest[i], soonest[i + 1])

    def answered(t: float) -> float | None:
        i = bisect.bisect_left(starts, t)
        return round(soonest[i] - t, 3) if i < len(starts) else None

    return answered


def _first_after(times: list[float], t: float) -> float | None:
    import bisect

    i = bisect.bisect_left(times, t)
    return round(times[i] - t, 3) if i < len(times) else None


def _p50(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(max(known), 3) if known else None


def _available(records: list[dict]) -> float | None:
    """The share of requests answered 2xx or 4xx (no answer, and 5xx, are unavailable)."""
    if not records:
        return None
    ok = sum(1 for r in records if r["status"] and r["status"] < 500)
    return round(ok / len(records), 4)


def timeline(job: str, records: list[dict], stream: list[StreamEvent], arrivals: list[dict],
             faults: list[dict]) -> list[str]:
    """Everything that touched one job, and every fault of its lifetime, in time order."""
    lines: list[tuple[float, str]] = []
    for r in records:
        if r.get("job") == job:
            lines.append((r["t0"], f"{r['client']} {r['op']} -> {r['status'] or r.get('error')}"
                                   f" {json.dumps(r.get('body'))[:160]}"))
    for e in stream:
        if e.job == job:
            lines.append((e.t, f"stream {e.type} {e.status} {e.reason}"))
    for a in arrivals:
        if job in a["body"]:
            lines.append((a["t"], f"webhook arrived verified={a.get('verified')}"))
    if lines:
        first, last = min(t for t, _ in lines), max(t for t, _ in lines)
        for f in faults:
            if f["started"] and first - 5 <= f["started"] <= last:
                lines.append((f["started"], f"FAULT {f['kind']} {f['target']} "
                                            f"{f['healed'] - f['started']:.2f} s {f['note']}"))
    return [f"{t:.3f} {text}" for t, text in sorted(lines)]
