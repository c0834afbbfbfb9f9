"""API hot paths against a backlog: submit rate and read latency with many jobs in Redis.

`make bench-api` runs it: its own redis-server and the real API under gunicorn with
config/gunicorn.conf.py (no worker, so jobs stay queued), loopback only, a few minutes at most.
1. Submit rate (4 clients, 300 uploads of a 1 s WAV) into an empty queue, then with 5,000
   queued jobs (created by the real lifecycle code in Redis, each with its broker message);
   5 such pairs, Redis emptied before each, and the median of their ratios.
2. p50/p99 latency of the read endpoints with 100,000 retained jobs (created, claimed and
   succeeded by the lifecycle code) and 300,000 unrelated keys in Redis.
Prints a table and "GOAL MISSED" lines, writes bench/api.json; exits 0 either way.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
import requests
import soundfile as sf

from asr_service.celery_config import create_celery
from asr_service.dispatch import Dispatcher
from asr_service.jobs import Job, Status
from asr_service.lifecycle import Lifecycle, Runner
from asr_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "bench"
# ROUNDS pairs of runs (empty queue, then BACKLOG queued), Redis emptied before each pair: other
# load on a shared host drifts over seconds, so each pair's ratio is taken close together in time.
SUBMITS, SUBMIT_THREADS, ROUNDS = 300, 4, 5
BACKLOG = 5_000  # queued jobs during the second submit run
RETAINED = 100_000  # finished jobs during the reads
OTHER_KEYS = 300_000  # unrelated keys during the reads
SAMPLES, WARMUP = 200, 10
RATIO_GOAL, P99_GOAL_MS = 0.9, 20.0
RETENTION_S, MAX_RECORDINGS = 7 * 24 * 3600, 50
READS = ["/api/v1/health", "/api/v1/asr/queue/status", "/metrics", "/api/v1/stats",
         "/api/v1/asr/history?status=queued&limit=20",
         "/api/v1/asr/history?status=succeeded&limit=20&offset=5000",
         "/api/v1/dashboard", "/api/v1/asr/result/<retained id>"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_bytes(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A mono 16-bit WAV of a 440 Hz tone, in memory."""
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * t), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll check() until it is true; fail if `proc` exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if check():
                return
        except (OSError, requests.RequestException, redis.RedisError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args[0]} not ready in {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def stack(tmp: Path) -> Iterator[tuple[str, str]]:
    """redis-server and the API under gunicorn on free loopback ports: (redis url, base url)."""
    redis_port, api_port = free_port(), free_port()
    url, base = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{api_port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (tmp / "redis.log").open("wb") as log:
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp)], stdout=log, stderr=log))
        wait_until(lambda: redis.Redis.from_url(url).ping(), procs[0], 20)
        env = {**os.environ, "REDIS_URL": url, "API_PORT": str(api_port), "API_HOST": "127.0.0.1",
               "LOG_DIR": str(tmp / "logs"), "MAX_RECORDINGS": str(MAX_RECORDINGS),
               "ASR_MODEL": "models/tiny-paraformer"}
        with (tmp / "gunicorn.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "-c", "config/gunicorn.conf.py",
                 "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log))
        wait_until(lambda: requests.get(f"{base}/api/v1/health", timeout=2).status_code == 200,
                   procs[1], 60)
        yield url, base
    except BaseException:
        for name in ("redis.log", "gunicorn.log"):
            if (tmp / name).exists():
                print(f"--- {name}\n{(tmp / name).read_text(errors='replace')[-3000:]}",
                      file=sys.stderr)
        raise
    finally:
        for proc in reversed(procs):
            stop(proc)


def submit_rate(base: str, audio: bytes, count: int = SUBMITS) -> dict[str, Any]:
    """`count` uploads from SUBMIT_THREADS clients (a Session each): req/s and failures."""
    failures: list[int] = []
    share = [count // SUBMIT_THREADS + (i < count % SUBMIT_THREADS)
             for i in range(SUBMIT_THREADS)]

    def client(n: int) -> None:
        files = {"audio": ("a.wav", audio, "audio/wav")}
        with requests.Session() as session:
            for _ in range(n):
                try:
                    status = session.post(f"{base}/api/v1/asr/submit", files=files,
                                          timeout=30).status_code
                except requests.RequestException:
                    status = 0  # no answer
                if status != 202:
                    failures.append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"submits": count, "failed": len(failures), "seconds": round(elapsed, 2),
            "req_per_s": round(count / elapsed, 1)}


