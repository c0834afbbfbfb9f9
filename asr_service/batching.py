"""Dynamic batching: the concurrent jobs of one worker share one loaded model, and the recordings
that reach it together run as one engine call (the Triton / Ray Serve pattern); a batch waits up
to ASR_BATCH_WAIT_MS for jobs the worker has already started, and for no others.

A batching worker runs Celery's threads pool: each job keeps its own thread, message, lease,
result, failure and late ack, exactly as in a prefork child; only the engine call is shared.
Threads cannot be killed, so the model does not live in them: it lives in one spawned engine
process (EngineHost, engine/host.py) that the Batcher feeds over a pipe. That process is what
a hard time limit, a crash or the memory limit kills and replaces, as Celery replaces a prefork
child:
- a batch that dies or passes TASK_TIME_LIMIT_S is run again one job at a time in a fresh
  engine process, so only the recording that caused it fails (its neighbours finish);
- a worker killed mid-batch takes its engine process with it (it reads end-of-file and exits);
  each of its jobs is handed back by the lifecycle's sweep like any other dead runner's.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from celery.concurrency.thread import TaskPool

from asr_service.engine.base import SAMPLE_RATE, TranscribeOptions, Transcript, transcribe_each
from asr_service.engine.host import BatchResult, EngineHost, Host, HostFailed, Item
from asr_service.errors import EngineError, EngineTimeLimit
from asr_service.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.002
"""How often a batch being gathered looks whether the jobs it waits for are still coming."""


class JobThreads(TaskPool):
    """Celery's threads pool, where revoking a running job with terminate (what DELETE does)
    leaves its thread be: the thread waits on a batch shared with other jobs, and the
    lifecycle refuses the deleted job's result when the batch ends."""

    def terminate_job(self, pid: int | None, signal: int | None = None) -> None:
        log.info("a revoked job's thread finishes its batch; its result will be refused")


@dataclass
class _Pending:
    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    outcome: BatchResult | None = None

    @property
    def seconds(self) -> float:
        return self.item[0].size / SAMPLE_RATE

    def settle(self, outcome: BatchResult) -> None:
        self.outcome = outcome
        self.done.set()


