"""The engine process of a batching worker: the configured engine, loaded in a process of its
own that the Batcher (batching.py) feeds batches over a pipe, and kills and replaces when it
dies, hangs past the time limit or grows past the memory limit.

This module is what the spawned process imports first: it imports no Celery, Flask or API.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asr_service.engine.base import TranscribeOptions, Transcript
from asr_service.errors import EngineError, ModelLoadError
from asr_service.settings import Settings

Item = tuple[np.ndarray, TranscribeOptions]
BatchResult = Transcript | Exception
"""What a batch gives for one recording: its transcript or the error it failed with."""


class HostFailed(Exception):
    """The engine process died or passed the time limit during a batch."""

    def __init__(self, message: str, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Host(Protocol):
    """Runs batches on a loaded model (EngineHost; unit tests use an in-process stand-in)."""

    name: str
    device: str
    pid: int

    def run(self, items: list[Item], timeout_s: float | None) -> list[BatchResult]:
        """One outcome per item, in order, or HostFailed."""
        ...

    def rss_bytes(self) -> int:
        """Resident memory of the engine process."""
        ...

    def close(self) -> None:
        """Stop the engine process."""
        ...


class EngineHost:
    """The configured engine, loaded in a spawned process of its own."""

    def __init__(self, settings: Settings) -> None:
        # spawn, not fork: the worker's main process has threads (Celery's, the batcher's).
        # The child imports this package from the parent's sys.path, which lacks the project
        # root when Celery's `-A` found it in the working directory only while importing.
        if (root := str(Path(__file__).resolve().parents[2])) not in sys.path:
            sys.path.append(root)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=serve, args=(settings, child), name="asr-engine")
        self._process.start()
        child.close()
        self.pid = self._process.pid or 0
        try:
            reply = self._receive(settings.model_load_timeout_s)
        except HostFailed as exc:
            self.close()
            raise ModelLoadError(f"the engine process did not start: {exc}") from None
        if reply[0] != "ready":
            self.close()
            raise ModelLoadError(reply[1])
        self.name, self.device = reply[1], reply[2]

    def run(self, items: list[Item], timeout_s: float | None) -> list[BatchResult]:
        try:
            self._conn.send(items)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise HostFailed(f"the engine process is gone ({exc})", timed_out=False) from None
        return self._receive(timeout_s)

    def _receive(self, timeout_s: float | None) -> Any:
        if not self._conn.poll(timeout_s):
            raise HostFailed(f"no answer within {timeout_s} s", timed_out=True)
        try:
            return self._conn.recv()
        except (EOFError, ConnectionResetError):
            self._process.join(timeout=5)
            raise HostFailed(f"the engine process died (exit code {self._process.exitcode})",
                             timed_out=False) from None

    def rss_bytes(self) -> int:
        import psutil

        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def close(self) -> None:
        self._conn.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)


def serve(settings: Settings, conn: Connection) -> None:
    """The engine process: load the model, then answer batches until the pipe closes."""
    from asr_service.engine import build_engine, yield_cores
    from asr_service.logs import setup_logging

    setup_logging("engine", settings)
    yield_cores(settings)
    try:
        engine = build_engine(settings)
        engine.warm_up()
    except Exception as exc:
        conn.send(("error", f"{exc}"))
        return
    conn.send(("ready", engine.name, engine.device))
    while True:
        try:
            items = conn.recv()
        except (EOFError, OSError):
            return  # the worker is gone: so is its engine
        outcomes = engine.transcribe_batch(items)
        try:
            conn.send([_portable(o) for o in outcomes])
        except (BrokenPipeError, OSError):
            return


def _portable(outcome: BatchResult) -> BatchResult:
    """What crosses the pipe: a transcript, or an EngineError carrying the failure's text."""
    if isinstance(outcome, Exception) and not isinstance(outcome, EngineError):
        return EngineError(f"{type(outcome).__name__}: {outcome}")
    return outcome
