"""Celery app factory, its configuration for long GPU jobs, and every Celery signal handler."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import replace
from functools import cached_property
from typing import Any

import redis
from celery import Celery, current_app, signals
from celery.exceptions import TimeLimitExceeded
from celery.worker import state as worker_state

from asr_service import redis_conn
from asr_service.batching import Batcher, Host
from asr_service.cluster import Cluster, WorkerInfo, gpu_memory_bytes, tree_usage
from asr_service.engine.base import Engine
from asr_service.errors import ModelLoadError
from asr_service.jobs import ErrorType, JobStore, Status
from asr_service.lifecycle import Lifecycle, Runner, log_event_line
from asr_service.logs import setup_logging
from asr_service.runs import RunnerBeat
from asr_service.service import Dispatcher
from asr_service.settings import Settings
from asr_service.stranded import StrandedSweep, publish_held, withdraw_held
from asr_service.sweep import Sweep, Sweeper

log = logging.getLogger(__name__)


class AsrCelery(Celery):
    """The Celery app, carrying the settings and the per-process resources built from them."""

    settings: Settings
    engine: Engine | None = None
    device: str = "unknown"
    node: str = ""
    """Random token of the worker's main process (set before the fork, children inherit it)."""
    beat: RunnerBeat | None = None
    """This child process's runner token and heartbeat (set after the fork)."""
    sweeper: Sweeper | None = None
    """The main process's sweep thread (started once the worker is ready)."""

    @cached_property
    def redis_client(self) -> redis.Redis:
        """Job-store connection; redis-py resets its pool after a fork (one per child)."""
        return redis_conn.client(self.settings, socket_timeout=5, socket_connect_timeout=3,
                                 health_check_interval=30)

    @cached_property
    def store(self) -> JobStore:
        """Reads of the shared job store."""
        return JobStore(self.redis_client, self.settings.max_recordings)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        """The one writer of job status."""
        s = self.settings
        return Lifecycle(self.redis_client, s.result_retention_s, s.max_recordings,
                         listeners=[log_event_line], max_stored_bytes=s.max_stored_audio_bytes,
                         min_replicas=s.redis_min_replicas)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Sends jobs to their queue (the sweeps re-send what was lost)."""
        return Dispatcher(self)

    @property
    def runner(self) -> Runner:
        """This worker process as the runner of its jobs."""
        assert self.beat is not None, "runner used outside a worker child process"
        return self.beat.runner

    @cached_property
    def cluster(self) -> Cluster:
        """Queue depth and worker heartbeats."""
        return Cluster(self.redis_client, self.settings.queue_name)


def celery_config(s: Settings) -> dict[str, Any]:
    """Celery settings for long, expensive jobs that must not be lost."""
    urls = redis_conn.celery_urls(s)
    return {
        "broker_url": urls["broker_url"],
        "result_backend": urls["result_backend"],
        "result_backend_transport_options": urls["result_backend_transport_options"],
        "task_default_queue": s.queue_name,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A job is acknowledged only when it finished; a worker that dies hands it back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_extended": True,
        "result_expires": s.result_retention_s,
        "task_time_limit": s.task_time_limit_s,
        "task_soft_time_limit": s.soft_time_limit_s,
        # Bound a leaking process; each replacement reloads the model.
        "worker_max_tasks_per_child": s.worker_max_tasks_per_child or None,
        "worker_max_memory_per_child": s.worker_max_memory_mb * 1024 or None,
        # worker_process_init loads the model; Celery kills a child that takes longer than this.
        "worker_proc_alive_timeout": s.model_load_timeout_s,
        "worker_concurrency": s.worker_count,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        # A full Redis refuses kombu's writes (ZADD unacked, SADD at queue_declare) with a
        # ResponseError, a "channel" error: retried like a lost connection instead of ending
        # the worker. A message popped, then refused, is gone from the broker; its job stays
        # queued and the stranded-job sweep sends it again once memory is back.
        "broker_channel_error_retry": True,
        # An unacked message is redelivered after this: it must outlast a job that waited in a
        # worker's prefetch slot behind another one that ran to the hard limit.
        "broker_transport_options": {
            "visibility_timeout": 2 * s.task_time_limit_s + 300,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            **urls["broker_transport_options"],
        },
        "redis_socket_timeout": 5,
        "redis_socket_connect_timeout": 3,
        "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1,
        },
        "worker_pool": "prefork",
        **(batching_config(s) if s.batching else {}),
    }


def batching_config(s: Settings) -> dict[str, Any]:
    """A batching worker: ASR_BATCH_JOBS threads share one engine process (batching.py).

    Threads, not prefork children (each child would hold its own model and run one job) nor
    celery-batches (one task for many messages, acked together). Celery cannot time-limit or
    recycle threads; the Batcher applies TASK_TIME_LIMIT_S and WORKER_MAX_MEMORY_MB to the
    engine process instead, replacing it as Celery replaces a prefork child.
    """
    return {
        "worker_pool": "asr_service.batching:JobThreads",
        "worker_concurrency": s.asr_batch_jobs,
        "task_time_limit": None,
        "task_soft_time_limit": None,
        "worker_max_tasks_per_child": None,
        "worker_max_memory_per_child": None,
    }


def create_celery(settings: Settings) -> AsrCelery:
    """The Celery app used by workers, Flower and (to send tasks) the API."""
    app = AsrCelery("asr_service", include=["asr_service.tasks"])
    app.settings = settings
    app.conf.update(celery_config(settings))
    return app


def _app() -> AsrCelery:
    app = current_app._get_current_object()
    assert isinstance(app, AsrCelery), "start workers with: celery -A celery_app worker"
    return app


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    setup_logging("worker", _app().settings)


@signals.worker_init.connect
def _preflight(**_: Any) -> None:
    """Refuse to start (exit 1) before forking when the model or the GPU cannot be had."""
    from asr_service.engine import preflight

    try:
        app = _app()
        app.device = preflight(app.settings)
        app.node = uuid.uuid4().hex
        if app.settings.batching:
            _start_batcher(app)
    except ModelLoadError as exc:
        log.critical("worker refuses to start: %s", exc, extra={"error": str(exc)})
        raise SystemExit(1) from exc  # Celery logs and ignores ordinary handler exceptions


def _start_batcher(app: AsrCelery) -> None:
    """A batching worker loads its engine process before it consumes (no fork follows)."""
    app.beat = RunnerBeat(app.redis_client, app.store).start()
    started = time.perf_counter()

    def ready(host: Host) -> None:  # also each engine process that replaces one
        try:
            app.cluster.engine_loaded(app.node, host.pid, host.device)
        except redis.RedisError as exc:
            log.warning("engine readiness not published: %s", exc)

    app.engine = batcher = Batcher.for_settings(app.settings, on_ready=ready)
    log.info("engine ready", extra={"model": batcher.name, "device": batcher.device,
                                    "load_s": round(time.perf_counter() - started, 3),
                                    "batch_wait_ms": app.settings.asr_batch_wait_ms})


def _batcher() -> Batcher | None:
    """A batching worker's Batcher; None in a prefork worker."""
    engine = _app().engine
    return engine if isinstance(engine, Batcher) else None