class Batcher:
    """The Engine of a batching worker's job threads: transcribe() joins the next batch."""

    def __init__(self, start_host: Callable[[], Host], *, wait_s: float, max_jobs: int,
                 max_audio_s: float, time_limit_s: float | None, max_rss_bytes: int = 0,
                 on_fatal: Callable[[], None] = lambda: os._exit(1),
                 on_ready: Callable[[Host], None] = lambda host: None) -> None:
        self._start_host, self._on_fatal, self._on_ready = start_host, on_fatal, on_ready
        self._host = start_host()
        on_ready(self._host)
        self.name, self.device = self._host.name, self._host.device
        self._wait_s, self._max_jobs, self._max_audio_s = wait_s, max_jobs, max_audio_s
        self._time_limit_s, self._max_rss_bytes = time_limit_s, max_rss_bytes
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._carry: _Pending | None = None
        self._lock = threading.Lock()
        self._coming = 0
        """Jobs this worker has started whose recording has not reached the queue yet."""
        self._local = threading.local()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    @classmethod
    def for_settings(cls, settings: Settings,
                     on_ready: Callable[[Host], None] = lambda host: None) -> Batcher:
        """A batcher over an EngineHost of the configured engine; on_ready(host) once each
        engine process has loaded the model (the first and every replacement)."""
        return cls(lambda: EngineHost(settings), on_ready=on_ready,
                   wait_s=settings.asr_batch_wait_ms / 1000, max_jobs=settings.asr_batch_jobs,
                   max_audio_s=float(settings.asr_batch_audio_s),
                   time_limit_s=settings.task_time_limit_s,
                   max_rss_bytes=settings.worker_max_memory_mb * 1024 * 1024)

    @property
    def pid(self) -> int:
        """The engine process."""
        return self._host.pid

    def warm_up(self) -> None:
        """The engine process warmed its model up when it started."""

    def job_started(self) -> None:
        """A job thread started: a batch being gathered waits for its recording (within
        ASR_BATCH_WAIT_MS). One with nobody on the way runs at once: a lone job never waits."""
        with self._lock:
            self._coming += 1
        self._local.coming = True

    def job_ended(self) -> None:
        """The job thread is done (a job that never reached transcribe is no longer coming)."""
        self._arrived()

    def _arrived(self) -> None:
        if getattr(self._local, "coming", False):
            self._local.coming = False
            with self._lock:
                self._coming -= 1

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe in the next batch; blocks this job's thread until its outcome is known."""
        pending = _Pending((audio, options))
        self._queue.put(pending)
        self._arrived()  # after the put: the gatherer never sees it in neither place
        pending.done.wait()
        if isinstance(pending.outcome, Exception):
            raise pending.outcome
        assert pending.outcome is not None
        return pending.outcome

    def transcribe_batch(self, items: list[Item]) -> list[BatchResult]:
        """Each item in the next batches (the Engine interface; jobs call transcribe)."""
        return transcribe_each(self, items)

    def close(self) -> None:
        """Stop taking batches and stop the engine process."""
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._host.close()

    def _gather(self) -> list[_Pending] | None:
        """The next batch: the first job, then what arrives within the wait from jobs already
        in this worker, up to the limits (a job that would pass the audio limit starts the
        batch after)."""
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, audio_s = [first], first.seconds
        deadline = time.monotonic() + self._wait_s
        while len(batch) < self._max_jobs:
            if not self._coming and self._queue.empty():
                break  # nobody else is on the way: waiting would only add latency
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                nxt = self._queue.get(timeout=min(remaining, POLL_S))
            except queue.Empty:
                continue
            if nxt is None:
                self._queue.put(None)
                break
            if audio_s + nxt.seconds > self._max_audio_s:
                self._carry = nxt
                break
            batch.append(nxt)
            audio_s += nxt.seconds
        return batch

    def _loop(self) -> None:
        while (batch := self._gather()) is not None:
            try:
                self._run(batch)
            except Exception as exc:  # never leave a job thread waiting
                log.exception("batch failed")
                for pending in batch:
                    if not pending.done.is_set():
                        pending.settle(EngineError(f"the batch failed: {exc}"))

    def _run(self, batch: list[_Pending], rerun: bool = False) -> None:
        """Run a batch; one whose engine process died or timed out runs again one job at a
        time in a fresh process, and only a job that fails so alone is blamed. A job that
        timed out alone is blamed at once: it would only time out again."""
        started = time.perf_counter()
        try:
            outcomes = self._host.run([p.item for p in batch], self._time_limit_s)
        except HostFailed as failed:
            log.error("engine process failed on a batch of %d: %s; replacing it",
                      len(batch), failed)
            self._replace_host()
            if rerun or (failed.timed_out and len(batch) == 1):
                batch[0].settle(self._blame(failed))
                return
            for pending in batch:  # each in turn: only the culprit fails
                self._run([pending], rerun=True)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.settle(outcome)
        log.info("batch ran", extra={"batch_jobs": len(batch),
                                     "batch_audio_s": round(sum(p.seconds for p in batch), 3),
                                     "batch_s": round(time.perf_counter() - started, 3)})
        if self._max_rss_bytes and self._host.rss_bytes() > self._max_rss_bytes:
            log.warning("engine process above WORKER_MAX_MEMORY_MB; replacing it")
            self._replace_host()

    def _blame(self, failed: HostFailed) -> EngineError:
        if failed.timed_out:
            return EngineTimeLimit(
                f"killed at the hard time limit of {self._time_limit_s} s (TASK_TIME_LIMIT_S); "
                "the engine process was replaced")
        return EngineError(f"the engine process died on this recording ({failed}); it was "
                           "replaced")

    def _replace_host(self) -> None:
        self._host.close()
        try:
            self._host = self._start_host()
        except Exception as exc:  # the model loaded once and no longer does: stop this worker
            log.critical("engine process could not be replaced: %s", exc)
            self._on_fatal()
            raise
        self._on_ready(self._host)
