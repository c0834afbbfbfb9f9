"""The control plane's cost per job, without the model's: `make bench-control`.

Its own redis-server, the real API under gunicorn (config/gunicorn.conf.py) and one real worker
(prefork, one process) with the real FSMN-VAD and the tiny Paraformer. Each job is a 0.5 s clip
of silence: the VAD finds no speech, so the model costs next to nothing and what is measured is
the pipeline around it (upload, Lua transitions, Celery's message, heartbeats, the long-poll).
CLIENTS clients submit and long-poll (`?wait=30`) for SECONDS after a warm-up. Measured:
- jobs/s; CPU ms per finished job of the API (gunicorn tree), Redis and the worker (celery
  tree), from /proc (psutil) over the measured window;
- Redis commands per job (INFO commandstats, after CONFIG RESETSTAT) and the top ones; network
  bytes per job (INFO stats) and the memory one finished job keeps (MEMORY USAGE of its keys);
- the goals' own measures: the API's CPU per submit alone (submit-only phases of SECONDS/2,
  keep-alive, then a new connection per submit),
  and the worker's outside the model (its figure less the CPU the same engine spends on the
  same clip in this process, measured once the stack is gone).
Prints a table against the issue's goals and writes bench/control.json. Loopback only.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.assets import ensure_assets  # noqa: E402
from scripts.bench import VENV_BIN, Processes, base_env, get_json  # noqa: E402
from tests.harness import free_port  # noqa: E402

GOALS_MS = {"api": 3.0, "redis": 0.3, "worker": 5.0}
"""The issue's goals: CPU ms per job (API per submit, worker outside the model)."""
OUT = ROOT / "bench" / "control.json"


def silence(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), dtype=np.float32), rate, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def start_stack(procs: Processes, logs: Path) -> tuple[str, redis.Redis, dict[str, str]]:
    """redis-server, the API and one worker; returns the API's base URL, a Redis client and
    the environment they run with."""
    assets = ensure_assets(ROOT / "models")
    url, api_port = procs.start_redis(logs), free_port()
    client = redis.Redis.from_url(url)
    env = base_env()
    env.update(REDIS_URL=url, API_HOST="127.0.0.1", API_PORT=str(api_port), API_KEYS="",
               RATE_LIMIT="", ASR_MODEL=str(assets["asr"]), ASR_VAD_MODEL=str(assets["vad"]),
               ASR_PUNC_MODEL="", ASR_USE_GPU="false", ASR_THREADS="1", WORKER_COUNT="1",
               LOG_DIR=str(logs / "logs"))
    base = procs.start_api(env, api_port, logs)

    def worker_ready() -> bool:
        return get_json(f"{base}/api/v1/health", 5).get("status") == "ok"

    procs.start("worker", [str(VENV_BIN / "celery"), "-A", "celery_app", "worker",
                           "--disable-prefetch", "-n", "control@%h", "--without-mingle",
                           "--without-gossip", "--loglevel=WARNING"],
                ready=worker_ready, ignoring=(requests.RequestException, ValueError),
                timeout=300, log_path=logs / "worker.out", env=env)
    return base, client, env


def drive(base: str, clients: int, seconds: float, clip: bytes, wait: bool = True,
          keep_alive: bool = True) -> list[str]:
    """CLIENTS threads submit and long-poll (`wait`) for SECONDS; the finished job ids (the
    submitted ones without `wait`). Without `keep_alive` each submit opens a new connection,
    as clients without a pool do (each request is then a new greenlet in the API)."""
    done: list[str] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as session:
            if not keep_alive:
                session.headers["Connection"] = "close"
            while time.monotonic() < stop:
                r = session.post(f"{base}/api/v1/asr/submit", timeout=30,
                                 files={"audio": ("silence.wav", clip, "audio/wav")})
                r.raise_for_status()
                task_id = r.json()["task_id"]
                while wait:
                    body = session.get(f"{base}/api/v1/asr/result/{task_id}",
                                       params={"wait": 30}, timeout=60).json()
                    if body["status"] not in ("queued", "processing"):
                        assert body["status"] == "succeeded", body
                        break
                done.append(task_id)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


def submit_only(base: str, procs: Processes, clients: int, seconds: float,
                clip: bytes, keep_alive: bool = True) -> float:
    """CPU ms of the API per submit alone (the goal's measure): submits only, for SECONDS
    (the worker takes the jobs as usual; the API tree is what is measured)."""
    before = procs.cpu_seconds()["api"]
    submitted = drive(base, clients, seconds, clip, wait=False, keep_alive=keep_alive)
    return 1000 * (procs.cpu_seconds()["api"] - before) / len(submitted)


def drained(client: redis.Redis, timeout: float = 120) -> None:
    """Until no job is queued or running (the submit-only phase leaves a backlog)."""
    from asr_service.jobs import Status
    from asr_service.keys import Keys

    keys, deadline = Keys(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.zcard(keys.status(s)) for s in (Status.QUEUED, Status.PROCESSING)):
            return
        time.sleep(0.5)
    raise RuntimeError("the backlog of the submit-only phase did not drain")