@signals.worker_process_init.connect
def _load_engine(**_: Any) -> None:
    """Load and warm up the model once per child process, after the fork."""
    from asr_service.engine import build_engine

    app = _app()
    app.beat = RunnerBeat(app.redis_client, app.store).start()
    started = time.perf_counter()
    try:
        app.engine = build_engine(app.settings)
        app.engine.warm_up()
    except Exception as exc:  # preflight passed, yet loading failed (corrupt weights, OOM, ...)
        log.critical("worker refuses to start: %s", exc, extra={"error": str(exc)})
        os.kill(os.getppid(), signal.SIGTERM)  # take the whole worker down, not just this child
        os._exit(1)
    log.info("engine ready", extra={"model": app.engine.name, "device": app.engine.device,
                                    "load_s": round(time.perf_counter() - started, 3)})
    try:
        app.cluster.engine_loaded(app.node, os.getpid(), app.engine.device)
    except redis.RedisError as exc:
        log.warning("engine readiness not published: %s", exc)


@signals.heartbeat_sent.connect
def _publish_heartbeat(sender: Any, **_: Any) -> None:
    """Every ~2 s from the worker's main process: tell the API this worker is alive and what
    its processes (main + model-holding children) use."""
    app = _app()
    s = app.settings
    cpu, rss, pids = tree_usage(os.getpid()).sample()
    info = WorkerInfo(
        hostname=sender.eventer.hostname, pid=os.getpid(),
        concurrency=int(app.conf.worker_concurrency or s.worker_count),
        active=len(worker_state.active_requests), model=s.model_id, queue=s.queue_name,
        engine=s.asr_engine, device=app.device,
        last_seen=time.time(),
        cpu_percent=cpu, memory_rss_bytes=rss,
        gpu_memory_bytes=gpu_memory_bytes(pids) if app.device.startswith("cuda") else None,
    )
    try:
        info = replace(info, engines_ready=app.cluster.engines_ready(app.node,
                                                                     pids - {os.getpid()}))
        app.cluster.publish(info)
    except redis.RedisError as exc:
        log.warning("heartbeat not published: %s", exc)


