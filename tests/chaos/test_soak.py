"""The chaos soak (issue 20): every fault at once under a mixed load, then a checker over the
history. `make test` runs a short one with a fixed seed; `make chaos SECONDS=1800 SEED=7` a long
one (CHAOS_SECONDS, CHAOS_SEED, CHAOS_CLIENTS, CHAOS_OUT: where the history is written).

A failure prints the seed, the first violation and that job's timeline; the same seed replays
the same fault schedule (tests/chaos/nemesis.py).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from tests import netns, samples
from tests.chaos import checker, live
from tests.chaos import stack as chaos_stack
from tests.chaos.load import Client, History
from tests.chaos.nemesis import Nemesis, schedule
from tests.harness import report

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("CHAOS_SECONDS", "60"))
SEED = int(os.environ.get("CHAOS_SEED", "20"))
CLIENTS = int(os.environ.get("CHAOS_CLIENTS", "4"))
LIVE_CLIENTS = int(os.environ.get("CHAOS_LIVE", "1"))  # each keeps one live session going
RETENTION_S = int(os.environ.get("CHAOS_RETENTION_S", "15"))
GAP_S = float(os.environ.get("CHAOS_GAP_S", "5"))  # mean time between two faults' starts
CLIP_SECONDS = {"a": 3.0, "b": 6.0, "c": 20.0, "d": 60.0}
SETTLE_S = 150  # after the soak: every job ended and every webhook delivered within this
SWEEP_LAG_S = 25  # the sweep runs about every 10 s per cluster (sweep.py)
MAX_DELIVERIES = 3  # the default (settings: MAX_DELIVERIES)


class StreamTail(threading.Thread):
    """Reads the lifecycle's event stream as it grows (it is trimmed to its last 10k events),
    through pauses and restarts of Redis."""

    def __init__(self, stack: chaos_stack.Stack) -> None:
        super().__init__(daemon=True, name="stream-tail")
        self.stack, self.events, self.last, self.stopped = stack, [], "0-0", threading.Event()

    def run(self) -> None:
        key = chaos_stack.KEYS.events
        while not self.stopped.is_set():
            try:
                client = self.stack.redis(timeout=5)
                while not self.stopped.is_set():
                    for _, entries in client.xread({key: self.last}, count=1000, block=500):
                        for entry_id, fields in entries:
                            self.last = entry_id
                            f = {k.decode(): v.decode() for k, v in fields.items()}
                            self.events.append(checker.StreamEvent(
                                int(entry_id.split(b"-")[0]) / 1000, f["type"], f["job_id"],
                                f["status"], f.get("reason", "")))
            except redis.RedisError:
                time.sleep(0.2)


@pytest.fixture
def soak_stack(model_assets: dict[str, Path]):
    if reason := netns.unavailable():
        pytest.skip(reason)
    clips = {name: samples.wav_bytes(samples.signal(s, seed=i))
             for i, (name, s) in enumerate(CLIP_SECONDS.items())}
    made = chaos_stack.start(model_assets, clips, RETENTION_S)
    try:
        yield made
    finally:
        made.close()


def test_every_fault_at_once_loses_nothing(soak_stack: chaos_stack.Stack, tmp_path: Path):
    stack = soak_stack
    tail = StreamTail(stack)
    tail.start()
    references = _references(stack)
    history = History()
    clients = [Client(f"c{i}", f"{SEED}-{i}", stack.api_urls(), stack.api_keys[i % 2],
                      stack.receiver.clips, lambda clip: stack.receiver.url(f"/clips/{clip}"),
                      stack.receiver.url("/hook"), history) for i in range(CLIENTS)]
    sessions = History()
    talkers = [live.LiveClient(f"l{i}", f"{SEED}-live-{i}", stack.api_urls(),
                               stack.api_keys[i % 2], chaos_stack.LIVE_MODEL,
                               stack.receiver.clips, sessions) for i in range(LIVE_CLIENTS)]
    faults = schedule(SEED, SECONDS, GAP_S)
    nemesis = Nemesis(stack, faults)

    began = time.time()
    until = began + SECONDS
    threads = [threading.Thread(target=c.run, args=(until, 0.4), daemon=True) for c in clients]
    threads += [threading.Thread(target=t.run, args=(until, 2.0), daemon=True) for t in talkers]
    threads.append(threading.Thread(target=nemesis.play, args=(began,), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 120)
    nemesis.join(120)
    soak_end = time.time()
    stack.heal()
    settle_by = time.time() + SETTLE_S
    for client in clients:
        client.resolve(settle_by)
    _webhooks_settle(stack, settle_by)
    finals = checker.finals(history.records)
    last_end = max([e.t for e in tail.events if e.type == "job.finished"] or [soak_end])
    time.sleep(max(0.0, last_end + RETENTION_S + SWEEP_LAG_S - time.time()))
    leftovers = _poll_leftovers(stack, 30)
    tail.stopped.set()

    verdict = checker.check(history.records, tail.events, stack.receiver.arrivals, references,
                            [f.as_dict() for f in faults], finals, leftovers, MAX_DELIVERIES,
                            RETENTION_S, _logged(stack))
    live_violations, verdict.figures["live"] = live.check(sessions.records, references)
    verdict.violations += live_violations
    out = Path(os.environ.get("CHAOS_OUT") or tmp_path)
    _write(out, history, tail.events, stack, faults, verdict, references, leftovers)
    (out / "live.json").write_text(json.dumps(sessions.records))
    _print(verdict, faults, nemesis, soak_end - began)
    figures = verdict.figures
    report("chaos-soak", seed=SEED, seconds=round(soak_end - began), clients=CLIENTS,
           faults=len(faults), requests=figures["requests"], accepted=figures["accepted"],
           availability_during=figures["availability_during"],
           availability_between=figures["availability_between"],
           violations=len(verdict.violations), recovery=figures["faults"], live=figures["live"])
    if verdict.violations:
        first = verdict.violations[0]
        lines = checker.timeline(first["job"], history.records, tail.events,
                                 stack.receiver.arrivals, [f.as_dict() for f in faults]) \
            if first["job"] else []
        pytest.fail(f"seed {SEED}: {len(verdict.violations)} violations; first: {first}\n"
                    + "\n".join(lines[-60:]) + f"\nhistory in {out}", pytrace=False)
    assert verdict.figures["accepted"] >= SECONDS / 2, verdict.figures  # the load did run
    assert {f.kind for f in faults if f.started} == {f.kind for f in faults}


def _references(stack: chaos_stack.Stack) -> dict[str, str]:
    """Each clip's text from the engine, sent alone before any fault."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.api_keys[0]}"
    api = stack.api_urls()[0]
    texts = {}
    for name, clip in stack.receiver.clips.items():
        answer = session.post(f"{api}/api/v1/asr/submit", timeout=30,
                              files={"audio": (f"{name}.wav", clip, "audio/wav")})
        assert answer.status_code == 202, answer.text
        task = answer.json()["task_id"]
        body = session.get(f"{api}/api/v1/asr/result/{task}", params={"wait": 60},
                           timeout=90).json()
        assert body["status"] == "succeeded", body
        texts[name] = body["result"]["text"]
    return texts


