"""The worker's runtime: the per-process state of a Celery worker (engine, runner heartbeat,
Redis, sweeper) and the Celery signal handlers that build and tear it down.

`create_worker(settings)` is the factory `celery_app.py` calls: it builds the Celery app
(celery_config.py, which the API also uses) and connects one WorkerRuntime's handlers to it.
Celery holds receivers by weak reference; they are connected with weak=False, and the app
keeps its runtime (`app.runtime`), which the task reads.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals
from celery.exceptions import TimeLimitExceeded
from celery.worker import state as worker_state

from asr_service import redis_conn
from asr_service.batching import Batcher
from asr_service.broker import publish_held, withdraw_held
from asr_service.celery_config import create_celery
from asr_service.cluster import ENGINE_MARK_TTL_S, Cluster, WorkerInfo
from asr_service.diarize.runner import Diarizer
from asr_service.dispatch import Dispatcher
from asr_service.engine.base import Engine
from asr_service.engine.host import Host
from asr_service.errors import ModelLoadError
from asr_service.events import log_event_line
from asr_service.jobs import ErrorType, JobStore, Status
from asr_service.keys import Keys
from asr_service.lifecycle import Lifecycle, Runner
from asr_service.live.drain import Drain
from asr_service.logs import setup_logging
from asr_service.resources import gpu_memory_bytes, tree_usage
from asr_service.runs import RunnerHeartbeat
from asr_service.settings import Settings
from asr_service.stranded import StrandedSweep
from asr_service.sweep import Sweep, Sweeper

log = logging.getLogger(__name__)


def create_worker(settings: Settings) -> Celery:
    """The Celery app of a worker (and of Flower, where worker signals never fire), with its
    runtime connected to Celery's signals."""
    app = create_celery(settings)
    app.runtime = WorkerRuntime(app, settings).connect()  # type: ignore[attr-defined]
    return app


