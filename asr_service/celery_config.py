"""Celery's configuration for long GPU jobs and the app factory: pure config, imported by the
API (to send tasks), Flower and the worker alike; the worker's runtime lives in worker.py."""

from __future__ import annotations

from typing import Any

from celery import Celery

from asr_service import redis_conn
from asr_service.settings import Settings


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


def create_celery(settings: Settings) -> Celery:
    """The Celery app the API sends tasks with; worker.create_worker adds the worker's runtime
    to it."""
    app = Celery("asr_service", include=["asr_service.tasks"])
    app.conf.update(celery_config(settings))
    return app
