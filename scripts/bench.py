"""Throughput, side by side: the bare FunASR engine, the service end to end, and funasr-server.

`make bench` runs it (issue 11, part 1): loopback only, its own redis-server, API and worker, a
few minutes at most. On the same spoken clips (espeak-ng, made now) it measures
  (a) AutoModel.generate called directly, one clip after another (RTF, audio-s/s), with VAD as
      the service loads it and, for the peer's sake, without VAD;
  (b) the service (gunicorn API + one Celery worker host) with c long-polling clients;
  (c) funasr-server from the installed funasr (`python -m funasr.bin.server --model-path`) with c
      synchronous clients, or "n/a" and why;
  (d) /health latency during (b) and (c), probed every 0.1 s;
  (e) (b) again with a batching worker (ASR_BATCH_WAIT_MS: its jobs share engine calls), and
      its ratio to the unbatched worker at each c.
Prints a table, writes bench-<model>.json and bench-<model>.png under --out (run/bench).
Every process it starts is stopped at the end, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import free_port, stop_tree, wait_ready  # noqa: E402

VENV_BIN = Path(sys.executable).parent
RATE = 16_000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please send the quarterly report to the finance team by Friday afternoon.",
    "It is going to rain tomorrow, so remember to bring an umbrella to work.",
    "The meeting has been moved to three o'clock in the large conference room.",
    "She sells sea shells by the sea shore every morning in the summer.",
    "Our new service transcribes speech without any connection to the internet.",
    "A train leaves the central station every twenty minutes during the week.",
    "Turn left at the second traffic light and the museum is on your right.",
]
LONG_CLIPS = 2  # the eight sentences concatenated (~30 s), in order and reversed
GAP_S = 0.4  # silence between concatenated sentences
LONG_S = 29  # a long clip ends with the first sentence that takes it past this
MODELS = {"tiny": "tiny-paraformer", "big": "paraformer-large-dims"}
HEALTH_EVERY_S = 0.1
JOB_TIMEOUT_S = 600  # one request (submit + result, or the peer's answer) at most


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    seconds: float
    data: bytes


# --- clips -------------------------------------------------------------------------------------


def make_clips(folder: Path, count: int) -> list[Clip]:
    """`count` clips: the sentences spoken by espeak-ng, then their ~30 s concatenations."""
    espeak = shutil.which("espeak-ng")
    if not espeak:
        raise SystemExit("espeak-ng is not installed (make bench installs it)")
    spoken = []
    for i, sentence in enumerate(SENTENCES[: min(count, len(SENTENCES))]):
        raw = folder / f"raw{i}.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(raw), sentence],
                       check=True, stdout=subprocess.DEVNULL)
        samples, rate = sf.read(raw, dtype="float32", always_2d=True)
        spoken.append(_resample(samples.mean(axis=1), rate))
    clips = [_write(folder, f"s{i}", x) for i, x in enumerate(spoken)]
    gap = np.zeros(int(GAP_S * RATE), dtype=np.float32)
    for j in range(max(0, min(count - len(SENTENCES), LONG_CLIPS))):
        parts: list[np.ndarray] = []
        for x in spoken if j % 2 == 0 else spoken[::-1]:  # in order, then reversed
            if sum(len(p) for p in parts) >= LONG_S * RATE:
                break
            parts += [_trim(x), gap]
        clips.append(_write(folder, f"long{j}", np.concatenate(parts)))
    return clips


def _trim(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Without espeak-ng's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0] : loud[-1] + 1] if loud.size else x


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return x.astype(np.float32)
    try:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(RATE, rate)
        return resample_poly(x, RATE // g, rate // g).astype(np.float32)
    except ImportError:
        t = np.arange(int(len(x) * RATE / rate)) / RATE
        return np.interp(t, np.arange(len(x)) / rate, x).astype(np.float32)


def _write(folder: Path, name: str, x: np.ndarray) -> Clip:
    path = folder / f"{name}.wav"
    sf.write(path, np.clip(x, -1, 1), RATE, subtype="PCM_16")  # 16 kHz mono 16-bit
    return Clip(name, path, len(x) / RATE, path.read_bytes())


# --- processes ---------------------------------------------------------------------------------


class Processes:
    """Everything this run started, stopped in reverse order (children of each included)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], *, ready: Callable[[], object], timeout: float,
              log_path: Path, env: dict[str, str], ignoring: Any = ()) -> None:
        """Start argv (output to log_path); return once ready() holds, fail if it exits."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append((name, proc))  # before it is ready: an interrupt while it loads too
        wait_ready(proc, ready, timeout, log_path, interval=0.2, ignoring=ignoring)

    def start_redis(self, logs: Path) -> str:
        """A redis-server of this run on a free loopback port, without persistence; its URL
        once it answers."""
        import redis

        binary = shutil.which("redis-server")
        if not binary:
            raise SystemExit("redis-server is not installed (make redis-server installs it)")
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        self.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(logs)],
                   ready=redis.Redis.from_url(url).ping, ignoring=redis.ConnectionError,
                   timeout=15, log_path=logs / "redis-server.out", env=base_env())
        return url

    def start_api(self, env: dict[str, str], api_port: int, logs: Path) -> str:
        """The API under gunicorn as `make api` runs it, with no key; its base URL once /health
        answers."""
        env.pop("FLOWER_BASIC_AUTH", None)
        base = f"http://127.0.0.1:{api_port}"
        self.start("api", [str(VENV_BIN / "gunicorn"), "-c", "config/gunicorn.conf.py",
                           "wsgi:app"],
                   ready=lambda: get_json(f"{base}/api/v1/health", 2),
                   ignoring=requests.RequestException, timeout=60, log_path=logs / "api.out",
                   env=env)
        return base

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each process tree, and by this one."""
        import psutil

        def used(process: psutil.Process) -> float:
            try:
                t = process.cpu_times()
                return t.user + t.system
            except psutil.Error:
                return 0.0

        host = psutil.cpu_times()
        totals = {"host": host.user + host.system + host.nice + getattr(host, "irq", 0.0)
                  + getattr(host, "softirq", 0.0), "bench clients": used(psutil.Process())}
        for name, proc in self.procs:
            try:
                main = psutil.Process(proc.pid)
                tree = [main, *main.children(recursive=True)]
            except psutil.Error:
                continue
            totals[name] = sum(used(p) for p in tree)
        return totals

    def stop_all(self) -> None:
        while self.procs:
            stop_tree(self.procs.pop()[1], timeout=20)