class WorkerRuntime:
    """What one worker process holds, built by the signal handlers below (its methods)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.engine: Engine | None = None
        self.device = "unknown"
        self.node = ""
        """Random token of the main process (set before the fork, children inherit it)."""
        self.heartbeat: RunnerHeartbeat | None = None
        """This child process's runner token and heartbeat (set after the fork)."""
        self.sweeper: Sweeper | None = None
        """The main process's sweep thread (started once the worker is ready)."""
        self.draining = Drain()  # raised as a shutdown begins: live sessions hand over

    def connect(self) -> WorkerRuntime:
        """Connect the handlers to Celery's signals, strongly referenced."""
        for sig, handler in (
            (signals.setup_logging, self.setup_logging),
            (signals.worker_init, self.preflight),
            (signals.worker_process_init, self.load_engine),
            (signals.heartbeat_sent, self.publish_heartbeat),
            (signals.heartbeat_sent, self.publish_held),
            (signals.worker_ready, self.start_sweeper),
            (signals.task_prerun, self.job_started),
            (signals.task_postrun, self.job_ended),
            (signals.task_failure, self.record_hard_timeout),
            (signals.worker_shutting_down, self.unready),
            (signals.worker_shutdown, self.withdraw),
            (signals.worker_process_shutdown, self.runner_gone),
            (signals.task_revoked, self.mark_cancelled),
        ):
            sig.connect(handler, weak=False)
        return self

    @cached_property
    def redis_client(self) -> redis.Redis:
        """Job-store connection; redis-py resets its pool after a fork (one per child)."""
        return redis_conn.client(self.settings, socket_timeout=5, socket_connect_timeout=3,
                                 health_check_interval=30)

    @cached_property
    def keys(self) -> Keys:
        """The names of every Redis key this worker touches (kombu's queues aside)."""
        return Keys()

    @cached_property
    def store(self) -> JobStore:  # reads of the shared job store
        return JobStore(self.redis_client, self.settings.max_recordings, self.keys)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        """The one writer of job status."""
        s = self.settings
        return Lifecycle(self.redis_client, s.result_retention_s, s.max_recordings,
                         keys=self.keys, listeners=[log_event_line],
                         max_stored_bytes=s.max_stored_audio_bytes,
                         min_replicas=s.redis_min_replicas)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Sends jobs to their queue (the sweeps re-send what was lost)."""
        return Dispatcher(self.app)

    @cached_property
    def cluster(self) -> Cluster:  # queue depth and worker heartbeats
        return Cluster(self.redis_client, self.settings.queue_name, self.keys)

    @cached_property
    def diarizer(self) -> Diarizer:
        """Speaker labels for the jobs that ask; its encoder loads on the first such job (in
        this process, on the engine's device), never for the others."""
        device = self.engine.device if self.engine is not None else "cpu"
        return Diarizer(self.settings.asr_speaker_model, device, self.settings.threads)

    @property
    def runner(self) -> Runner:
        """This worker process as the runner of its jobs."""
        assert self.heartbeat is not None, "runner used outside a worker child process"
        return self.heartbeat.runner

    @property
    def batcher(self) -> Batcher | None:
        """A batching worker's Batcher; None in a prefork worker."""
        return self.engine if isinstance(self.engine, Batcher) else None

    def setup_logging(self, **_: Any) -> None:
        setup_logging("worker", self.settings)

    def preflight(self, **_: Any) -> None:
        """Refuse to start (exit 1) before forking when the model or the GPU cannot be had."""
        from asr_service.engine import preflight

        try:
            self.device = preflight(self.settings)
            self.node = uuid.uuid4().hex
            if self.settings.batching:
                self._start_batcher()
        except ModelLoadError as exc:
            log.critical("worker refuses to start: %s", exc, extra={"error": str(exc)})
            raise SystemExit(1) from exc  # Celery logs and ignores ordinary handler exceptions

    def _start_batcher(self) -> None:
        """A batching worker loads its engine process before it consumes (no fork follows)."""
        self.heartbeat = RunnerHeartbeat(self.redis_client, self.store).start()
        started = time.perf_counter()

        def ready(host: Host) -> None:  # also each engine process that replaces one
            self._engine_loaded(host.pid, host.device)

        self.engine = batcher = Batcher.for_settings(self.settings, on_ready=ready)
        log.info("engine ready", extra={"model": batcher.name, "device": batcher.device,
                                        "load_s": round(time.perf_counter() - started, 3),
                                        "batch_wait_ms": self.settings.asr_batch_wait_ms})

    def load_engine(self, **_: Any) -> None:
        """Load and warm up the model once per child process, after the fork."""
        from asr_service.engine import build_engine, yield_cores
        from asr_service.engine.online import online_model

        yield_cores(self.settings)
        self.heartbeat = RunnerHeartbeat(self.redis_client, self.store).start()
        started = time.perf_counter()
        try:
            self.engine = build_engine(self.settings)
            self.engine.warm_up()
            # Live sessions' streaming model, if configured: loaded now, not mid-session.
            online_model(self.settings, self.engine.device)
        except Exception as exc:  # preflight passed, yet loading failed (weights, OOM, ...)
            log.critical("worker refuses to start: %s", exc, extra={"error": str(exc)})
            os.kill(os.getppid(), signal.SIGTERM)  # take the whole worker down, not the child
            os._exit(1)
        log.info("engine ready", extra={"model": self.engine.name, "device": self.engine.device,
                                        "load_s": round(time.perf_counter() - started, 3)})
        self._engine_loaded(os.getpid(), self.engine.device)

    def _engine_loaded(self, pid: int, device: str) -> None:
        """Publish that this process (or its batching engine process `pid`) holds a loaded
        model, now and at every runner heartbeat: a model that finished loading while Redis
        was full or away must not leave the worker "not ready" for good (found by the soak)."""
        assert self.heartbeat is not None
        self.heartbeat.keep("engine", self.cluster.engine_mark(self.node, pid), device,
                            ENGINE_MARK_TTL_S)
        if self.settings.worker_ready_file:  # Kubernetes' readiness probe: `test -f` on it
            Path(self.settings.worker_ready_file).touch()

    def publish_heartbeat(self, sender: Any, **_: Any) -> None:
        """Every ~2 s from the worker's main process: tell the API this worker is alive and
        what its processes (main + model-holding children) use."""
        s = self.settings
        cpu, rss, pids = tree_usage(os.getpid()).sample()
        info = WorkerInfo(
            hostname=sender.eventer.hostname, pid=os.getpid(),
            concurrency=int(self.app.conf.worker_concurrency or s.worker_count),
            active=len(worker_state.active_requests), model=s.model_id, queue=s.queue_name,
            engine=s.asr_engine, device=self.device,
            last_seen=time.time(),
            cpu_percent=cpu, memory_rss_bytes=rss,
            gpu_memory_bytes=gpu_memory_bytes(pids) if self.device.startswith("cuda") else None,
        )
        try:
            info = replace(info, engines_ready=self.cluster.engines_ready(
                self.node, pids - {os.getpid()}))
            self.cluster.publish(info)
        except redis.RedisError as exc:
            log.warning("heartbeat not published: %s", exc)

    def publish_held(self, **_: Any) -> None:
        """Every ~2 s: the messages this worker holds, so the sweep can tell a dead host's."""
        held = {r.id for r in (*worker_state.reserved_requests,
                               *worker_state.scheduled_requests)}
        try:
            publish_held(self.redis_client, self.node, sorted(held), self.keys)
        except redis.RedisError as exc:
            log.warning("held messages not published: %s", exc)

    def start_sweeper(self, **_: Any) -> None:
        """Retention expiry, orphan recovery and stranded resends, in a thread of the main
        process (never in the consumer loop); one worker of the cluster at a time (sweep.py)."""
        # One StrandedSweep for the life of the worker: it remembers the broker entries it
        # decoded.
        stranded = StrandedSweep(self.store, self.lifecycle, self.dispatcher.try_send)

        def make(held: Any) -> Sweep:
            return Sweep(self.store, self.lifecycle, stranded, self.dispatcher.try_send, held)

        self.sweeper = Sweeper(self.redis_client, make, lock_name=self.keys.sweeper).start()

    def job_started(self, **_: Any) -> None:
        """A batching worker's batch waits for the recordings of jobs it has started."""
        if batcher := self.batcher:
            batcher.job_started()

    def job_ended(self, **_: Any) -> None:
        if batcher := self.batcher:
            batcher.job_ended()

    def record_hard_timeout(self, task_id: str | None = None,
                            exception: BaseException | None = None, args: Any = None,
                            **_: Any) -> None:
        """A hard time limit kills the process mid-job: record the failure it could not."""
        if not isinstance(exception, TimeLimitExceeded) or not args or task_id is None:
            return
        limit = self.settings.task_time_limit_s
        detail = (f"killed at the hard time limit of {limit} s (TASK_TIME_LIMIT_S); "
                  "the worker process was replaced")
        self.lifecycle.fail(args[0], task_id, ErrorType.TIME_LIMIT, detail)

    def unready(self, **_: Any) -> None:
        """As a shutdown (SIGTERM) begins: the readiness probe fails, live sessions move."""
        self.draining.set()
        if self.settings.worker_ready_file:
            Path(self.settings.worker_ready_file).unlink(missing_ok=True)

    def withdraw(self, sender: Any, **_: Any) -> None:
        """The worker shuts down: stop its threads and engine, and say it is gone."""
        self.unready()
        if self.sweeper is not None:
            self.sweeper.stop()
        if batcher := self.batcher:
            batcher.close()
            if self.heartbeat is not None:
                self.heartbeat.stop()
        try:
            self.cluster.withdraw(sender.hostname)
            withdraw_held(self.redis_client, self.node, self.keys)
        except redis.RedisError:
            pass  # the heartbeat expires on its own

    def runner_gone(self, **_: Any) -> None:
        """A child that exits cleanly says so at once (a killed one's heartbeat just lapses)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def mark_cancelled(self, request: Any = None, **_: Any) -> None:
        """A job revoked outside our API (Flower, `celery control revoke`) ends cancelled."""
        if request is None or not request.args:
            return
        self.lifecycle.fail(request.args[0], request.id, ErrorType.CANCELLED,
                            "the task was revoked", status=Status.CANCELLED)