def engine_ms(env: dict[str, str], clip: bytes, runs: int = 200) -> float:
    """CPU ms the engine alone spends on the clip, in this process with the worker's settings:
    the model's share of the worker's figure (what is left is the pipeline around it)."""
    from asr_service.audio import decode
    from asr_service.engine import build_engine
    from asr_service.engine.base import TranscribeOptions
    from asr_service.settings import Settings

    logging.getLogger().setLevel(logging.WARNING)  # FunASR logs each empty decode at INFO
    settings = Settings.from_env(env)
    engine = build_engine(settings)
    samples = decode(clip, settings.max_audio_seconds)
    for _ in range(10):
        engine.transcribe(samples, TranscribeOptions())
    started = time.process_time()
    for _ in range(runs):
        engine.transcribe(samples, TranscribeOptions())
    return 1000 * (time.process_time() - started) / runs


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def job_bytes(client: redis.Redis, job_id: str) -> int:
    """Memory the keys of one finished job hold (record, result, recording, indexes aside)."""
    total = 0
    for key in client.scan_iter(match=f"*{job_id}*", count=1000):
        total += client.memory_usage(key) or 0
    return total


def measure(base: str, client: redis.Redis, procs: Processes, clients: int,
            seconds: float) -> dict[str, Any]:
    clip = silence()
    drive(base, clients, 3, clip)  # warm-up: connections, numba, the first jobs
    client.config_resetstat()
    net_before = client.info("stats")
    cpu_before = procs.cpu_seconds()
    started = time.monotonic()
    done = drive(base, clients, seconds, clip)
    wall = time.monotonic() - started
    cpu_after = procs.cpu_seconds()
    net_after = client.info("stats")
    calls = command_calls(client)
    jobs = len(done)
    per_job = {name: 1000 * (cpu_after[name] - cpu_before[name]) / jobs
               for name in ("api", "redis", "worker")}
    net = sum(net_after[k] - net_before[k]
              for k in ("total_net_input_bytes", "total_net_output_bytes"))
    top = sorted(calls.items(), key=lambda kv: -kv[1])
    kept = job_bytes(client, done[-1])  # before more jobs prune its recording
    drained(client)
    submit_ms = submit_only(base, procs, clients, seconds / 2, clip)
    drained(client)
    fresh_ms = submit_only(base, procs, clients, seconds / 2, clip, keep_alive=False)
    drained(client)
    return {"jobs": jobs, "seconds": round(wall, 1), "jobs_per_s": round(jobs / wall, 1),
            "clients": clients, "cpu_ms_per_job": {k: round(v, 2) for k, v in per_job.items()},
            "api_ms_per_submit": round(submit_ms, 2),
            "api_ms_per_submit_new_connection": round(fresh_ms, 2),
            "redis_commands_per_job": round(sum(calls.values()) / jobs, 1),
            "commands_per_job": {k: round(v / jobs, 2) for k, v in top},
            "redis_net_bytes_per_job": round(net / jobs),
            "redis_bytes_kept_per_finished_job": kept,
            "redis_core_jobs_per_s": round(1000 / per_job["redis"]) if per_job["redis"] else None}


def print_table(r: dict[str, Any], label: str) -> None:
    print(f"\nbench-control ({label}): {r['jobs']} jobs in {r['seconds']} s = "
          f"{r['jobs_per_s']} jobs/s, {r['clients']} clients, 0.5 s silence through the real "
          "VAD, one worker process")
    per_job, engine = r["cpu_ms_per_job"], r["engine_ms_per_job"]
    rows = [("api", "a job: submit + long-poll", per_job["api"], None),
            ("api", "a submit alone", r["api_ms_per_submit"], GOALS_MS["api"]),
            ("api", "  on a new connection each", r["api_ms_per_submit_new_connection"], None),
            ("redis", "a job", per_job["redis"], GOALS_MS["redis"]),
            ("worker", "a job", per_job["worker"], None),
            ("worker", "  of it the engine (VAD + model)", engine, None),
            ("worker", "a job outside the model", per_job["worker"] - engine,
             GOALS_MS["worker"])]
    print(f"{'process':<8} {'CPU ms for':<34} {'ms':>7} {'goal':>6}")
    for name, what, ms, goal in rows:
        mark = "" if goal is None or ms <= goal else "  GOAL MISSED"
        print(f"{name:<8} {what:<34} {ms:>7.2f} {'' if goal is None else goal:>6}{mark}")
    print(f"Redis: {r['redis_commands_per_job']} commands/job, "
          f"{r['redis_net_bytes_per_job']} network bytes/job, "
          f"{r['redis_bytes_kept_per_finished_job']} bytes kept per finished job; one Redis "
          f"core carries ~{r['redis_core_jobs_per_s']} jobs/s at this cost")
    print("top commands per job: " + ", ".join(
        f"{k} {v}" for k, v in list(r["commands_per_job"].items())[:16]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--label", default="now")
    args = p.parse_args(argv)
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
            base, client, env = start_stack(procs, Path(tmp))
            result = measure(base, client, procs, args.clients, args.seconds)
    finally:
        procs.stop_all()
    result["engine_ms_per_job"] = round(engine_ms(env, silence()), 2)  # with the stack gone
    print_table(result, args.label)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({**result, "label": args.label}, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
