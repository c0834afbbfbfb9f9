"""redis_conn: the URLs and options Celery and the rate limiter get, with and without Sentinel
(that they really follow a failover is tests/integration/test_sentinel.py)."""

from __future__ import annotations

from redis.sentinel import SentinelConnectionPool

from asr_service import redis_conn
from asr_service.settings import Settings

SENTINEL = Settings.from_env({"REDIS_SENTINELS": "s1:26379,[::1]:26380",
                              "REDIS_SENTINEL_MASTER": "mymaster", "REDIS_PASSWORD": "p@ss",
                              "REDIS_SENTINEL_PASSWORD": "spw"})


def test_without_sentinel_everything_uses_redis_url() -> None:
    plain = Settings.from_env({"REDIS_URL": "redis://cache:6390/2"})
    urls = redis_conn.celery_urls(plain)
    assert urls["broker_url"] == urls["result_backend"] == "redis://cache:6390/2"
    assert urls["broker_transport_options"] == urls["result_backend_transport_options"] == {}
    assert redis_conn.limiter_storage(plain)[0] == "redis://cache:6390/2"
    pool = redis_conn.client(plain, pool_size=7).connection_pool
    assert pool.max_connections == 7 and pool.connection_kwargs["host"] == "cache"


def test_celery_gets_one_sentinel_url_per_sentinel_with_the_master_name_and_passwords() -> None:
    urls = redis_conn.celery_urls(SENTINEL)
    assert urls["broker_url"] == urls["result_backend"] == \
        "sentinel://:p%40ss@s1:26379/0;sentinel://:p%40ss@[::1]:26380/0"
    for options in (urls["broker_transport_options"], urls["result_backend_transport_options"]):
        assert options["master_name"] == "mymaster"
        assert options["sentinel_kwargs"]["password"] == "spw"
        assert options["sentinel_kwargs"]["socket_timeout"] == redis_conn.SENTINEL_TIMEOUT_S


def test_the_rate_limiter_asks_the_sentinels_and_never_reads_a_replica() -> None:
    uri, options = redis_conn.limiter_storage(SENTINEL)
    assert uri == "redis+sentinel://:p%40ss@s1:26379,[::1]:26380/mymaster"
    assert options["use_replicas"] is False and options["sentinel_kwargs"]["password"] == "spw"


def test_a_sentinel_client_asks_for_the_master_by_name_with_a_blocking_pool() -> None:
    pool = redis_conn.client(SENTINEL, pool_size=5).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert isinstance(pool, redis_conn.BlockingSentinelPool)
    assert pool.service_name == "mymaster" and pool.is_master
    assert pool.max_connections == 5 and pool.connection_kwargs["password"] == "p@ss"
    plain_pool = redis_conn.client(SENTINEL).connection_pool
    assert type(plain_pool) is SentinelConnectionPool
