"""Every connection the service opens to Redis: to REDIS_URL, or to the master that Redis
Sentinel names (REDIS_SENTINELS), so the job store, broker, result backend, rate limiter,
heartbeats and long-poll subscription all follow a failover by themselves.

Under Sentinel, redis-py asks the sentinels for the master's address whenever it opens a
connection, and drops the connections to an old master once a sentinel names a new one; kombu
and Celery's result backend use the same redis-py classes through their `sentinel://`
transport.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from asr_service.settings import Settings

SENTINEL_TIMEOUT_S = 1.0
"""How long a sentinel may take to answer who the master is (then the next one is asked)."""


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel-managed pool whose callers wait for a free connection (as the API's
    BlockingConnectionPool does without Sentinel) instead of failing past max_connections."""


def client(settings: Settings, *, pool_size: int | None = None, pool_timeout: float = 5,
           **options: Any) -> redis.Redis:
    """A client of the current master. `pool_size`: a blocking pool of that many connections
    (waiting up to `pool_timeout` s for one); otherwise redis-py's default pool."""
    if not settings.sentinel_nodes:
        if pool_size is None:
            return redis.Redis.from_url(settings.redis_url, **options)
        return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=pool_size, timeout=pool_timeout, **options))
    sentinel = Sentinel(settings.sentinel_nodes, sentinel_kwargs=_sentinel_kwargs(settings))
    if pool_size is not None:
        options.update(connection_pool_class=BlockingSentinelPool, max_connections=pool_size,
                       timeout=pool_timeout)
    return sentinel.master_for(settings.redis_sentinel_master,
                               password=settings.redis_password or None, **options)


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    return {"password": settings.redis_sentinel_password or None,
            "socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}


def celery_urls(settings: Settings) -> dict[str, Any]:
    """broker_url, result_backend and their transport options for Celery (kombu's and
    Celery's own `sentinel://` support under Sentinel)."""
    if not settings.sentinel_nodes:
        return {"broker_url": settings.redis_url, "result_backend": settings.redis_url,
                "broker_transport_options": {}, "result_backend_transport_options": {}}
    auth = _auth(settings)
    url = ";".join(f"sentinel://{auth}{_netloc(host)}:{port}/0"
                   for host, port in settings.sentinel_nodes)
    options = {"master_name": settings.redis_sentinel_master,
               "sentinel_kwargs": _sentinel_kwargs(settings)}
    return {"broker_url": url, "result_backend": url, "broker_transport_options": options,
            "result_backend_transport_options": dict(options)}


def limiter_storage(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The `limits` storage URI and options for flask-limiter."""
    options: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if not settings.sentinel_nodes:
        # `limits` names a Unix socket redis+unix:// (redis-py: unix://); same path and query.
        url = settings.redis_url
        return ("redis+" + url if url.startswith("unix://") else url), options
    auth = _auth(settings)
    hosts = ",".join(f"{_netloc(host)}:{port}" for host, port in settings.sentinel_nodes)
    # Every check reads and writes the master: a replica's window may lag behind.
    options.update(sentinel_kwargs=_sentinel_kwargs(settings), use_replicas=False)
    return f"redis+sentinel://{auth}{hosts}/{settings.redis_sentinel_master}", options


def _auth(settings: Settings) -> str:
    """The userinfo part of a sentinel URL: the master's password, if any."""
    return f":{quote(settings.redis_password, safe='')}@" if settings.redis_password else ""


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host