def base_env() -> dict[str, str]:
    """This environment minus the service's own variables; hub clients told to stay offline."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ASR_", "REDIS_", "API_", "WORKER_", "RATE_LIMIT"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MODELSCOPE_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    return env


def get_json(url: str, timeout: float = 5) -> Any:
    r = requests.get(url, timeout=timeout)
    r.raise_for_status()
    return r.json()


# --- measuring ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q / 100 * len(ordered))) - 1))]


def load_level(concurrency: int, seconds: float, clips: list[Clip],
               request: Callable[[requests.Session, Clip], tuple[bool, float | None]],
               health_url: str, cpu: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """`concurrency` closed-loop clients for `seconds`, and a /health probe every 0.1 s.

    Clients start no request after `seconds`; the wall time runs until the last one ended.
    """
    lock = threading.Lock()
    jobs: list[dict[str, Any]] = []
    errors: list[str] = []
    health: list[float] = []
    health_failures = [0]
    counter = [0]
    done = threading.Event()
    cpu_before = cpu()
    start = time.monotonic()
    stop_at = start + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                with lock:
                    clip = clips[counter[0] % len(clips)]
                    counter[0] += 1
                t0 = time.monotonic()
                try:
                    ok, processing = request(session, clip)
                except Exception as exc:  # counted as a failed job, the first few kept
                    ok, processing = False, None
                    with lock:
                        if len(errors) < 5:
                            errors.append(f"{type(exc).__name__}: {exc}"[:300])
                with lock:
                    jobs.append({"clip": clip.name, "audio_s": clip.seconds, "ok": ok,
                                 "latency_s": time.monotonic() - t0, "processing_s": processing})

    def probe() -> None:
        with requests.Session() as session:
            tick = time.monotonic()
            while not done.is_set():
                t0 = time.monotonic()
                try:
                    session.get(health_url, timeout=30).raise_for_status()
                except requests.RequestException:
                    health_failures[0] += 1
                health.append(time.monotonic() - t0)
                tick += HEALTH_EVERY_S
                done.wait(max(0.0, tick - time.monotonic()))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    clients = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    wall = time.monotonic() - start
    cpu_after = cpu()
    done.set()
    prober.join(timeout=35)
    ok = [j for j in jobs if j["ok"]]
    latencies = [j["latency_s"] for j in ok]
    processing = [j["processing_s"] for j in ok if j["processing_s"] is not None]
    audio = sum(j["audio_s"] for j in ok)
    return {
        "concurrency": concurrency, "jobs": len(ok), "failed": len(jobs) - len(ok),
        "errors": errors, "wall_s": round(wall, 3), "audio_s": round(audio, 3),
        "audio_s_per_s": round(audio / wall, 3) if wall else 0.0,
        "latency_p50_s": pct(latencies, 50), "latency_p95_s": pct(latencies, 95),
        "processing_p50_s": pct(processing, 50),
        "health_probes": len(health), "health_failures": health_failures[0],
        "health_p50_ms": _ms(pct(health, 50)), "health_p99_ms": _ms(pct(health, 99)),
        "cpu_cores": cpu_cores(cpu_before, cpu_after, wall),
    }


def cpu_cores(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU cores each process tree kept busy, and everything else on this (shared) host."""
    cores = {name: (after[name] - before.get(name, 0.0)) / wall for name in after}
    host = cores.pop("host")
    cores["other processes"] = max(0.0, host - sum(cores.values()))
    return {name: round(value, 2) for name, value in cores.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --- (a) the bare engine -----------------------------------------------------------------------


def engine_child(spec_path: str) -> int:
    """In its own process: load AutoModel as the worker does, time generate() on each clip."""
    spec = json.loads(Path(spec_path).read_text())
    import torch
    from funasr import AutoModel

    threads = spec["threads"]
    torch.set_num_threads(threads)
    clips = [(c["name"], sf.read(c["path"], dtype="float32")[0], c["seconds"])
             for c in spec["clips"]]
    out = {}
    for label, vad in (("engine", spec["vad"]), ("engine_novad", None)):
        t_load = time.monotonic()
        model = AutoModel(model=spec["asr"], vad_model=vad, device=spec["device"], ncpu=threads,
                          disable_update=True, disable_pbar=True, disable_log=True)
        load_s = time.monotonic() - t_load
        # The worker's own generate() options (FunASREngine._generate_kwargs).
        kwargs: dict[str, Any] = {"batch_size_s": 300}
        if vad:
            kwargs["sentence_timestamp"] = True
        model.generate(input=clips[0][1], **kwargs)  # warm-up, as the worker does at start
        calls = []
        started = time.monotonic()
        rounds = 0
        # Each clip once, and again while that took under 5 s (at most 5 rounds): steadier.
        while rounds == 0 or (time.monotonic() - started < 5 and rounds < 5):
            for name, samples, seconds in clips:
                t0 = time.perf_counter()
                result = model.generate(input=samples, **kwargs)
                calls.append({"clip": name, "audio_s": seconds,
                              "processing_s": time.perf_counter() - t0,
                              "words": len(str((result or [{}])[0].get("text", "")).split())})
            rounds += 1
        processing = sum(c["processing_s"] for c in calls)
        audio = sum(c["audio_s"] for c in calls)
        latencies = [c["processing_s"] for c in calls]
        out[label] = {
            "vad": bool(vad), "load_s": round(load_s, 2), "rounds": rounds, "jobs": len(calls),
            "audio_s": round(audio, 3), "processing_s": round(processing, 4),
            "rtf": round(processing / audio, 5), "audio_s_per_s": round(audio / processing, 3),
            "latency_p50_s": pct(latencies, 50), "latency_p95_s": pct(latencies, 95),
            "words_per_call": round(statistics.mean(c["words"] for c in calls), 1),
        }
        del model
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


def bench_engine(args: argparse.Namespace, asr: Path, vad: Path, clips: list[Clip], threads: int,
                 work: Path, logs: Path) -> dict[str, Any]:
    spec = {"asr": str(asr), "vad": str(vad), "device": args.device, "threads": threads,
            "clips": [{"name": c.name, "path": str(c.path), "seconds": c.seconds} for c in clips],
            "out": str(work / "engine.json")}
    (work / "engine-spec.json").write_text(json.dumps(spec))
    log = logs / "engine.out"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--engine-child",
                                 str(work / "engine-spec.json")], cwd=ROOT,
                                env=base_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=1800)
        except BaseException:
            stop_tree(proc)
            raise
    if rc != 0:
        raise RuntimeError(f"the bare-engine run failed ({rc}):\n{log.read_text()[-3000:]}")
    return json.loads((work / "engine.json").read_text())