def submit_pairs(url: str, base: str, audio: bytes) -> dict[str, Any]:
    """ROUNDS pairs of submit runs, into an empty queue then with BACKLOG queued jobs; the
    median req/s of each side and the median of the pairs' ratios."""
    client, pairs = redis.Redis.from_url(url), []
    for _ in range(ROUNDS):
        client.flushdb()
        empty = submit_rate(base, audio)
        started = time.perf_counter()
        seeded = fill_queue(url, audio, BACKLOG)
        seed_s = time.perf_counter() - started
        depth = {"queued_jobs": client.zcard("asr:status:queued"), "broker": client.llen("asr")}
        backlog = submit_rate(base, audio)
        pairs.append({"empty": empty, "backlog": {**backlog, "before": depth, "seeded": seeded,
                                                  "seed_s": round(seed_s, 1)},
                      "ratio": round(backlog["req_per_s"] / empty["req_per_s"], 3)})
    ratio = statistics.median(p["ratio"] for p in pairs)
    return {"pairs": pairs, "ratio": ratio, "goal_met": ratio >= RATIO_GOAL,
            "empty_req_per_s": statistics.median(p["empty"]["req_per_s"] for p in pairs),
            "backlog_req_per_s": statistics.median(p["backlog"]["req_per_s"] for p in pairs),
            "failed": sum(p["empty"]["failed"] + p["backlog"]["failed"] for p in pairs)}


def new_job(size: int) -> Job:
    """A queued job as the API would create it."""
    job_id, now = str(uuid.uuid4()), time.time()
    return Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename="a.wav",
               content_type="audio/wav", size_bytes=size, duration_s=1.0, queue="asr",
               created_at=now, queued_at=now)


def fill_queue(url: str, audio: bytes, target: int) -> int:
    """Queued jobs (record, recording, broker message) until `target` are queued; how many."""
    client = redis.Redis.from_url(url)
    lifecycle = Lifecycle(client, retention_s=RETENTION_S, max_recordings=MAX_RECORDINGS)
    dispatcher = Dispatcher(create_celery(Settings(redis_url=url)))
    missing = target - client.zcard(f"{lifecycle.keys.prefix}status:queued")
    for _ in range(missing):
        job = new_job(len(audio))
        lifecycle.create(job, audio)
        dispatcher.send(job)
    return max(0, missing)


def add_finished(url: str, count: int, threads: int = 4) -> str:
    """`count` succeeded jobs through the lifecycle (create, claim, succeed); one of their ids."""
    lifecycle = Lifecycle(redis.Redis.from_url(url, max_connections=threads * 2),
                          retention_s=RETENTION_S, max_recordings=MAX_RECORDINGS)
    runner, result = Runner(token="bench", pid=1), {"text": "x", "duration_s": 1.0,
                                                    "model": "bench"}

    def finish(n: int) -> str:
        job_id = ""
        for _ in range(n):
            job = new_job(1)
            job_id = job.id
            lifecycle.create(job, b"x")
            lifecycle.claim(job_id, job_id, runner, "bench", 3, 60)
            lifecycle.succeed(job_id, job_id, "bench", result, 0.05)
        return job_id

    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(finish, [count // threads + (i < count % threads)
                                     for i in range(threads)]))
    return ids[0]


def add_other_keys(url: str, count: int, batch: int = 10_000) -> None:
    """`count` unrelated keys (other:<n>), set in pipelines of `batch`."""
    client = redis.Redis.from_url(url)
    for start in range(0, count, batch):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(count, start + batch)):
            pipe.set(f"other:{n}", "x")
        pipe.execute()


