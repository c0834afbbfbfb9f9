"""The read model's health verdict, from the cluster's heartbeats and the webhook queue."""

from __future__ import annotations

from types import SimpleNamespace

import redis

from asr_service.cluster import WorkerInfo
from asr_service.jobs import Keys
from asr_service.readmodel import ReadModel
from asr_service.settings import Settings
from asr_service.webhooks import OVERDUE_S

NOW = 1_700_000_000.0


class FakeRedis:
    """Answers the one read health makes: the oldest due webhook delivery."""

    def __init__(self, oldest_due: float | None = None, down: bool = False) -> None:
        self.oldest_due, self.down = oldest_due, down

    def zrange(self, *_: object, **__: object) -> list[tuple[bytes, float]]:
        if self.down:
            raise redis.ConnectionError("refused")
        return [] if self.oldest_due is None else [(b"w", self.oldest_due)]


def worker(engines_ready: int) -> WorkerInfo:
    return WorkerInfo(hostname="w1", pid=1, concurrency=1, active=0, model="m", device="cpu",
                      last_seen=NOW, engines_ready=engines_ready)


def read_model(workers: list[WorkerInfo], client: FakeRedis) -> ReadModel:
    store = SimpleNamespace(redis=client, keys=Keys())
    cluster = SimpleNamespace(workers=lambda: workers)
    return ReadModel(Settings(), store, cluster, None, None)  # type: ignore[arg-type]


def test_health_is_ok_with_a_ready_worker_and_no_overdue_webhook() -> None:
    health = read_model([worker(1)], FakeRedis(oldest_due=NOW - 1)).health(NOW)

    assert (health.status, health.redis, health.workers_online, health.reasons) == (
        "ok", True, 1, [])
    assert health.workers_ready


def test_health_is_degraded_while_workers_load_the_model() -> None:
    health = read_model([worker(0), worker(0)], FakeRedis()).health(NOW)

    assert health.status == "degraded" and not health.workers_ready
    assert health.reasons == ["2 worker(s) online, still loading the model; jobs are queued"]


def test_health_is_degraded_without_workers() -> None:
    health = read_model([], FakeRedis()).health(NOW)

    assert health.reasons == ["no worker online (start one with `make worker`); jobs are queued"]


def test_health_names_webhook_deliveries_nobody_claims_but_workers_stay_ready() -> None:
    health = read_model([worker(1)], FakeRedis(oldest_due=NOW - OVERDUE_S - 60)).health(NOW)

    assert health.status == "degraded" and health.workers_ready
    assert health.reasons == [f"webhook deliveries wait unsent for {OVERDUE_S + 60:.0f} s: is "
                              "a deliverer running? (`make webhooks`)"]


def test_health_without_redis_says_so_and_hides_the_driver_text() -> None:
    health = read_model([worker(1)], FakeRedis(down=True)).health(NOW)

    assert (health.redis, health.workers_online, health.reasons) == (
        False, 0, ["redis unreachable"])
