"""The webhook deliverer: `python -m asr_service.webhooks`, a small process that holds no model.

The lifecycle queues a delivery in the same atomic step that ends a job with a callback_url
(lua/common.lua: queue_webhook). This process claims due deliveries (a lease: one that dies
mid-POST leaves them due again, so delivery is at-least-once and any number of deliverers can
run), POSTs a Standard Webhooks-signed JSON event through the SSRF guard, and records the
outcome: delivered, retried after WEBHOOK_RETRY_BASE_S x 2^(attempt-1) (+-10% jitter), or
failed after WEBHOOK_MAX_ATTEMPTS. Every retry sends the same body and webhook-id, signed anew
with the attempt's timestamp (receivers refuse stale ones).

Fairness: at most PER_DESTINATION POSTs to one scheme://host:port are in flight at once (over
all deliverers); the others of that destination wait in its line without using an attempt, so
a receiver that never answers holds two slots, not all of them. A POST (name lookup included)
always ends before its claim's lease does, so no second deliverer sends it meanwhile.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from standardwebhooks.webhooks import Webhook

from asr_service import redis_conn, urlguard
from asr_service.errors import UrlRefused
from asr_service.formats import iso_time
from asr_service.keys import Keys, lua_builders
from asr_service.logs import setup_logging
from asr_service.settings import Settings

log = logging.getLogger("asr_service.webhooks")  # not __main__ under -m
CONCURRENCY = 16  # deliveries at once: a slow receiver does not hold up the others
PER_DESTINATION = 2  # of them to one scheme://host:port: one blackhole cannot take them all
LEASE_MARGIN_S = 30.0  # a claim's lease: WEBHOOK_TIMEOUT_S plus this
LEASE_GUARD_S = 1.0  # a POST ends at least this long before its lease (to record its outcome)
OVERDUE_S = 300.0  # a due delivery nobody claimed for this long: is a deliverer running?
IDLE_S = 0.25  # the wait when nothing is due
REDIS_RETRY_S = 1.0  # never exits: honcho would stop the whole stack


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    state: str  # delivered | pending (retry later) | failed
    attempts: int
    last_error: str  # '' when delivered
    next_at: float = 0.0


@dataclass(frozen=True)
class Claim:
    """A leased delivery: its id, its destination and when (monotonic) its lease runs out."""

    webhook_id: str
    destination: str
    lease_end: float


def overdue_s(client: redis.Redis, keys: Keys, now: float) -> float:
    """How long the oldest due delivery has waited unclaimed (0 when none): O(1)."""
    oldest = client.zrange(keys.webhooks_due, 0, 0, withscores=True)
    return max(now - oldest[0][1], 0.0) if oldest else 0.0


def retry_delay(settings: Settings, attempts: int, rng: Callable[[], float] = random.random,
                ) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling, +-10% jitter."""
    return settings.webhook_retry_base_s * 2 ** (attempts - 1) * (0.9 + 0.2 * rng())


def event_body(delivery: dict[str, str], settings: Settings, transcript: str | None) -> str:
    """The JSON event of a delivery: type, timestamp and data (task, status, error, links)."""
    data = json.loads(delivery["data"])
    task_id = data["task_id"]
    base = settings.public_url.rstrip("/")
    result_url = f"{base}/api/v1/asr/result/{task_id}"
    body = {"type": delivery["type"], "timestamp": iso_time(float(delivery["created_at"])),
            "data": {"task_id": task_id, "status": data["status"], "error": data.get("error"),
                     "created_at": iso_time(data.get("created_at")),
                     "finished_at": iso_time(data.get("finished_at")),
                     "duration_s": data.get("duration_s"),
                     "links": {"result": result_url, "srt": f"{result_url}?format=srt",
                               "vtt": f"{result_url}?format=vtt",
                               "audio": f"{base}/api/v1/asr/audio/{task_id}"}}}
    if transcript is not None:
        body["data"]["result"] = json.loads(transcript)
    return json.dumps(body, separators=(",", ":"))


def signed_headers(secret: str, webhook_id: str, body: str, now: float) -> dict[str, str]:
    """Standard Webhooks headers for one attempt."""
    when = datetime.fromtimestamp(int(now), UTC)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(now)),
            "webhook-signature": Webhook(secret).sign(webhook_id, when, body),
            "content-type": "application/json"}