@signals.heartbeat_sent.connect
def _publish_held(**_: Any) -> None:
    """Every ~2 s: the messages this worker holds, so the sweep can tell a dead host's."""
    held = {r.id for r in (*worker_state.reserved_requests, *worker_state.scheduled_requests)}
    try:
        publish_held(_app().redis_client, _app().node, sorted(held))
    except redis.RedisError as exc:
        log.warning("held messages not published: %s", exc)


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Retention expiry, orphan recovery and stranded resends, in a thread of the main
    process (never in the consumer loop); one worker of the cluster at a time (sweep.py)."""
    app = _app()
    # One StrandedSweep for the life of the worker: it remembers the broker entries it decoded.
    stranded = StrandedSweep(app.store, app.lifecycle, app.cluster, app.dispatcher.try_send)

    def make(held: Any) -> Sweep:
        return Sweep(app.store, app.lifecycle, stranded, app.dispatcher.try_send, held)

    app.sweeper = Sweeper(app.redis_client, make).start()


@signals.task_prerun.connect
def _job_started(**_: Any) -> None:
    """A batching worker's batch waits for the recordings of jobs it has started."""
    if batcher := _batcher():
        batcher.job_started()


@signals.task_postrun.connect
def _job_ended(**_: Any) -> None:
    if batcher := _batcher():
        batcher.job_ended()


@signals.task_failure.connect
def _record_hard_timeout(task_id: str | None = None, exception: BaseException | None = None,
                         args: Any = None, **_: Any) -> None:
    """A hard time limit kills the process mid-job: record the failure it could not."""
    if not isinstance(exception, TimeLimitExceeded) or not args or task_id is None:
        return
    limit = _app().settings.task_time_limit_s
    detail = (f"killed at the hard time limit of {limit} s (TASK_TIME_LIMIT_S); "
              "the worker process was replaced")
    _app().lifecycle.fail(args[0], task_id, ErrorType.TIME_LIMIT, detail)


@signals.worker_shutdown.connect
def _withdraw(sender: Any, **_: Any) -> None:
    if (sweeper := _app().sweeper) is not None:
        sweeper.stop()
    if batcher := _batcher():
        batcher.close()
        if (beat := _app().beat) is not None:
            beat.stop()
    try:
        _app().cluster.withdraw(sender.hostname)
        withdraw_held(_app().redis_client, _app().node)
    except redis.RedisError:
        pass  # the heartbeat expires on its own


@signals.worker_process_shutdown.connect
def _runner_gone(**_: Any) -> None:
    """A child that exits cleanly says so at once (a killed one's heartbeat just lapses)."""
    beat = _app().beat
    if beat is not None:
        beat.stop()


@signals.task_revoked.connect
def _mark_cancelled(request: Any = None, **_: Any) -> None:
    """A job revoked outside our API (Flower, `celery control revoke`) ends as cancelled."""
    if request is None or not request.args:
        return
    _app().lifecycle.fail(request.args[0], request.id, ErrorType.CANCELLED,
                          "the task was revoked", status=Status.CANCELLED)

