"""What the API does with jobs: submit, result, retry, delete. Views only adapt HTTP to these.

Jobs reach Celery through dispatch.Dispatcher (the workers' sweeps use the same one).
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
import uuid
from dataclasses import dataclass, replace
from typing import Any

from asr_service import urlguard
from asr_service.audio import AudioInfo, probe_off_hub
from asr_service.cluster import Cluster
from asr_service.committed import NotReplicated, outcome_of
from asr_service.diarize import DiarizeSpec
from asr_service.dispatch import Dispatcher
from asr_service.errors import (
    AudioTooLong,
    IdempotencyMismatch,
    ModelNotFound,
    UrlRefused,
)
from asr_service.jobs import ACTIVE, Job, JobStore, Status
from asr_service.lifecycle import Idempotency, Lifecycle
from asr_service.runs import new_delivery
from asr_service.settings import Settings
from asr_service.waiters import Waiters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """An uploaded recording and what came with it."""

    data: bytes
    filename: str | None
    language: str
    hotwords: list[str]
    callback_url: str | None = None
    model: str | None = None
    """A served model's id; None: the default model."""
    source_url: str | None = None
    """The audio_url it was fetched from (None: uploaded)."""
    diarization: DiarizeSpec | None = None
    """Who spoke when, if asked: the speaker counts wanted."""

    def fingerprint(self) -> str:
        """Identifies the request, so a reused Idempotency-Key with another upload is caught.
        An audio_url request is its URL, so a replay is found before anything is fetched."""
        digest = hashlib.sha256(self.data if self.source_url is None
                                else f"url\0{self.source_url}".encode())
        digest.update(f"\0{self.language}\0{' '.join(self.hotwords)}".encode())
        digest.update(f"\0{self.callback_url or ''}\0{self.model or ''}".encode())
        if self.diarization is not None:
            digest.update(f"\0diarize{sorted(self.diarization.to_record().items())}".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class Submitted:
    """The job a submit created or, for a repeated Idempotency-Key, replayed."""

    job: Job
    replayed: bool
    replication: str | None = None
    """"pending" when the master holds it but fewer than REDIS_MIN_REPLICAS replicas
    acknowledged it in time."""


class JobService:
    """Submit, read, retry and delete jobs."""

    def __init__(self, settings: Settings, store: JobStore, lifecycle: Lifecycle,
                 dispatcher: Dispatcher, waiters: Waiters, cluster: Cluster) -> None:
        self.settings = settings
        self.store = store
        self.lifecycle = lifecycle
        self.dispatcher = dispatcher
        self.waiters = waiters
        self.cluster = cluster

    def models(self) -> dict[str, tuple[str, int]]:
        """Model id -> (queue, workers serving it there now): every model a live worker serves,
        and the default model (its jobs wait in its queue until a worker comes). A model served
        on several queues routes to the default queue if it is the default model, else to the
        queue with the most workers (then by name, so every API process picks the same one)."""
        groups: dict[str, dict[str, int]] = {self.settings.model_id:
                                             {self.settings.queue_name: 0}}
        for worker in self.cluster.workers():
            if worker.queue and worker.engines_ready:
                queues = groups.setdefault(worker.model, {})
                queues[worker.queue] = queues.get(worker.queue, 0) + 1
        served = {}
        for model, queues in groups.items():
            if model == self.settings.model_id:
                queue = self.settings.queue_name
            else:
                queue = min(queues, key=lambda q: (-queues[q], q))
            served[model] = (queue, queues.get(queue, 0))
        return served

    def queue_for(self, model: str | None) -> str:
        """The queue of a model's worker group (None: the default model's); 404 when no worker
        serves it."""
        if model is None:
            return self.settings.queue_name
        served = self.models()
        if model not in served:
            raise ModelNotFound(f"no worker serves the model '{model}'; served now: "
                                f"{', '.join(sorted(served))}")
        return served[model][0]

    def download(self, audio_url: str) -> urlguard.Fetched:
        """Fetch a recording for a submit: SSRF guard, MAX_UPLOAD_MB and a deadline apply."""
        return urlguard.fetch(audio_url, max_bytes=self.settings.max_upload_bytes,
                              allow_private=self.settings.allow_private_urls,
                              timeout_s=self.settings.audio_url_timeout_s)

    def _check_callback(self, url: str) -> None:
        if not self.settings.webhook_secret:
            raise UrlRefused("webhooks are off on this server: callback_url needs WEBHOOK_SECRET "
                             "to be set (every webhook is signed)")
        urlguard.check_url(url, self.settings.allow_private_urls)

    def precheck(self, upload: Upload, idempotency_key: str | None = None) -> Submitted | None:
        """The cheap checks, before any audio is fetched: callback_url, model, and an
        Idempotency-Key replay (returned; None: go on)."""
        if upload.callback_url:
            self._check_callback(upload.callback_url)
        self.queue_for(upload.model)
        if idempotency_key and (held := self.lifecycle.held_by(idempotency_key)):
            return self._replay(*held, Idempotency(idempotency_key, upload.fingerprint(), 1))
        return None

    def submit(self, upload: Upload, idempotency_key: str | None = None,
               owner: str = "") -> Submitted:
        """Store and queue a recording for a tenant (owner); 422 when it is not audio, too long,
        or reuses an Idempotency-Key with a different request; 503/429 when the caps on active
        jobs are reached (Caps.error)."""
        if upload.callback_url:
            self._check_callback(upload.callback_url)
        idem = None
        if idempotency_key:
            idem = Idempotency(idempotency_key, upload.fingerprint(),
                               self.settings.result_retention_s)
            if held := self.lifecycle.held_by(idempotency_key):  # replay without decoding
                return self._replay(*held, idem)
        info = probe_off_hub(upload.data)  # FFmpeg and libsndfile: off the gevent hub
        job = replace(self._new_job(upload, info, self.queue_for(upload.model)), owner=owner)
        replication = None
        with outcome_of(job.id, f"GET /api/v1/asr/result/{job.id} tells whether it was stored "
                        "(404: it was not); submitting again with the same Idempotency-Key is "
                        "safe (it replays the task if it exists)"):
            try:
                outcome, job_id = self.lifecycle.create(job, upload.data, idem,
                                                        format=info.format, codec=info.codec)
            except NotReplicated as lagging:  # the master holds it: not a failure to hide
                (outcome, job_id), replication = lagging.result, "pending"
        if outcome in ("full", "queue-full", "owner-full"):
            raise self.lifecycle.caps.error(outcome)
        if outcome != "created":
            assert idem is not None
            replayed = self._replay(job_id, idem.fingerprint if outcome == "replayed" else "",
                                    idem)
            return Submitted(replayed.job, True, replication)
        self.dispatcher.try_send(job)
        return Submitted(job, replayed=False, replication=replication)

    def _replay(self, job_id: str, fingerprint: str, idem: Idempotency) -> Submitted:
        if fingerprint != idem.fingerprint:
            raise IdempotencyMismatch(
                f"this Idempotency-Key was used for task {job_id} with a different upload or "
                "fields; use a new key for a new request")
        return Submitted(self.store.get(job_id), replayed=True)

    def _new_job(self, upload: Upload, info: AudioInfo, queue: str) -> Job:
        limit = self.settings.max_audio_seconds
        if info.duration_s > limit:
            raise AudioTooLong(f"the recording lasts {info.duration_s:.0f} s; the limit is "
                               f"MAX_AUDIO_SECONDS={limit}")
        job_id, now, name = str(uuid.uuid4()), time.time(), _display_name(upload.filename)
        return Job(id=job_id, status=Status.QUEUED, celery_id=job_id, filename=name,
                   content_type=_content_type(info),
                   size_bytes=len(upload.data), duration_s=round(info.duration_s, 3),
                   language=upload.language, hotwords=upload.hotwords,
                   diarization=(None if upload.diarization is None
                                else upload.diarization.to_record()),
                   queue=queue, model=upload.model or self.settings.model_id,
                   created_at=now, queued_at=now, callback_url=upload.callback_url)

    def result(self, job_id: str, owner: str | None = None) -> tuple[Job, dict[str, Any] | None]:
        """The job and, once it succeeded, its transcript (404 for another owner's)."""
        job = self.store.get(job_id, owner)
        return job, self.store.transcript(job)

    def wait(self, job_id: str, timeout_s: float,
             owner: str | None = None) -> tuple[Job, dict[str, Any] | None]:
        """result(), once the job has ended or timeout_s has passed (no polling: the waiters
        are woken by the job's end event); another owner's job is a 404 at once."""
        ended: list[Job] = []

        def done() -> bool:
            ended[:] = [self.store.get(job_id, owner)]
            return ended[0].status not in ACTIVE

        self.waiters.wait(job_id, timeout_s, done)
        return ended[-1], self.store.transcript(ended[-1])

    def retry(self, job_id: str, owner: str | None = None) -> tuple[Job, str | None]:
        """Queue a failed or cancelled job again (409 otherwise, 410 without its recording);
        the job and its replication ("pending": the master holds it, replicas lag); 404 for
        another owner's."""
        replication = None
        with outcome_of(job_id, f"GET /api/v1/asr/result/{job_id} tells whether it is queued "
                        "again; retrying again is safe (409 once it is)"):
            try:
                job = self.lifecycle.retry(job_id, new_delivery(job_id, "retry"), owner)
            except NotReplicated as lagging:
                job, replication = lagging.result, "pending"
        self.dispatcher.try_send(job)
        return job, replication

    def delete(self, job_id: str, owner: str | None = None) -> str | None:
        """Delete the job for good; its replication ("pending": the master holds the delete,
        replicas lag). A queued delivery then finds no record and is dropped; a running one
        learns it from its lease renewal and stops itself (runs.holding_lease): no signal is
        sent to a process that may be running another job by then. 404 for another owner's."""
        with outcome_of(job_id, f"GET /api/v1/asr/result/{job_id} tells whether it is gone "
                        "(404); deleting again is safe"):
            try:
                self.lifecycle.delete(job_id, owner)
            except NotReplicated:
                return "pending"
        return None


def _display_name(filename: str | None) -> str:
    # Only ever shown and offered as a download name; nothing is written to disk under it.
    # Control and format characters (CR/LF, NUL, bidi overrides) never reach a header or a log.
    name = (filename or "audio").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    return name.strip()[:255] or "audio"


# What the probe found, not what the client claimed, names the type a download is served with.
_AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg",
                "mp3": "audio/mpeg", "mov": "audio/mp4", "mp4": "audio/mp4", "ipod": "audio/mp4",
                "m4a": "audio/mp4", "matroska": "audio/webm", "webm": "audio/webm",
                "aiff": "audio/aiff", "au": "audio/basic"}


def _content_type(info: AudioInfo) -> str:
    return _AUDIO_TYPES.get(info.format, "application/octet-stream")