# --- (b) the service ---------------------------------------------------------------------------


def bench_service(args: argparse.Namespace, asr: Path, vad: Path, clips: list[Clip],
                  threads: int, logs: Path, procs: Processes,
                  batch_wait_ms: int = 0) -> list[dict[str, Any]]:
    """The service at each level; with batch_wait_ms, its worker batches (one engine process,
    args.batch_jobs job threads) instead of running WORKER_COUNT prefork processes."""
    system = "service batched" if batch_wait_ms else "service"
    logs = logs / ("batched" if batch_wait_ms else "unbatched")
    logs.mkdir()

    redis_url, api_port = procs.start_redis(logs), free_port()
    env = base_env()
    env.update(REDIS_URL=redis_url, API_HOST="127.0.0.1", API_PORT=str(api_port),
               ASR_ENGINE="funasr", ASR_MODEL=str(asr),
               ASR_VAD_MODEL="" if args.no_vad else str(vad),
               ASR_PUNC_MODEL="", ASR_THREADS=str(threads), WORKER_COUNT=str(args.workers),
               ASR_USE_GPU="true" if args.device == "cuda" else "false",
               LOG_DIR=str(logs / "logs"), API_KEYS="", RATE_LIMIT="",
               ASR_BATCH_WAIT_MS=str(batch_wait_ms), ASR_BATCH_JOBS=str(args.batch_jobs),
               ASR_ENGINE_NICE=str(args.engine_nice))
    base = procs.start_api(env, api_port, logs)
    print(f"  {system}: API on {base}, loading the model in the worker ...", flush=True)
    engines = 1 if batch_wait_ms else args.workers

    def workers_ready() -> bool:
        health = get_json(f"{base}/api/v1/health", 5)
        status = get_json(f"{base}/api/v1/asr/queue/status", 5)
        ready = sum(w.get("engines_ready", 0) for w in status.get("workers", []))
        return health.get("status") == "ok" and ready >= engines

    # The pool comes from the settings: prefork, or a batching worker's job threads.
    procs.start("worker", [str(VENV_BIN / "celery"), "-A", "celery_app", "worker",
                 "-n", "bench@%h", "--loglevel=INFO"],
                ready=workers_ready, ignoring=(requests.RequestException, ValueError),
                timeout=900, log_path=logs / "worker.out", env=env)

    def request(session: requests.Session, clip: Clip) -> tuple[bool, float | None]:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        r = session.post(f"{base}/api/v1/asr/submit", timeout=60,
                         files={"audio": (f"{clip.name}.wav", clip.data, "audio/wav")})
        r.raise_for_status()
        task_id = r.json()["task_id"]
        while time.monotonic() < deadline:
            r = session.get(f"{base}/api/v1/asr/result/{task_id}", params={"wait": 30},
                            timeout=60)
            r.raise_for_status()
            body = r.json()
            if body["status"] not in ("queued", "processing"):
                return body["status"] == "succeeded", body.get("processing_s")
        raise TimeoutError(f"task {task_id} unfinished after {JOB_TIMEOUT_S} s")

    return run_levels(system, args, clips, request, f"{base}/api/v1/health", procs)


