"""Load test: drive a running service on this host with real audio for a bounded time.

`scripts/run_load_test.sh [concurrency] [duration_s]` runs it. Each of `concurrency` clients
submits a WAV recording, waits for its result (polling every --poll-s, or with --wait S one
long-poll request at a time: `?wait=S`), and starts over, until the time is up; then the jobs
still running get a bounded time to finish. Meanwhile a sampler records the CPU and memory
of the API (gunicorn) and worker (celery) processes on this host and the queue depth. Writes a
JSON report and a PNG plot; prints the report.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import math
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import psutil
import requests
import soundfile as sf

MAX_CONCURRENCY = 64
MAX_DURATION_S = 3600
MAX_JOBS = 20_000
POLL_S = 0.25
SAMPLE_S = 1.0


class NotLoopback(ValueError):
    """The target is not on this host: the load test only drives a local service."""


def check_loopback(url: str) -> None:
    """Refuse any URL whose host does not resolve only to loopback addresses."""
    host = urlparse(url).hostname
    if not host:
        raise NotLoopback(f"no host in {url!r}")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise NotLoopback(f"cannot resolve {host!r}: {exc}") from exc
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise NotLoopback(f"{host} is not a loopback address ({', '.join(sorted(addresses))}): "
                          "the load test only drives a service on this host")


def speech_like_wav(seconds: float, rate: int = 16_000, seed: int = 7) -> bytes:
    """Real WAV bytes: bursts of harmonics and noise separated by pauses (like tests/samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.2 * np.sin(2 * np.pi * 360 * t)
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(np.float32)
    samples = ((voiced + 0.05 * rng.standard_normal(len(t))) * envelope).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class Record:
    """One submission as the client saw it."""

    started: float
    submit_s: float | None = None
    status_code: int | None = None
    end_to_end_s: float | None = None
    outcome: str = "pending"  # succeeded / failed / cancelled / error / unfinished


@dataclass
class Run:
    """Shared state of one load run."""

    base: str
    audio: bytes
    api_key: str | None
    stop_submitting: float
    give_up: float
    max_jobs: int
    poll_s: float = POLL_S
    wait_s: float = 0.0  # > 0: long-poll (?wait=) instead of polling
    records: list[Record] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> Record | None:
        """A new record, or None when the time or the job budget is spent."""
        with self.lock:
            if time.time() >= self.stop_submitting or len(self.records) >= self.max_jobs:
                return None
            record = Record(started=time.time())
            self.records.append(record)
            return record


def _session(api_key: str | None) -> requests.Session:
    session = requests.Session()
    if api_key:
        session.headers["X-API-Key"] = api_key
    return session


def client_loop(run: Run) -> None:
    """One client: submit, wait for the result, repeat."""
    session = _session(run.api_key)
    while (record := run.claim()) is not None:
        try:
            response = session.post(f"{run.base}/api/v1/asr/submit", timeout=30,
                                    files={"audio": ("load.wav", run.audio, "audio/wav")})
        except requests.RequestException as exc:
            record.outcome = "error"
            run.errors[f"connection:{type(exc).__name__}"] += 1
            time.sleep(0.5)
            continue
        record.submit_s = time.time() - record.started
        record.status_code = response.status_code
        if response.status_code != 202:
            record.outcome = "error"
            run.errors[str(response.status_code)] += 1
            time.sleep(0.2)  # do not hammer a service that refuses
            continue
        wait_for_result(session, run, record, response.json()["task_id"])


def wait_for_result(session: requests.Session, run: Run, record: Record, task_id: str) -> None:
    """Poll (or long-poll) until the job finished or the run gives up on it."""
    url = f"{run.base}/api/v1/asr/result/{task_id}"
    if run.wait_s:
        url += f"?wait={run.wait_s:g}"
    while time.time() < run.give_up:
        try:
            response = session.get(url, timeout=30 + run.wait_s)
        except requests.RequestException as exc:
            run.errors[f"poll:{type(exc).__name__}"] += 1
            time.sleep(run.poll_s)
            continue
        status = response.json().get("status") if response.ok else None
        if status in ("succeeded", "failed", "cancelled"):
            record.end_to_end_s = time.time() - record.started
            record.outcome = status
            if status != "succeeded":
                run.errors[f"job_{status}"] += 1
            return
        if not response.ok:
            run.errors[f"poll:{response.status_code}"] += 1
        if not run.wait_s or not response.ok:
            time.sleep(run.poll_s)
    record.outcome = "unfinished"


class Sampler(threading.Thread):
    """Samples CPU/memory of the API and worker processes and the queue depth every second."""

    def __init__(self, base: str, stop: threading.Event, api_key: str | None) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.api_key = api_key
        self.stop = stop
        self.port = urlparse(base).port or 80
        self.samples: list[dict[str, Any]] = []
        self._procs: dict[int, psutil.Process] = {}

    def run(self) -> None:
        session = _session(self.api_key)
        while not self.stop.is_set():
            snapshot = self._snapshot(session)
            api = self._usage(self._api_roots())
            workers = self._usage(self._worker_roots(snapshot))
            self.samples.append({"t": time.time(), "queue_depth": snapshot.get("queue_depth"),
                                 "workers_online": snapshot.get("workers_online"),
                                 "api": api, "worker": workers})
            self.stop.wait(SAMPLE_S)

    def _snapshot(self, session: requests.Session) -> dict[str, Any]:
        try:
            return session.get(f"{self.base}/api/v1/dashboard", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}

    def _api_roots(self) -> list[psutil.Process]:
        """The process listening on the target port: the gunicorn master, or a dev server."""
        try:
            pid = next(c.pid for c in psutil.net_connections("tcp") if c.pid
                       and c.status == psutil.CONN_LISTEN and c.laddr.port == self.port)
            proc = psutil.Process(pid)
            # gunicorn workers share the master's listening socket: count from the master.
            # (Same executable only: a shell that started gunicorn is not part of the API.)
            while ((parent := proc.parent()) and parent.exe() == proc.exe()
                   and "gunicorn" in " ".join(parent.cmdline())):
                proc = parent
            return [proc]
        except (StopIteration, psutil.Error):
            return []

    def _worker_roots(self, snapshot: dict[str, Any]) -> list[psutil.Process]:
        """The workers of this service that run on this host, by their heartbeat's pid."""
        here = socket.gethostname()
        roots = []
        for worker in snapshot.get("workers", []):
            if worker["hostname"].rsplit("@", 1)[-1] == here:
                try:
                    roots.append(psutil.Process(worker["pid"]))
                except psutil.Error:
                    continue
        return roots

    def _usage(self, roots: list[psutil.Process]) -> dict[str, Any]:
        cpu, rss, count = 0.0, 0, 0
        for root in roots:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in tree:
                proc = self._procs.setdefault(proc.pid, proc)  # cpu_percent needs the same object
                try:
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    count += 1
                except psutil.Error:
                    continue
        return {"cpu_percent": round(cpu, 1), "rss_mb": round(rss / 2**20, 1), "processes": count}


def pct(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 in seconds."""
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def resource_summary(samples: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """Mean and max CPU, max RSS of one part over the run (first sample is a warm-up: 0 %)."""
    seen = [s[part] for s in samples[1:] if s[part]["processes"]]
    if not seen:
        return {"samples": 0, "cpu_percent_mean": None, "cpu_percent_max": None,
                "rss_mb_max": None, "processes": 0}
    cpu = [s["cpu_percent"] for s in seen]
    return {"samples": len(seen), "cpu_percent_mean": round(sum(cpu) / len(cpu), 1),
            "cpu_percent_max": max(cpu), "rss_mb_max": max(s["rss_mb"] for s in seen),
            "processes": max(s["processes"] for s in seen)}


def report(run: Run, args: argparse.Namespace, started: float, ended: float,
           samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON report."""
    outcomes = Counter(r.outcome for r in run.records)
    accepted = [r for r in run.records if r.status_code == 202]
    done = [r for r in run.records if r.outcome == "succeeded"]
    elapsed = ended - started
    return {
        "target": run.base, "concurrency": args.concurrency, "duration_s": args.duration,
        "audio_seconds_per_job": args.audio_seconds, "elapsed_s": round(elapsed, 2),
        "waiting": (f"long-poll ?wait={args.wait:g}" if args.wait
                    else f"poll every {args.poll_s} s"),
        "jobs_submitted": len(accepted), "jobs_completed": len(done),
        "jobs_failed": outcomes["failed"] + outcomes["cancelled"],
        "jobs_unfinished": outcomes["unfinished"], "requests_rejected": outcomes["error"],
        "errors_by_status": dict(sorted(run.errors.items())),
        "throughput": {
            "jobs_per_s": round(len(done) / elapsed, 3),
            "jobs_per_min": round(60 * len(done) / elapsed, 2),
            "audio_seconds_per_s": round(len(done) * args.audio_seconds / elapsed, 3),
        },
        "submit_latency_s": pct([r.submit_s for r in accepted if r.submit_s is not None]),
        "end_to_end_latency_s": pct([r.end_to_end_s for r in done if r.end_to_end_s is not None]),
        "queue_depth_max": max((s["queue_depth"] or 0 for s in samples), default=None),
        "api_processes": resource_summary(samples, "api"),
        "worker_processes": resource_summary(samples, "worker"),
    }


def plot(run: Run, samples: list[dict[str, Any]], started: float, path: Path) -> None:
    """Latency of each job and queue depth over time, as a PNG."""
    import matplotlib  # only the load test needs it: not part of the API image

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    accepted = [r for r in run.records if r.submit_s is not None and r.status_code == 202]
    top.scatter([r.started - started for r in accepted], [r.submit_s for r in accepted], s=8,
                label="submit latency")
    done = [r for r in run.records if r.end_to_end_s is not None]
    top.scatter([r.started - started for r in done], [r.end_to_end_s for r in done], s=8,
                label="end-to-end latency")
    top.set_ylabel("seconds")
    top.set_title(f"{run.base}: {len(done)} jobs finished")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.plot([s["t"] - started for s in samples], [s["queue_depth"] or 0 for s in samples],
                label="queue depth", color="tab:red")
    bottom.set_ylabel("jobs queued")
    bottom.set_xlabel("seconds since start (by submission time)")
    bottom.grid(alpha=0.3)
    cpu = bottom.twinx()
    cpu.plot([s["t"] - started for s in samples], [s["worker"]["cpu_percent"] for s in samples],
             label="worker CPU %", color="tab:green", alpha=0.6)
    cpu.set_ylabel("worker CPU %")
    lines = bottom.get_lines() + cpu.get_lines()
    bottom.legend(lines, [line.get_label() for line in lines], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the load test; exit 0 when it ran (even with errors), 2 when refused."""
    args = parse_args(argv)
    try:
        check_loopback(args.url)
    except NotLoopback as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    base = args.url.rstrip("/")
    started = time.time()
    drain = args.drain_timeout
    if drain is None:
        drain = min(120, max(30, args.duration))
    api_key = os.environ.get("ASR_API_KEY") or None  # when the service has API_KEYS set
    run = Run(base=base, audio=speech_like_wav(args.audio_seconds), api_key=api_key,
              stop_submitting=started + args.duration, give_up=started + args.duration + drain,
              max_jobs=args.max_jobs, poll_s=args.poll_s, wait_s=args.wait)
    stop = threading.Event()
    sampler = Sampler(base, stop, api_key)
    sampler.start()
    clients = [threading.Thread(target=client_loop, args=(run,), daemon=True)
               for _ in range(args.concurrency)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=max(0.0, run.give_up - time.time()) + 35)
    ended = time.time()
    stop.set()
    sampler.join(timeout=10)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with run.lock:
        result = report(run, args, started, ended, sampler.samples)
        result["report_json"] = str(out / "loadtest-report.json")
        result["plot_png"] = str(out / "loadtest.png")
        plot(run, sampler.samples, started, out / "loadtest.png")
    (out / "loadtest-report.json").write_text(json.dumps(
        {**result, "timeline": sampler.samples}, indent=2))
    print(json.dumps(result, indent=2))
    return 0


def _bounded(low: float, high: float, kind: type = int) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not (low <= value <= high) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (the shell wrapper passes concurrency and duration)."""
    p = argparse.ArgumentParser(prog="run_load_test.sh", description=__doc__.splitlines()[0])
    p.add_argument("concurrency", nargs="?", type=_bounded(1, MAX_CONCURRENCY), default=4)
    p.add_argument("duration", nargs="?", type=_bounded(1, MAX_DURATION_S), default=30,
                   help="seconds during which new jobs are submitted")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service (loopback only)")
    p.add_argument("--audio-seconds", type=_bounded(0.5, 600, float), default=5.0)
    p.add_argument("--max-jobs", type=_bounded(1, MAX_JOBS), default=5000)
    p.add_argument("--drain-timeout", type=_bounded(0, 600, float), default=None,
                   help="seconds the last jobs get to finish (default: duration, 30..120)")
    p.add_argument("--poll-s", type=_bounded(0.005, 10, float), default=POLL_S,
                   help="seconds between polls of a result")
    p.add_argument("--wait", type=_bounded(0, 60, float), default=0,
                   help="long-poll: each result request waits up to this long (0: poll)")
    p.add_argument("--out-dir", default=".", help="where the report and plot go")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
