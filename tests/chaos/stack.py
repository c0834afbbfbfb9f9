"""The stack the soak runs and the nemesis breaks: three network-namespace hosts on one LAN.

Host A runs Redis (AOF, fsync on every write, a password, its LAN address only), two API
processes (gunicorn, API keys required) and the webhook deliverer; hosts B and C each run a
Celery worker with the real engine. This process is a client on the same LAN: the load, and a
receiver that takes the webhooks and serves `audio_url` clips. Every process can be killed,
stopped, restarted; a host can be unplugged and powered off, and comes back as it was.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import redis
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from asr_service.cluster import Cluster
from asr_service.keys import Keys
from asr_service.settings import Settings
from tests import netns
from tests.harness import eventually, free_port, start_process, stop_process, wait_ready
from tests.integration.conftest import ROOT, settings_env

REDIS_PORT = 6379
API_PORTS = (8000, 8001)
WORKER_HOSTS = ("b", "c")
WORKER_START_S = 90
LIVE_MODEL = "tiny-paraformer-live"
LIVE_QUEUE = "asr-live"
KEYS = Keys()


@dataclass
class Proc:
    """One service process on one host, which the nemesis may kill and the stack restarts."""

    stack: Stack
    host: str
    name: str
    argv: list[str]
    ready: Callable[[Proc], object]
    settings: Settings
    timeout: float = 30
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return Path(self.settings.log_dir) / f"{self.name}.out"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid  # ip netns exec, unshare and sh exec it: its pid is the service's

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, wait: bool = True) -> None:
        """Start it; with `wait`, return once it is ready (a worker: its model loaded)."""
        env = settings_env(self.settings)
        env["HOME"] = str(self.stack.base / self.host / "home")
        self.popen = start_process(self.stack.lan.argv(self.host, self.argv),
                                   ready=lambda: True, timeout=10, env=env, cwd=ROOT,
                                   log_path=self.log_path)
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        assert self.popen is not None
        wait_ready(self.popen, lambda: self.ready(self), self.timeout, self.log_path,
                   interval=0.1, ignoring=(redis.RedisError, requests.RequestException))

    def kill_tree(self) -> int:
        """SIGKILL it and every process it started; returns how many died."""
        if not self.running():
            return 0
        try:
            main = psutil.Process(self.pid)
            victims = [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            victims = []
        for victim in victims:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        self.reap()
        return len(victims)

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True) if self.running() else []
        except psutil.NoSuchProcess:
            return []

    def signal(self, signum: int) -> None:
        if self.running():
            self.popen.send_signal(signum)  # type: ignore[union-attr]

    def reap(self, timeout: float = 60) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_tree()

    def stop(self) -> None:
        stop_process(self.popen, timeout=30)


class Receiver(ThreadingHTTPServer):
    """Takes webhooks (recording each arrival) and serves the clips `audio_url` names.

    `delay_s` > 0 makes it a crawl: every webhook POST waits that long before its answer."""

    daemon_threads = True

    def __init__(self, address: str, clips: dict[str, bytes], secret: str) -> None:
        super().__init__((address, free_port()), _Handler)
        self.clips = clips
        self.webhook = Webhook(secret)
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.arrivals: list[dict] = []
        threading.Thread(target=self.serve_forever, daemon=True, name="receiver").start()

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        arrived = time.time()
        try:  # now: a signature's timestamp is only accepted for 5 minutes
            self.server.webhook.verify(body, dict(self.headers.items()))
            verified = True
        except WebhookVerificationError:
            verified = False
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        with self.server.lock:
            self.server.arrivals.append({"t": arrived, "headers": dict(self.headers.items()),
                                         "body": body.decode("utf-8", "replace"),
                                         "verified": verified})
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        clip = self.server.clips.get(self.path.rsplit("/", 1)[-1])
        if clip is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(clip)))
        self.end_headers()
        self.wfile.write(clip)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Stack:
    """The running hosts and processes, and the secrets the clients use."""

    lan: netns.Lan
    base: Path
    settings: Settings
    receiver: Receiver
    api_keys: tuple[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    unplugged: set[str] = field(default_factory=set)

    @property
    def a(self) -> str:
        return self.lan["a"].address

    def api_urls(self) -> list[str]:
        return [f"http://{self.a}:{port}" for port in API_PORTS]

    def redis(self, timeout: float = 5) -> redis.Redis:
        return redis.Redis(host=self.a, port=REDIS_PORT, password=self.settings.redis_password,
                           socket_timeout=timeout, socket_connect_timeout=3)

    def workers(self) -> list[Proc]:
        """The job workers, then the live workers (every worker host runs one of each)."""
        return [self.procs[f"{group}-{h}"] for group in ("worker", "live") for h in WORKER_HOSTS]

    def workers_on(self, host: str) -> list[Proc]:
        return [p for p in self.workers() if p.host == host]

    def on_host(self, host: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.host == host]

    def add(self, host: str, name: str, argv: list[str | Path], ready: Callable[[Proc], object],
            timeout: float = 30, wait: bool = True, **changes: object) -> Proc:
        log_dir = self.base / host / "logs"
        settings = replace(self.settings, log_dir=str(log_dir), **changes)
        proc = Proc(self, host, name, [str(a) for a in argv], ready, settings, timeout)
        self.procs[name] = proc
        proc.start(wait)
        return proc

    def host_down(self, host: str) -> int:
        """Pull the cable and cut the power: every process on the host dies."""
        self.lan.unplug(host)
        self.unplugged.add(host)
        killed = self.lan.kill(host)
        for proc in self.on_host(host):
            proc.reap()
        return killed

    def host_up(self, host: str) -> None:
        """Power back on: cable in, its processes started again (as its init would)."""
        self.plug(host)
        for proc in self.on_host(host):
            if not proc.running():
                proc.start()

    def unplug(self, host: str) -> None:
        self.lan.unplug(host)
        self.unplugged.add(host)

    def plug(self, host: str) -> None:
        self.lan.plug(host)
        self.unplugged.discard(host)

    def heal(self) -> None:
        """Everything back: cables in, every process running, Redis with no memory cap."""
        for host in list(self.unplugged):
            self.plug(host)
        redis_proc = self.procs["redis"]
        if redis_proc.running():
            redis_proc.signal(signal.SIGCONT)
        for proc in self.procs.values():
            if not proc.running():
                proc.start()
        eventually(lambda: self.redis().config_set("maxmemory", 0), 30, interval=0.2,
                   ignoring=redis.RedisError, message="Redis never took its memory cap off")
        self.receiver.delay_s = 0.0

    def close(self) -> None:
        try:
            for host in reversed(self.lan.hosts):
                self.lan.kill(host)
            for proc in self.procs.values():
                proc.reap(10)
        finally:
            self.receiver.shutdown()
            self.receiver.server_close()
            self.lan.close()
            shutil.rmtree(self.base, ignore_errors=True)


def _worker_ready(stack: Stack) -> Callable[[Proc], object]:
    def ready(proc: Proc) -> object:
        cluster = Cluster(stack.redis(), stack.settings.queue_name)
        return any(w.pid == proc.pid and w.engines_ready for w in cluster.workers())
    return ready


def start(models: dict[str, Path], clips: dict[str, bytes], retention_s: int,
          lease_s: int = 2) -> Stack:
    """Bring the three hosts up (about 20 s: two models load at once)."""
    lan = netns.Lan(("a", *WORKER_HOSTS)).up()
    base = Path(tempfile.mkdtemp(prefix="asr-chaos-", dir="/var/tmp"))  # hosts have own /tmp
    try:
        for host in lan.hosts:
            for own in ("home", "logs"):
                (base / host / own).mkdir(parents=True)
        a = lan["a"].address
        password = secrets.token_urlsafe(24)
        keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        settings = Settings(
            redis_url=f"redis://{a}:{REDIS_PORT}/0", redis_password=password,
            asr_model=str(models["asr"]), asr_vad_model=str(models["vad"]), asr_use_gpu="false",
            asr_threads=1, worker_count=1, job_lease_s=lease_s, max_audio_seconds=600,
            result_retention_s=retention_s, api_host=a, api_workers=1, api_keys=",".join(keys),
            allow_private_urls=True, webhook_secret=secret, webhook_timeout_s=3,
            webhook_retry_base_s=0.5, webhook_max_attempts=20, log_dir=str(base / "a" / "logs"))
        receiver = Receiver(lan.gateway, clips, secret)
        stack = Stack(lan, base, settings, receiver, keys)
        conf = base / "a" / "redis.conf"  # the password stays out of `ps`
        conf.write_text(f"bind {a}\nport {REDIS_PORT}\nrequirepass {password}\nsave \"\"\n"
                        "appendonly yes\nappendfsync always\nmaxmemory-policy noeviction\n"
                        f"dir {base / 'a'}\n")
        conf.chmod(0o600)
        stack.add("a", "redis", [shutil.which("redis-server") or "redis-server", conf],
                  ready=lambda _: stack.redis().ping(), timeout=10)
        bin_dir = Path(sys.executable).parent
        for i, port in enumerate(API_PORTS):
            url = f"http://{a}:{port}/api/v1/health"
            stack.add("a", f"api-{i}", [bin_dir / "gunicorn", "-c", "config/gunicorn.conf.py",
                                        "wsgi:app"],
                      ready=lambda _, url=url: requests.get(url, timeout=1).ok, api_port=port)
        stack.add("a", "webhooks", [sys.executable, "-m", "asr_service.webhooks"],
                  ready=lambda _: True)
        # Live sessions get a worker group of their own on each host (LIVE_MODEL: the same
        # weights under another id, so its own queue), as production should run them: a
        # session holds a process while it lasts, and behind the job backlog none is free.
        live_model = base / "models" / LIVE_MODEL
        live_model.parent.mkdir()
        live_model.symlink_to(Path(models["asr"]).resolve())
        for host in WORKER_HOSTS:  # all load their model at once
            for group, changes in (("worker", {}), ("live", {"asr_model": str(live_model),
                                                            "queue_name": LIVE_QUEUE})):
                stack.add(host, f"{group}-{host}",
                          [sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                           "--pool=prefork", "--concurrency=1", "-n", f"{group}@%h",
                           "--without-mingle", "--without-gossip"],
                          ready=_worker_ready(stack), timeout=WORKER_START_S, wait=False,
                          **changes)
        for worker in stack.workers():
            worker.wait_ready()
        return stack
    except BaseException:
        lan.close()
        shutil.rmtree(base, ignore_errors=True)
        raise