def run_levels(system: str, args: argparse.Namespace, clips: list[Clip],
               request: Callable[[requests.Session, Clip], tuple[bool, float | None]],
               health_url: str, procs: Processes) -> list[dict[str, Any]]:
    with requests.Session() as session:  # warm-up, not measured: the first clip, twice
        for _ in range(2):
            if not request(session, clips[0])[0]:
                raise RuntimeError(f"{system}: the warm-up request did not succeed")
    levels = []
    for c in args.concurrency:
        level = load_level(c, args.seconds, clips, request, health_url, procs.cpu_seconds)
        cores = ", ".join(f"{k} {v:.2f}" for k, v in level["cpu_cores"].items())
        print(f"  {system} c={c}: {level['jobs']} jobs, {level['audio_s_per_s']:.2f} audio-s/s, "
              f"health p99 {level['health_p99_ms']} ms; CPU cores used: {cores}"
              + (f", {level['failed']} failed: {level['errors'][:1]}" if level["failed"] else ""),
              flush=True)
        levels.append(level)
    return levels


# --- (c) funasr-server -------------------------------------------------------------------------


def peer_missing() -> str | None:
    """Why funasr-server cannot start here, if it cannot."""
    probe = subprocess.run([sys.executable, "-c", "import fastapi, uvicorn, multipart"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return ("funasr-server needs fastapi, uvicorn and python-multipart, not installed in "
                f"this venv (make bench installs them): {probe.stderr.strip().splitlines()[-1]}")
    return None


def bench_peer(args: argparse.Namespace, asr: Path, clips: list[Clip], logs: Path,
               procs: Processes) -> list[dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # --model-path loads that directory as the "custom" model (AutoModel, hub ms: a local
    # directory is read, nothing downloaded); it has no VAD option. Requests must name
    # model=custom: the default, fun-asr-nano, would fetch Fun-ASR-Nano from the hub.
    procs.start("funasr-server",
                [sys.executable, "-m", "funasr.bin.server", "--model-path", str(asr),
                 "--device", args.device, "--host", "127.0.0.1", "--port", str(port)],
                ready=lambda: "custom" in get_json(f"{base}/health", 2)["models_loaded"],
                ignoring=(requests.RequestException, KeyError), timeout=300,
                log_path=logs / "funasr-server.out", env=base_env())

    def request(session: requests.Session, clip: Clip) -> tuple[bool, float | None]:
        r = session.post(f"{base}/v1/audio/transcriptions", data={"model": "custom"},
                         files={"file": (f"{clip.name}.wav", clip.data, "audio/wav")},
                         timeout=JOB_TIMEOUT_S)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        return "text" in r.json(), None

    return run_levels("funasr-server", args, clips, request, f"{base}/health", procs)


# --- report ------------------------------------------------------------------------------------


def build_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    engine = result[result["meta"]["reference"]]["audio_s_per_s"]
    rows = []
    for key, name in (("engine", "engine+vad"), ("engine_novad", "engine (no vad)")):
        e = result[key]
        rows.append({"system": name, "c": 1, "jobs": e["jobs"], "failed": 0,
                     "audio_s_per_s": e["audio_s_per_s"], "x_engine": e["audio_s_per_s"] / engine,
                     "svc_peer": None, "lat_p50": e["latency_p50_s"],
                     "lat_p95": e["latency_p95_s"], "proc_p50": e["latency_p50_s"],
                     "health_p50": None, "health_p99": None})
    peer_by_c = {lv["concurrency"]: lv for lv in result["peer"].get("levels", [])}
    unbatched_by_c = {lv["concurrency"]: lv for lv in result["service"]["levels"]}
    for system, levels in (("service", result["service"]["levels"]),
                           ("service batched", result["batched"].get("levels", [])),
                           ("funasr-server", result["peer"].get("levels", []))):
        ours = system != "funasr-server"
        for lv in levels:
            peer = peer_by_c.get(lv["concurrency"])
            ratio = (lv["audio_s_per_s"] / peer["audio_s_per_s"]
                     if ours and peer and peer["audio_s_per_s"] else None)
            lv["ratio_engine"] = round(lv["audio_s_per_s"] / engine, 4)
            if ours:
                lv["ratio_peer"] = None if ratio is None else round(ratio, 4)
            if system == "service batched" and (unbatched := unbatched_by_c.get(
                    lv["concurrency"])) and unbatched["audio_s_per_s"]:
                lv["ratio_unbatched"] = round(lv["audio_s_per_s"] / unbatched["audio_s_per_s"], 4)
            rows.append({"system": system, "c": lv["concurrency"], "jobs": lv["jobs"],
                         "failed": lv["failed"], "audio_s_per_s": lv["audio_s_per_s"],
                         "x_engine": lv["audio_s_per_s"] / engine, "svc_peer": ratio,
                         "lat_p50": lv["latency_p50_s"], "lat_p95": lv["latency_p95_s"],
                         "proc_p50": lv["processing_p50_s"], "health_p50": lv["health_p50_ms"],
                         "health_p99": lv["health_p99_ms"]})
    return rows


def print_table(result: dict[str, Any]) -> None:
    meta = result["meta"]
    print(f"\nmodel {meta['model']} ({meta['model_dir']}), device {meta['device']}, "
          f"{meta['threads']} threads per engine on {meta['cores']} cores, {meta['seconds']} s "
          f"per level, {len(meta['clips'])} clips ({meta['clip_audio_s']:.1f} s of audio)")
    head = (f"{'system':<16}{'c':>3}{'jobs':>6}{'fail':>5}{'audio-s/s':>11}{'x engine':>10}"
            f"{'svc/peer':>10}{'lat p50':>9}{'lat p95':>9}{'proc p50':>10}"
            f"{'health p50':>12}{'health p99':>12}")
    print(head)
    print("-" * len(head))

    def num(v: float | None, fmt: str, unit: str = "", scale: float = 1) -> str:
        return "-" if v is None else format(v * scale, fmt) + unit

    for r in result["rows"]:
        print(f"{r['system']:<16}{r['c']:>3}{r['jobs']:>6}{r['failed']:>5}"
              f"{r['audio_s_per_s']:>11.2f}{num(r['x_engine'], '.2f', 'x'):>10}"
              f"{num(r['svc_peer'], '.2f', 'x'):>10}"
              f"{num(r['lat_p50'], '.0f', 'ms', 1000):>9}"
              f"{num(r['lat_p95'], '.0f', 'ms', 1000):>9}"
              f"{num(r['proc_p50'], '.0f', 'ms', 1000):>10}"
              f"{num(r['health_p50'], '.1f', 'ms'):>12}{num(r['health_p99'], '.1f', 'ms'):>12}")
    if result["peer"]["status"] != "measured":
        print(f"{'funasr-server':<16}  n/a: {result['peer']['reason']}")
    if result["batched"]["status"] != "measured":
        print(f"{'service batched':<16}  n/a: {result['batched']['reason']}")
    else:
        print(f"service batched (ASR_BATCH_WAIT_MS={result['batched']['wait_ms']}, "
              f"ASR_BATCH_JOBS={result['batched']['jobs']}) over service (unbatched): "
              + ", ".join(f"c={lv['concurrency']} {lv['ratio_unbatched']:.2f}x"
                          for lv in result["batched"]["levels"] if "ratio_unbatched" in lv))
    print(f"service VAD: {'off (--no-vad)' if meta['no_vad'] else 'on'}. x engine: audio-s/s "
          f"over the bare engine's ({meta['reference']}, one call at a time, same threads); "
          "svc/peer: service over funasr-server at the same c. lat: request to transcript; "
          "proc: the worker's processing_s (engine: one generate call).")
    if result["peer"]["status"] == "measured":
        print(f"funasr-server: {result['peer']['note']}")
    print(f"CPU cores used per level (of {meta['cores']}; 'other processes': not this benchmark, "
          "a shared host's noise):")
    for name, levels in (("service", result["service"]["levels"]),
                         ("service batched", result["batched"].get("levels", [])),
                         ("funasr-server", result["peer"].get("levels", []))):
        for lv in levels:
            cores = ", ".join(f"{k} {v:.2f}" for k, v in lv["cpu_cores"].items())
            print(f"  {name} c={lv['concurrency']}: {cores}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    systems = [("service", result["service"]["levels"], "tab:blue"),
               ("service batched", result["batched"].get("levels", []), "tab:green"),
               ("funasr-server", result["peer"].get("levels", []), "tab:orange")]
    for name, levels, color in systems:
        if not levels:
            continue
        cs = [lv["concurrency"] for lv in levels]
        ax1.plot(cs, [lv["audio_s_per_s"] for lv in levels], "o-", color=color, label=name)
        ax2.plot(cs, [lv["health_p99_ms"] or 0 for lv in levels], "o-", color=color,
                 label=f"{name} p99")
        ax2.plot(cs, [lv["health_p50_ms"] or 0 for lv in levels], "o--", color=color,
                 alpha=0.6, label=f"{name} p50")
    ax1.axhline(result["engine"]["audio_s_per_s"], color="gray", ls=":",
                label="bare engine + VAD (c=1)")
    ax1.axhline(result["engine_novad"]["audio_s_per_s"], color="gray", ls="--", alpha=0.6,
                label="bare engine, no VAD (c=1)")
    ax1.set(xlabel="concurrent clients", ylabel="audio seconds per second", xscale="log",
            title=f"Throughput ({result['meta']['model']}, {result['meta']['device']})")
    ax2.set(xlabel="concurrent clients", ylabel="ms", xscale="log", yscale="log",
            title="/health latency under load")
    for ax in (ax1, ax2):
        cs = result["meta"]["concurrency"]
        ax.set_xticks(cs, [str(c) for c in cs])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="tiny",
                   help="tiny (models/tiny-paraformer) or big (models/paraformer-large-dims, "
                        "`make models BIG=1`)")
    p.add_argument("--concurrency", default="1,4,8,16", help="client counts (default 1,4,8,16)")
    p.add_argument("--seconds", type=float, default=20, help="seconds of load per level")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--skip-peer", action="store_true", help="do not run funasr-server")
    p.add_argument("--no-vad", action="store_true",
                   help="the service without VAD, as funasr-server runs (ratios then against "
                        "the bare engine without VAD)")
    p.add_argument("--clips", type=int, default=len(SENTENCES) + LONG_CLIPS,
                   help="first N of the 8 sentences and 2 ~30 s concatenations (default 10)")
    p.add_argument("--workers", type=int, default=1, help="WORKER_COUNT of the worker host")
    p.add_argument("--batch-wait-ms", type=int, default=20,
                   help="ASR_BATCH_WAIT_MS of the batching run (default 20; 0 skips it)")
    p.add_argument("--batch-jobs", type=int, default=16,
                   help="ASR_BATCH_JOBS of the batching run (default 16)")
    p.add_argument("--engine-nice", type=int, default=10,
                   help="the service's ASR_ENGINE_NICE (default 10, its own default)")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--out", type=Path, default=ROOT / "run" / "bench")
    p.add_argument("--engine-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.engine_child:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
        if not args.concurrency or min(args.concurrency) < 1 or not 1 <= args.clips <= 10:
            p.error("--concurrency takes counts >= 1, --clips 1 to 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.engine_child:
        return engine_child(args.engine_child)
    started = time.monotonic()
    asr, vad = args.models_dir / MODELS[args.model], args.models_dir / "fsmn-vad"
    for path, how in ((asr, "make models" + (" BIG=1" if args.model == "big" else "")),
                      (vad, "make models")):
        if not path.is_dir():
            raise SystemExit(f"{path} is missing: run `{how}`")
    threads = int(os.environ.get("ASR_THREADS") or 0) or max(1, (os.cpu_count() or 1)
                                                             // args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="asr-bench-"))  # the clips
    logs = args.out / f"logs-{args.model}"  # each process's output, kept for a look afterwards
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    try:
        clips = make_clips(work, args.clips)
        print(f"{len(clips)} clips, {sum(c.seconds for c in clips):.1f} s of audio "
              f"({', '.join(f'{c.seconds:.1f}' for c in clips)} s); {threads} threads per engine",
              flush=True)
        print("(a) bare engine ...", flush=True)
        engine = bench_engine(args, asr, vad, clips, threads, work, logs)
        for key in ("engine", "engine_novad"):
            e = engine[key]
            print(f"  {key}: RTF {e['rtf']:.4f}, {e['audio_s_per_s']:.1f} audio-s/s over "
                  f"{e['jobs']} calls", flush=True)
        print("(b) service ...", flush=True)
        service = bench_service(args, asr, vad, clips, threads, logs, procs)
        procs.stop_all()
        batched: dict[str, Any] = {"status": "n/a", "reason": "--batch-wait-ms 0"}
        if args.batch_wait_ms:
            print("(e) service, batching worker ...", flush=True)
            batched = {"status": "measured", "wait_ms": args.batch_wait_ms,
                       "jobs": args.batch_jobs,
                       "levels": bench_service(args, asr, vad, clips, threads, logs, procs,
                                               batch_wait_ms=args.batch_wait_ms)}
            procs.stop_all()
        peer: dict[str, Any]
        if args.skip_peer:
            peer = {"status": "n/a", "reason": "--skip-peer"}
        elif reason := peer_missing():
            peer = {"status": "n/a", "reason": reason}
        else:
            print("(c) funasr-server ...", flush=True)
            try:
                peer = {"status": "measured", "levels": bench_peer(args, asr, clips, logs,
                                                                   procs),
                        "note": "ASR only (its --model-path takes no VAD model), model loaded by "
                                "AutoModel with FunASR's default ncpu=4 threads (no option), "
                                "inference inside its async handlers"}
            except (AssertionError, RuntimeError, requests.RequestException) as exc:
                peer = {"status": "n/a",
                        "reason": f"funasr-server did not run: {str(exc).strip()[-800:]}"}
            procs.stop_all()
        result = {
            "meta": {
                "model": args.model, "model_dir": str(asr), "vad_dir": str(vad),
                "no_vad": args.no_vad, "reference": "engine_novad" if args.no_vad else "engine",
                "device": args.device, "threads": threads, "cores": os.cpu_count(),
                "workers": args.workers, "seconds": args.seconds,
                "concurrency": args.concurrency,
                "clips": [{"name": c.name, "seconds": round(c.seconds, 3)} for c in clips],
                "clip_audio_s": sum(c.seconds for c in clips),
                "host": platform.node(), "python": platform.python_version(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "engine": engine["engine"], "engine_novad": engine["engine_novad"],
            "service": {"levels": service}, "peer": peer,
            "batched": batched,
        }
        result["rows"] = build_rows(result)
        result["meta"]["total_s"] = round(time.monotonic() - started, 1)
        json_path = args.out / f"bench-{args.model}.json"
        png_path = args.out / f"bench-{args.model}.png"
        json_path.write_text(json.dumps(result, indent=2))
        plot(result, png_path)
        print_table(result)
        print(f"\nwrote {json_path} and {png_path}; total {result['meta']['total_s']:.0f} s")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def _interrupt(*_: object) -> None:
    """SIGTERM ends the run like Ctrl-C: through main's finally, which stops everything."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