class Deliverer:
    """Claims due webhook deliveries and POSTs them, CONCURRENCY at a time."""

    def __init__(self, client: redis.Redis, settings: Settings, keys: Keys | None = None,
                 now: Callable[[], float] = time.time, lease_s: float | None = None) -> None:
        self.redis = client
        self.settings = settings
        self.keys = keys or Keys()
        self.now = now
        # Longer than any one POST may take (urlguard enforces webhook_timeout_s as a deadline).
        self.lease_s = settings.webhook_timeout_s + LEASE_MARGIN_S if lease_s is None else lease_s
        # Only the key builders: scripts.prelude() would bring figures' numpy into this process.
        own = (Path(__file__).with_name("lua") / "webhook.lua").read_text()
        self._script = client.register_script(lua_builders() + own)
        self._pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._unsettled: list[Callable[[], None]] = []  # what crashed deliveries owe Redis
        self._unanswered: tuple[str, float] | None = None  # a claim Redis may have run

    def _claim(self, limit: int) -> list[Claim]:
        # A claim whose answer never came (the link dropped, perhaps after Redis ran it) is sent
        # again with its token within its lease: Redis answers what it leased the first time,
        # which would otherwise wait out the lease unsent. Past it, they are due again anyway.
        if not self._unanswered or time.monotonic() - self._unanswered[1] >= self.lease_s:
            self._unanswered = (uuid.uuid4().hex, time.monotonic())  # the lease began no earlier
        token, started = self._unanswered
        flat = self._call("claim", token=token, lease_s=self.lease_s, limit=limit,
                          per_destination=PER_DESTINATION)
        self._unanswered = None
        lease_end = started + self.lease_s
        return [Claim(flat[i].decode(), flat[i + 1].decode(), lease_end)
                for i in range(0, len(flat), 2)]

    def _call(self, op: str, **spec: Any) -> Any:
        """webhook.lua's `op`: ARGV prefix, op, JSON spec (with the time now)."""
        return self._script(args=[self.keys.prefix, op,
                                  json.dumps({"now": self.now(), **spec})])

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set; Redis outages are waited out, never fatal."""
        enabled = bool(self.settings.webhook_secret)
        if not enabled:  # the API refuses callback_url then: nothing can be queued
            log.info("webhooks are off (no WEBHOOK_SECRET): submits with callback_url are "
                     "refused; idling")
        inflight: set[Future[None]] = set()
        outage = False
        while not stop.is_set():
            inflight = {f for f in inflight if not f.done()}
            room = CONCURRENCY - len(inflight) if enabled else 0
            try:
                self._settle()
                claims = self._claim(room) if room else []
            except redis.RedisError as exc:
                if not outage:  # one warning per outage, not one a second
                    log.warning("redis unavailable, retrying every second",
                                extra={"error": str(exc)})
                outage = True
                stop.wait(REDIS_RETRY_S)
                continue
            if outage:
                log.info("redis reachable again")
                outage = False
            inflight.update(self._pool.submit(self._deliver_logged, c) for c in claims)
            if not claims:
                stop.wait(IDLE_S)
        self._pool.shutdown(wait=True)  # POSTs under way end within webhook_timeout_s

    def _deliver_logged(self, claim: Claim) -> None:
        posted = None
        try:
            posted = self._deliver(claim)
            if posted is not None:
                self._record(claim, *posted)
        except Exception as exc:  # Redis went away, or refused a write (maxmemory), mid-delivery
            again = isinstance(exc, redis.RedisError)
            if again:
                log.warning("webhook delivery waits for redis",
                            extra={"webhook_id": claim.webhook_id, "error": str(exc)})
            else:
                log.exception("webhook delivery crashed", extra={"webhook_id": claim.webhook_id})
            # Left alone, its slot stays taken until the lease (timeout + 30 s) runs out, and
            # the others of its destination wait behind it: what it owes is settled once Redis
            # takes writes. Before a POST, the delivery is due again a second later (a bug
            # waits out its lease instead); after one, its outcome is recorded.
            with self._lock:
                self._unsettled.append(
                    (lambda: self._record(claim, *posted)) if posted is not None else
                    (lambda: self._release(claim, "webhook claim given back", again=again)))

    def _settle(self) -> None:
        """Run what crashed deliveries owe, oldest first, until Redis refuses one again."""
        with self._lock:
            owed, self._unsettled = self._unsettled, []
        for done, step in enumerate(owed):
            try:
                step()
            except redis.RedisError:
                with self._lock:
                    self._unsettled[:0] = owed[done:]
                raise
            except Exception:  # a bug must not end the loop: its lease brings it back
                log.exception("webhook settle failed")

    def _release(self, claim: Claim, why: str, again: bool = False) -> None:
        """Give a claim's slot back without an attempt (its lease brings it back if due;
        `again`: it is due a second from now)."""
        self._call("release", id=claim.webhook_id, destination=claim.destination,
                   again_at=self.now() + REDIS_RETRY_S if again else None)
        log.info(why, extra={"webhook_id": claim.webhook_id})

    def _deliver(self, claim: Claim) -> tuple[Attempt, str, int | None] | None:
        """POST a claimed delivery: its outcome, job id and HTTP status to record; None when
        nothing was sent (its claim is given back)."""
        webhook_id = claim.webhook_id
        key = self.keys.webhook(webhook_id)
        delivery = {k.decode(): v.decode() for k, v in self.redis.hgetall(key).items()}
        body = None
        if "job_id" not in delivery:
            self.redis.zrem(self.keys.webhooks_due, webhook_id)
        else:  # the body script unqueues it, too, if it expired since
            body = delivery.get("body") or self._freeze_body(webhook_id, delivery)
        if body is None:  # deleted with its job, or expired: nothing to send
            return self._release(claim, "webhook delivery gone")
        # The whole POST, DNS included, ends before the lease: never two deliverers at once.
        budget = min(self.settings.webhook_timeout_s,
                     claim.lease_end - LEASE_GUARD_S - time.monotonic())
        if budget <= 0.1:  # Redis was slow to answer: let the lease lapse, it comes back
            return self._release(claim, "webhook claim too old to send")
        attempts = int(delivery.get("attempts", 0)) + 1
        http_status = None
        try:
            answer = urlguard.post(
                delivery["url"], body.encode(),
                signed_headers(self.settings.webhook_secret, webhook_id, body, self.now()),
                allow_private=self.settings.allow_private_urls, timeout_s=budget)
        except UrlRefused as exc:  # the name now points somewhere private: never retried
            outcome = Attempt("failed", attempts, f"refused: {exc.detail}")
        else:
            http_status, outcome = answer.status, self._judge(answer.error, attempts)
        return outcome, delivery["job_id"], http_status

    def _judge(self, error: str | None, attempts: int) -> Attempt:
        if error is None:
            return Attempt("delivered", attempts, "")
        if attempts >= self.settings.webhook_max_attempts:
            return Attempt("failed", attempts, error)
        return Attempt("pending", attempts, error,
                       self.now() + retry_delay(self.settings, attempts))

    def _freeze_body(self, webhook_id: str, delivery: dict[str, str]) -> str | None:
        """The body every attempt sends: built on the first one, then stored (None: gone)."""
        transcript = None
        if self.settings.webhook_include_result and delivery["type"] == "job.succeeded":
            raw = self.redis.get(self.keys.result(delivery["job_id"]))
            transcript = raw.decode() if raw else None
        body = event_body(delivery, self.settings, transcript)
        stored = self._call("body", id=webhook_id, body=body)
        return None if stored is None else stored.decode()  # the first one's, if two raced

    def _record(self, claim: Claim, attempt: Attempt, job_id: str,
                http_status: int | None) -> None:
        webhook_id = claim.webhook_id
        self._call("done", id=webhook_id, outcome=vars(attempt), destination=claim.destination)
        extra = {"job_id": job_id, "webhook_id": webhook_id, "attempt": attempt.attempts,
                 "status": attempt.state, "http_status": http_status}
        if attempt.state == "delivered":
            log.info("webhook delivered", extra=extra)
            return
        extra["error"] = attempt.last_error
        if attempt.state == "pending":
            extra["next_attempt_in_s"] = round(attempt.next_at - self.now(), 1)
        log.warning("webhook attempt failed" if attempt.state == "pending"
                    else "webhook failed for good", extra=extra)


def main() -> None:
    """Run a deliverer until SIGTERM or SIGINT."""
    settings = Settings.from_env()
    setup_logging("webhooks", settings)
    client = redis_conn.client(settings, socket_timeout=5, socket_connect_timeout=5)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("webhook deliverer starting", extra={"redis": settings.redis_url_display})
    Deliverer(client, settings).run(stop)
    log.info("webhook deliverer stopped")


if __name__ == "__main__":
    main()
