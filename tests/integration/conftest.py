"""Real processes: a redis-server on a free port and a `celery -A celery_app worker` on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import redis
from flask.testing import FlaskClient

from asr_service import redis_conn
from asr_service.app import create_app
from asr_service.cluster import Cluster
from asr_service.settings import Settings
from tests.harness import (
    eventually,
    free_port,
    log_tail,
    read_jsonl,
    report,  # noqa: F401 (the tests import it from here)
    start_process,
    stop_process,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 180


class RedisServer:
    """A redis-server process owned by the tests, so they can stop and restart it."""

    def __init__(self, workdir: Path, persistent: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again: same port, same directory) and return once it answers a PING."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs it)"
        self.proc = start_process(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.workdir)],
            ready=redis.Redis.from_url(self.url).ping, ignoring=redis.ConnectionError,
            timeout=10, log_path=self.workdir / "redis-server.out",
        )

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, model_assets: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """What both the API under test and the worker subprocess run with."""
    return Settings(
        redis_url=redis_server.url,
        asr_model=str(model_assets["asr"]),
        asr_vad_model=str(model_assets["vad"]),
        asr_speaker_model=str(model_assets["speaker"]),
        asr_use_gpu="false",
        asr_threads=1,
        worker_count=1,
        max_audio_seconds=600,
        log_dir=str(tmp_path_factory.mktemp("logs")),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that make Settings.from_env() return `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "REDIS_"))}
    for name, value in vars(settings).items():
        env[name.upper()] = str(value)
    if not settings.flower_basic_auth:  # Flower reads it too: an empty one means user ''
        del env["FLOWER_BASIC_AUTH"]
    return env


class Worker:
    """A real Celery worker process with the real FunASR engine."""

    def __init__(self, settings: Settings, name: str, options: Sequence[str] = ()) -> None:
        self.settings = settings
        self.name = name
        self.options = list(options)
        """More `celery worker` options, e.g. --disable-prefetch (as deploy/k8s runs it)."""
        self.log_path = Path(settings.log_dir) / f"{name}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        """Start the worker; with `wait`, return once its model is loaded (see wait_ready)."""
        self.proc = start_process(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker",
             # A batching worker's pool and concurrency come from its settings.
             *([] if self.settings.batching else [f"--concurrency={self.settings.worker_count}"]),
             "-n", f"{self.name}@%h", "--without-mingle", "--without-gossip", *self.options],
            ready=lambda: True,  # running is enough here: wait_ready needs its pid
            timeout=WORKER_START_TIMEOUT_S, env=settings_env(self.settings), cwd=ROOT,
            log_path=self.log_path,
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise

    def wait_ready(self) -> None:
        """Until the service sees it ready: a heartbeat saying its model is loaded."""
        assert self.proc is not None
        cluster = Cluster(redis_conn.client(self.settings), self.settings.queue_name)
        pid = self.proc.pid  # this very process, not an earlier worker of the same name
        wait_ready(self.proc, lambda: any(
            w.hostname.startswith(f"{self.name}@") and w.engines_ready and w.pid == pid
            for w in cluster.workers()), WORKER_START_TIMEOUT_S, self.log_path, interval=0.2)

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def kill(self) -> int:
        """SIGKILL the whole worker, main process and children, as a host crash would."""
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        victims = [main, *main.children(recursive=True)]
        for process in victims:
            process.kill()
        self.proc.wait(timeout=10)
        return len(victims)

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


@pytest.fixture(scope="session")
def worker(settings: Settings) -> Iterator[Worker]:
    proc = Worker(settings, "test-worker")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def client(settings: Settings) -> FlaskClient:
    """A test client of the real API app, on the real Redis."""
    return create_app(settings).test_client()


@pytest.fixture
def make_client(settings: Settings) -> Callable[..., FlaskClient]:
    """A client of an API app with some settings changed."""
    return lambda **changes: create_app(replace(settings, **changes)).test_client()


LONG_S = 120.0  # ~1 s of work for the tiny model: long enough to be killed mid-job


class Lane:
    """An API and its own workers on a private queue, with settings changed for one test."""

    def __init__(self, settings: Settings, tmp_path: Path, **changes: object) -> None:
        queue = f"lane-{uuid.uuid4().hex[:6]}"
        self.settings = replace(settings, queue_name=queue, log_dir=str(tmp_path), **changes)
        self.client: FlaskClient = create_app(self.settings).test_client()
        self.workers: list[Worker] = []

    def worker(self, start: bool = True) -> Worker:
        worker = Worker(self.settings, f"{self.settings.queue_name}-{len(self.workers)}")
        self.workers.append(worker)
        if start:
            worker.start()
        return worker

    def job(self, task_id: str) -> dict:
        return self.client.get(f"/api/v1/asr/result/{task_id}").get_json()

    def wait_processing(self, task_id: str, timeout: float = 60) -> dict:
        def started() -> dict | None:
            body = self.job(task_id)
            assert body["status"] in ("queued", "processing"), body
            return body if body["status"] == "processing" else None

        return eventually(started, timeout, interval=0.01, message=f"{task_id} never started")

    def worker_pid(self, task_id: str) -> int:
        store = self.client.application.extensions["asr"].store
        return store.get(task_id).worker_pid

    def events(self) -> list[dict]:
        return read_jsonl(Path(self.settings.log_dir) / "events.jsonl")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def lane(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Lane]]:
    lanes: list[Lane] = []

    def make(**changes: object) -> Lane:
        lanes.append(Lane(settings, tmp_path / f"lane{len(lanes)}", **changes))
        return lanes[-1]

    yield make
    for made in lanes:
        made.stop()


class ApiServer:
    """The real API under gunicorn (config/gunicorn.conf.py: gevent workers) on a free port."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = replace(settings, api_port=free_port(), log_dir=str(log_dir))
        self.url = f"http://127.0.0.1:{self.settings.api_port}"
        self.log_path = log_dir / "gunicorn.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import requests

        self.proc = start_process(
            [Path(sys.executable).parent / "gunicorn", "-c", "config/gunicorn.conf.py",
             "wsgi:app"],
            ready=lambda: requests.get(f"{self.url}/api/v1/health", timeout=1).ok,
            ignoring=(requests.ConnectionError, requests.Timeout), timeout=60,
            env=settings_env(self.settings), cwd=ROOT, log_path=self.log_path)

    def processes(self) -> list[psutil.Process]:
        """gunicorn's master and its workers."""
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


@pytest.fixture(scope="module")
def api_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[ApiServer]:
    """gunicorn serving the session's settings (queue `asr`: the session worker's)."""
    server = ApiServer(settings, tmp_path_factory.mktemp("gunicorn"))
    server.start()
    yield server
    server.stop()
