"""The Flask application factory."""

from __future__ import annotations

import logging

import swagger_ui_bundle
from flask import Flask, Response, send_from_directory

from asr_service import redis_conn
from asr_service.api import Services, access, inflight
from asr_service.api import dashboard as dashboard_api
from asr_service.api import jobs as jobs_api
from asr_service.api import live as live_api
from asr_service.api import metrics as metrics_api
from asr_service.api import openai as openai_api
from asr_service.api import system as system_api
from asr_service.api.problems import Api, register_error_handlers
from asr_service.celery_config import create_celery
from asr_service.cluster import Cluster
from asr_service.dispatch import Dispatcher
from asr_service.events import log_event_line
from asr_service.figures import Figures
from asr_service.jobs import JobStore
from asr_service.keys import Keys
from asr_service.lifecycle import Lifecycle
from asr_service.logs import setup_logging
from asr_service.readmodel import ReadModel
from asr_service.service import JobService
from asr_service.settings import Settings
from asr_service.waiters import Waiters

SWAGGER_ASSETS = "/docs/assets/"
REDIS_POOL_SIZE = 50  # Redis connections per API process


def create_app(settings: Settings | None = None, keys: Keys | None = None) -> Flask:
    """Build the API app; nothing here connects to Redis until a request needs it. Every
    Redis key it touches is named by `keys` (default: the "asr:" prefix)."""
    settings = settings or Settings.from_env()
    keys = keys or Keys()
    setup_logging("api", settings)
    logging.getLogger(__name__).info("api starting", extra={
        "redis": settings.redis_url_display, "queue": settings.queue_name,
        "api_keys": len(settings.api_key_set), "rate_limit": settings.rate_limit or None,
        "max_upload_mb": settings.max_upload_mb})
    app = Flask(__name__)
    app.config.update(
        API_TITLE="asr_service",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Served by us from the swagger-ui-bundle wheel: no CDN needed, works offline.
        OPENAPI_SWAGGER_UI_URL=SWAGGER_ASSETS,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        # Werkzeug answers 400 to any other Host: a DNS-rebinding page cannot reach a
        # key-less loopback API through the victim's browser.
        TRUSTED_HOSTS=settings.allowed_hosts,
    )
    # A blocking pool: under gevent, hundreds of requests (a thousand long-polls woken at once)
    # wait their turn for one of REDIS_POOL_SIZE connections; redis-py's default pool instead
    # fails the 101st concurrent request with "Too many connections" (measured: 353 of 1000).
    client = redis_conn.client(settings, pool_size=REDIS_POOL_SIZE, pool_timeout=5,
                               socket_timeout=2, socket_connect_timeout=2)
    store = JobStore(client, settings.max_recordings, keys)
    lifecycle = Lifecycle(client, settings.result_retention_s, settings.max_recordings,
                          keys=keys, listeners=[log_event_line],
                          max_stored_bytes=settings.max_stored_audio_bytes,
                          min_replicas=settings.redis_min_replicas,
                          max_active=settings.max_queued_jobs,
                          max_active_per_owner=settings.max_queued_jobs_per_key)
    celery = create_celery(settings)
    # The long-poll subscription gets its own connection: it blocks, and it pings to notice a
    # dead link instead of waiting forever on it.
    waiters = Waiters(lambda: redis_conn.client(
        settings, socket_timeout=10, socket_connect_timeout=2, socket_keepalive=True,
        health_check_interval=15), keys.job_finished)
    cluster = Cluster(client, settings.queue_name, keys)
    jobs = JobService(settings, store, lifecycle, Dispatcher(celery), waiters, cluster)
    figures = Figures(client, keys)
    app.extensions["asr"] = Services(
        settings=settings,
        store=store,
        jobs=jobs,
        cluster=cluster,
        figures=figures,
        celery=celery,
        readmodel=ReadModel(settings, store, cluster, figures, jobs),
    )
    access.init_app(app, settings)
    inflight.init_app(app, settings.max_inflight_upload_bytes, settings.max_upload_bytes)
    api = Api(app)
    register_error_handlers(app)
    api.register_blueprint(jobs_api.blp)
    api.register_blueprint(system_api.blp)
    api.register_blueprint(dashboard_api.blp)
    api.register_blueprint(openai_api.blp)
    app.register_blueprint(dashboard_api.page)
    metrics_api.init_app(app)
    live_api.init_app(app)
    app.add_url_rule(f"{SWAGGER_ASSETS}<path:name>", "swagger_assets",
                     lambda name: send_from_directory(swagger_ui_bundle.swagger_ui_path, name))
    app.after_request(_no_sniffing)
    return app


def _no_sniffing(response: Response) -> Response:
    # Every answer, errors and ?format=txt|srt|vtt included: a browser that sniffed a transcript
    # (text the speaker chose) could run it as HTML or script.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
