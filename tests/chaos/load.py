"""The soak's clients: a mixed load whose every request and answer goes into the history.

Each client thread submits (plain, with an Idempotency-Key it retries on any doubt, with a
callback_url, by audio_url), long-polls its jobs, deletes some queued or running ones, retries
failed ones and calls the OpenAI endpoint, on either API process (the other one when a request
cannot connect). What it does is drawn from its own seeded generator; when is up to the faults.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

ACTIVE = ("queued", "processing")
SUBMIT_TIMEOUT_S = 20
POLL_WAIT_S = 5
KEYED_TRIES = 8  # an Idempotency-Key submit is sent again on every doubt, this many times
RESOLVE_AFTER_S = 3  # a job nobody has read for this long is read before anything new is sent
OPS = (("submit", 30), ("submit_keyed", 20), ("submit_callback", 15), ("submit_url", 8),
       ("poll", 12), ("delete", 5), ("retry", 3), ("openai", 7))


class History:
    """Every request and answer of the soak, in the order they completed (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []

    def add(self, **record: Any) -> dict[str, Any]:
        with self.lock:
            self.records.append(record)
        return record


@dataclass
class Own:
    """A job a client knows it has: what it sent and what it last heard."""

    id: str
    clip: str
    submitted: float
    callback: bool = False
    status: str = "queued"
    read_at: float = 0.0
    deleted: bool = False


@dataclass
class Client:
    """One client thread of the load."""

    name: str
    seed: str
    apis: list[str]
    key: str
    clips: dict[str, bytes]
    audio_url: Callable[[str], str]
    callback_url: str
    history: History
    rng: random.Random = field(init=False)
    jobs: dict[str, Own] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.key}"

    # -- one request, recorded ----------------------------------------------------------------

    def request(self, op: str, method: str, path: str, *, job: str | None = None,
                idem: str | None = None, clip: str | None = None, timeout: float = 15,
                **kwargs: Any) -> requests.Response | None:
        """One request to one API process (the other one after a refused connection)."""
        first = self.rng.randrange(len(self.apis))
        for api in (self.apis[first], self.apis[1 - first]):
            began = time.time()
            try:
                answer = self.session.request(method, api + path, timeout=timeout, **kwargs)
            except requests.RequestException as exc:
                refused = isinstance(exc, requests.ConnectionError) and \
                    not isinstance(exc, requests.ReadTimeout)
                self.history.add(t0=began, t1=time.time(), client=self.name, op=op, api=api,
                                 job=job, key=idem, clip=clip, status=0,
                                 error=type(exc).__name__, sent=not refused)
                if refused:
                    continue  # nothing reached that API: the other one may be up
                return None
            body = _json(answer)
            self.history.add(t0=began, t1=time.time(), client=self.name, op=op, api=api,
                             job=job or (body or {}).get("task_id"), key=idem, clip=clip,
                             status=answer.status_code, digest=_digest(answer.content),
                             body=_keep(body))
            return answer
        return None

    # -- the operations -----------------------------------------------------------------------

    def submit(self, kind: str) -> None:
        clip = self.rng.choice(sorted(self.clips))
        data: dict[str, str] = {}
        files: dict[str, Any] | None = {"audio": (f"{clip}.wav", self.clips[clip], "audio/wav")}
        if kind == "submit_url":
            data["audio_url"], files = self.audio_url(clip), None
        if kind == "submit_callback":
            data["callback_url"] = self.callback_url
        idem = f"{self.name}-{uuid.UUID(int=self.rng.getrandbits(128))}" \
            if kind == "submit_keyed" else None
        headers = {"Idempotency-Key": idem} if idem else {}
        tries = KEYED_TRIES if idem else 1
        for attempt in range(tries):
            answer = self.request(kind, "POST", "/api/v1/asr/submit", idem=idem, clip=clip,
                                  timeout=SUBMIT_TIMEOUT_S, data=data, files=files,
                                  headers=headers)
            if answer is not None and answer.status_code in (200, 202):
                task_id = answer.json()["task_id"]
                self.jobs.setdefault(task_id, Own(task_id, clip, time.time(),
                                                  callback="callback_url" in data))
                return
            if answer is not None and answer.status_code < 500 and answer.status_code != 429:
                return  # refused for good (a 4xx): nothing to retry
            time.sleep(min(4.0, 0.3 * 2 ** attempt))

    def poll(self, own: Own, wait: float = POLL_WAIT_S) -> None:
        answer = self.request("poll", "GET", f"/api/v1/asr/result/{own.id}", job=own.id,
                              params={"wait": wait}, timeout=wait + 10)
        if answer is None:
            return
        own.read_at = time.time()
        if answer.status_code == 200:
            own.status = answer.json()["status"]
        elif answer.status_code == 404:
            own.status = "gone"

    def delete(self) -> None:
        active = [j for j in self.jobs.values() if j.status in ACTIVE and not j.deleted]
        if not active:
            return
        own = self.rng.choice(active)
        answer = self.request("delete", "DELETE", f"/api/v1/asr/task/{own.id}", job=own.id)
        if answer is not None and answer.status_code in (200, 202, 204, 404):
            own.deleted = True
            own.status = "deleted"

    def retry(self) -> None:
        failed = [j for j in self.jobs.values() if j.status in ("failed", "cancelled")]
        if not failed:
            return
        own = self.rng.choice(failed)
        answer = self.request("retry", "POST", f"/api/v1/asr/retry/{own.id}", job=own.id)
        if answer is not None and answer.status_code in (200, 202):
            own.status = "queued"

    def openai(self) -> None:
        clip = self.rng.choice(sorted(self.clips))
        self.request("openai", "POST", "/v1/audio/transcriptions", clip=clip, timeout=60,
                     data={"model": "whisper-1", "response_format": "json"},
                     files={"file": (f"{clip}.wav", self.clips[clip], "audio/wav")})

    def step(self) -> None:
        """One move: read a job left unread too long, or one operation drawn by weight."""
        now = time.time()
        stale = [j for j in self.jobs.values()
                 if j.status in ACTIVE and not j.deleted and now - max(j.read_at, j.submitted)
                 > RESOLVE_AFTER_S]
        if stale:
            self.poll(min(stale, key=lambda j: j.read_at or j.submitted))
            return
        op = self.rng.choices([o for o, _ in OPS], [w for _, w in OPS])[0]
        if op.startswith("submit"):
            self.submit(op)
        elif op == "poll":
            active = [j for j in self.jobs.values() if j.status in ACTIVE and not j.deleted]
            if active:
                self.poll(self.rng.choice(active))
        else:
            getattr(self, op)()

    def run(self, until: float, pause_s: float) -> None:
        while time.time() < until:
            self.step()
            time.sleep(self.rng.uniform(0, pause_s))

    def resolve(self, deadline: float) -> None:
        """After the soak: long-poll every job it has until each has ended (or the deadline)."""
        for own in self.jobs.values():
            while own.status in ACTIVE and not own.deleted and time.time() < deadline:
                self.poll(own, wait=min(30.0, max(0.0, deadline - time.time())))


def _json(answer: requests.Response) -> dict | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _keep(body: dict | None) -> dict | None:
    """What the checker needs of an answer: not whole transcripts' segments."""
    if body is None:
        return None
    kept = {k: body[k] for k in ("task_id", "status", "text", "type", "title", "error",
                                 "attempts", "finished_at", "created_at", "worker")
            if k in body}
    result = body.get("result")
    if isinstance(result, dict):
        kept["result_text"] = result.get("text")
    return kept


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]