def latency(base: str, endpoint: str, retained_id: str) -> dict[str, Any]:
    """Sequential GETs of one endpoint after WARMUP ones: p50/p99 in ms, non-200 answers."""
    url, times, bad = base + endpoint.replace("<retained id>", retained_id), [], 0
    with requests.Session() as session:
        for i in range(WARMUP + SAMPLES):
            started = time.perf_counter()
            status = session.get(url, timeout=30).status_code
            if i >= WARMUP:
                times.append((time.perf_counter() - started) * 1000)
                bad += status != 200
    p50, p99 = np.percentile(times, [50, 99])
    return {"endpoint": endpoint, "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
            "non_200": bad, "goal_met": bool(p99 < P99_GOAL_MS and not bad)}


def run(tmp: Path) -> dict[str, Any]:
    """The measurements, with the stack up."""
    audio, timings = wav_bytes(), {}
    with stack(tmp) as (url, base):
        submit_rate(base, audio, 100)  # warm-up: both gunicorn workers, connections
        submit = submit_pairs(url, base, audio)
        client = redis.Redis.from_url(url)
        started = time.perf_counter()
        retained_id = add_finished(url, RETAINED)
        timings["seed_finished_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        add_other_keys(url, OTHER_KEYS)
        timings["seed_other_keys_s"] = round(time.perf_counter() - started, 1)
        keys = {"dbsize": client.dbsize(),
                "used_memory_mb": round(client.info("memory")["used_memory"] / 2**20)}
        reads = [latency(base, endpoint, retained_id) for endpoint in READS]
    return {"submit": submit, "reads": reads, "retained_id": retained_id, "redis": keys,
            "seeding": timings,
            "host": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}}


def show(report: dict[str, Any]) -> None:
    """The table, the submit figures and a GOAL MISSED line per missed goal."""
    width = max(len(r["endpoint"]) for r in report["reads"]) + 2
    print(f"{'endpoint':<{width}}{'p50 ms':>9}{'p99 ms':>9}  goal met (p99 < {P99_GOAL_MS:g} ms)")
    for r in report["reads"]:
        print(f"{r['endpoint']:<{width}}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}  "
              f"{'yes' if r['goal_met'] else 'NO'}")
    sub = report["submit"]
    print(f"\nsubmit: {SUBMIT_THREADS} clients, {SUBMITS} uploads of a 1 s WAV per run; "
          "Redis emptied before each pair")
    print(f"{'pair':<8}{'empty req/s':>13}{'backlog req/s':>15}{'queued':>8}{'broker':>8}"
          f"{'ratio':>8}")
    for n, pair in enumerate(sub["pairs"], start=1):
        before = pair["backlog"]["before"]
        print(f"{n:<8}{pair['empty']['req_per_s']:>13}{pair['backlog']['req_per_s']:>15}"
              f"{before['queued_jobs']:>8}{before['broker']:>8}{pair['ratio']:>8}")
    print(f"{'median':<8}{sub['empty_req_per_s']:>13}{sub['backlog_req_per_s']:>15}{'':>16}"
          f"{sub['ratio']:>8}  goal >= {RATIO_GOAL}: {'yes' if sub['goal_met'] else 'NO'}, "
          f"{sub['failed']} failed")
    print(f"redis during reads: {report['redis']['dbsize']} keys, "
          f"{report['redis']['used_memory_mb']} MB; seeding: {report['seeding']}")
    print(f"host: {report['host']['cpus']} CPUs, load average {report['host']['load_average_1m']} "
          "at the end (other load on the host slows every figure)")
    for r in report["reads"]:
        if not r["goal_met"]:
            print(f"GOAL MISSED: {r['endpoint']} p99 {r['p99_ms']} ms "
                  f"(goal < {P99_GOAL_MS:g} ms, {r['non_200']} non-200)")
    if not sub["goal_met"] or sub["failed"]:
        print(f"GOAL MISSED: submit ratio {sub['ratio']} (goal >= {RATIO_GOAL}), "
              f"{sub['failed']} submits failed")


def main() -> int:
    """Run, print and write bench/api.json."""
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        report = run(Path(tmp))
    show(report)
    OUT.mkdir(exist_ok=True)
    (OUT / "api.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
