"""Keys(prefix) is honoured everywhere: an API app and the lifecycle under another prefix
write no Redis key outside it (kombu's and Celery's own keys aside), on a real redis-server.

The job waits on a queue no worker consumes; it is claimed and succeeds through the app's own
Lifecycle, as a worker would.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import replace

import redis

from asr_service.app import create_app
from asr_service.broker import PRIORITY_SEP, publish_held, withdraw_held
from asr_service.cluster import Cluster, WorkerInfo
from asr_service.keys import Keys
from asr_service.lifecycle import Runner
from asr_service.stranded import StrandedSweep
from asr_service.sweep import Sweep, Sweeper
from tests import samples

PREFIX = "it-prefix:"
QUEUE = "parked-prefix"  # no worker consumes it
KOMBU_AND_CELERY = ("_kombu.", "unacked", "celery-task-meta-")


def test_an_app_and_the_lifecycle_write_only_under_their_prefix(redis_server, settings):
    url = redis_server.url.replace("/0", "/6")
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    keys = Keys(PREFIX)
    api_key = f"k-{uuid.uuid4().hex[:8]}"
    app = create_app(replace(settings, redis_url=url, queue_name=QUEUE, api_keys=api_key),
                     keys=keys)
    client, services = app.test_client(), app.extensions["asr"]
    headers = {"X-API-Key": api_key}

    submitted = client.post("/api/v1/asr/submit", headers={**headers, "Idempotency-Key": "one"},
                            content_type="multipart/form-data",
                            data={"audio": (io.BytesIO(samples.encode("wav", 1.0)), "a.wav")})
    assert submitted.status_code == 202, submitted.get_json()
    task_id = submitted.get_json()["task_id"]
    assert raw.exists(keys.job(task_id)) and raw.keys(f"{PREFIX}idempotency:*")

    lifecycle, store = services.jobs.lifecycle, services.store
    job = store.get(task_id)
    runner = Runner(uuid.uuid4().hex, 1)
    raw.set(keys.runner(runner.token), "host:1", ex=60)
    assert lifecycle.claim(task_id, job.celery_id, runner, "w1", 3, 30).outcome == "ok"
    assert lifecycle.renew(task_id, runner.token, 30) == "held"
    assert lifecycle.succeed(task_id, job.celery_id, runner.token, {"text": "hi"}, 0.5)

    body = client.get(f"/api/v1/asr/result/{task_id}", headers=headers).get_json()
    assert body["status"] == "succeeded"
    history = client.get("/api/v1/asr/history", headers=headers).get_json()
    assert [item["task_id"] for item in history["items"]] == [task_id]
    assert client.get("/api/v1/stats", headers=headers).status_code == 200
    assert client.get("/api/v1/dashboard", headers=headers).status_code == 200

    # The cluster side: heartbeats, held messages, an engine mark, one sweep under the lock.
    cluster = Cluster(services.cluster.redis, QUEUE, keys)
    cluster.publish(WorkerInfo("w1", 1, 1, 0, "m", "cpu", 0.0))
    raw.set(cluster.engine_mark("node", 2), "cpu", ex=60)
    publish_held(raw, "node", [], keys)
    stranded = StrandedSweep(store, lifecycle, lambda *_: None)
    sweeper = Sweeper(raw, lambda held: Sweep(store, lifecycle, stranded, lambda *_: None, held),
                      lock_name=keys.sweeper)
    assert sweeper.run_once() is not None

    assert client.delete(f"/api/v1/asr/task/{task_id}", headers=headers).status_code == 204
    assert not raw.exists(keys.job(task_id))
    withdraw_held(raw, "node", keys)

    queues = {QUEUE, *(f"{QUEUE}{PRIORITY_SEP}{p}" for p in (3, 6, 9))}
    written = sorted(k.decode() for k in raw.scan_iter(count=1000))
    outside = [k for k in written if not k.startswith(PREFIX)
               and not k.startswith(KOMBU_AND_CELERY) and k not in queues]
    assert written and not outside, outside
    assert any(k.startswith(PREFIX + "figures") for k in written)  # the scripts wrote too