def _logged(stack: chaos_stack.Stack) -> list[dict]:
    """Every host's events.jsonl (the business log each process appends to)."""
    lines = []
    for path in stack.base.glob("*/logs/events.jsonl*"):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _webhooks_settle(stack: chaos_stack.Stack, deadline: float) -> None:
    """Until no delivery is due or in flight (or the deadline: the checker then says which)."""
    while time.time() < deadline:
        try:
            if not stack.redis().zcard(chaos_stack.KEYS.webhooks_due):
                return
        except redis.RedisError:
            pass
        time.sleep(0.5)


JOB_KEY_PARTS = ("job:", "audio:", "result:", "lease:", "webhook:", "webhooks:of:",
                 "webhooks:busy:", "webhooks:wait:", "status:", "owner:", "active:")
EMPTY_BY_NOW = ("history", "finished", "recordings:done", "recordings:sizes", "webhooks:due",
                "webhooks:waiting", "stranded:suspected")


def _leftovers(stack: chaos_stack.Stack) -> dict[str, str]:
    """Keys of jobs still there once every job's retention passed, and budgets not zero."""
    client = stack.redis()
    prefix = chaos_stack.KEYS.prefix
    found: dict[str, str] = {}
    for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        key = raw.decode()
        rest = key[len(prefix):]
        if rest.startswith(JOB_KEY_PARTS) or rest in EMPTY_BY_NOW:
            found[key] = client.type(raw).decode()
    budgets = {k.decode(): int(v) for k, v in
               client.hgetall(chaos_stack.KEYS.recordings_bytes).items()}
    for name, value in budgets.items():
        if value:
            found[f"{chaos_stack.KEYS.recordings_bytes}[{name}]"] = str(value)
    for queue in (stack.settings.queue_name, "unacked", "unacked_index"):
        if client.exists(queue) and client.type(queue) != b"none":
            size = client.llen(queue) if client.type(queue) == b"list" else \
                client.zcard(queue) if client.type(queue) == b"zset" else client.hlen(queue)
            if size:
                found[queue] = f"{size} messages"
    return found


def _poll_leftovers(stack: chaos_stack.Stack, timeout: float) -> dict[str, str]:
    deadline = time.time() + timeout
    while True:
        try:
            found = _leftovers(stack)
        except redis.RedisError as exc:
            found = {"redis": repr(exc)}
        if not found or time.time() > deadline:
            return found
        time.sleep(2)


def _write(out: Path, history: History, stream: list, stack: chaos_stack.Stack,
           faults: list, verdict: checker.Verdict, references: dict, leftovers: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "history.jsonl").open("w") as f:
        for record in history.records:
            f.write(json.dumps(record) + "\n")
    (out / "stream.json").write_text(json.dumps([e.__dict__ for e in stream]))
    (out / "webhooks.json").write_text(json.dumps(stack.receiver.arrivals))
    (out / "faults.json").write_text(json.dumps([f.as_dict() for f in faults], indent=1))
    (out / "verdict.json").write_text(json.dumps(
        {"seed": SEED, "seconds": SECONDS, "references": references, "leftovers": leftovers,
         "retention_s": RETENTION_S, "max_deliveries": MAX_DELIVERIES,
         "violations": verdict.violations, "figures": verdict.figures}, indent=1))
    for host in ("a", *chaos_stack.WORKER_HOSTS):
        logs = stack.base / host / "logs"
        if logs.exists():
            shutil.copytree(logs, out / f"logs-{host}", dirs_exist_ok=True)


def _print(verdict: checker.Verdict, faults: list, nemesis: Nemesis, took: float) -> None:
    figures = verdict.figures
    print(f"\nCHAOS seed={SEED} seconds={took:.0f} clients={CLIENTS} faults={len(faults)} "
          f"requests={figures['requests']} accepted={figures['accepted']} "
          f"availability during faults={figures['availability_during']} "
          f"between={figures['availability_between']} violations={len(verdict.violations)}")
    print("\n".join(checker.table(figures)))
    print(f"live sessions: {figures['live']}")
    for error in nemesis.errors:
        print(f"nemesis: {error}")
