"""Slow clients vs. health: N uploads trickling at ~1 KB/s while /api/v1/health is timed.

`make bench-slow` runs it: its own redis-server and the real API under gunicorn with
config/gunicorn.conf.py (no worker), loopback only, bounded in time. Prints health latency
p50/p99/max with no slow clients and during the trickle, and how many health probes failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"
SLOW_CLIENTS = int(os.environ.get("SLOW_CLIENTS", "32"))
TRICKLE_S = 20  # each slow upload sends ~1 KB per second for this long (and never finishes)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float) -> None:
    """Poll check() until it is true or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.2)
    raise RuntimeError("not ready in time")


def trickle(port: int, stop: threading.Event) -> None:
    """One multipart upload that sends its body at ~1 KB/s."""
    boundary = "slowslowslow"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
            "filename=\"slow.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
    length = len(head) + 10 * 1024 * 1024  # claims 10 MB: a slow, large upload
    with socket.create_connection(("127.0.0.1", port), timeout=TRICKLE_S + 30) as sock:
        sock.sendall((f"POST /api/v1/asr/submit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {length}\r\n\r\n").encode() + head)
        while not stop.wait(1.0):
            try:
                sock.sendall(b"\0" * 1024)
            except OSError:
                return


def probe_health(base: str, seconds: float) -> dict[str, float]:
    """Sequential health requests for `seconds`; latency figures in ms."""
    latencies, failures = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            ok = requests.get(f"{base}/api/v1/health", timeout=10).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append((time.perf_counter() - started) * 1000)
        failures += not ok
        time.sleep(0.1)
    latencies.sort()
    return {"probes": len(latencies), "failed": failures,
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
            "max_ms": round(latencies[-1], 1)}


def main() -> int:
    """Run the measurement; print and write bench/slow_clients.json."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    redis_port, api_port = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                             stdout=subprocess.DEVNULL)
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "API_PORT": str(api_port), "LOG_DIR": str(tmp / "logs"), "API_HOST": "127.0.0.1"}
    api = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c",
                            "config/gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{api_port}"
    stop = threading.Event()
    try:
        wait_until(lambda: requests.get(f"{base}/api/v1/health", timeout=2).ok, 60)
        quiet = probe_health(base, 5)
        slow = [threading.Thread(target=trickle, args=(api_port, stop), daemon=True)
                for _ in range(SLOW_CLIENTS)]
        for thread in slow:
            thread.start()
        time.sleep(2)  # let every slow upload get its connection in
        loaded = probe_health(base, TRICKLE_S - 4)
    finally:
        stop.set()
        for proc in (api, redis):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"slow_clients": SLOW_CLIENTS, "health_quiet": quiet, "health_during": loaded}
    print(f"{'health':<28}{'probes':>8}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, row in (("no slow clients", quiet),
                      (f"{SLOW_CLIENTS} uploads at 1 KB/s", loaded)):
        print(f"{name:<28}{row['probes']:>8}{row['failed']:>8}{row['p50_ms']:>9}"
              f"{row['p99_ms']:>9}{row['max_ms']:>9}")
    OUT.mkdir(exist_ok=True)
    (OUT / "slow_clients.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
