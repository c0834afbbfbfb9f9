"""Test harness: start a real process on a readiness signal, poll until true, stop the process."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psutil

T = TypeVar("T")
Errors = type[Exception] | tuple[type[Exception], ...]


def report(name: str, **figures: object) -> None:
    """Figures for the closing note: `pytest -s` shows them, and with RELIABILITY_LOG=file each
    is also appended there as a JSON line (so a `make test` run in lanes keeps them all)."""
    line = json.dumps(figures)
    print(f"\nRELIABILITY {name}: {line}")
    if os.environ.get("RELIABILITY_LOG"):
        with open(os.environ["RELIABILITY_LOG"], "a") as log:
            log.write(json.dumps({"name": name, **figures}) + "\n")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(predicate: Callable[[], T], timeout: float, interval: float = 0.05,
               message: str | Callable[[], str] = "condition never held",
               ignoring: Errors = ()) -> T:
    """Poll `predicate` until it returns something truthy and return that.

    Raises AssertionError with `message` (a callable is called only then) and the last value
    after `timeout` seconds. Exceptions of the `ignoring` types count as "not yet"; any other
    exception, an assertion in the predicate included, fails at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: object = predicate()
        except ignoring as exc:
            value = exc
        else:
            if value:
                return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (after {timeout} s, last: {value!r})")
        time.sleep(interval)


def read_jsonl(path: Path) -> list[dict]:
    """A JSON-lines log's whole lines ([] before it exists): the process writing it may be
    halfway through its last line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]]


def logged(read: Callable[[], list[dict]], event: str, ids: Iterable[str],
           timeout: float = 15) -> Counter[str]:
    """How many `event` lines each job has in an events.jsonl (`read` parses it), once every
    one of `ids` has one: a worker writes its line just after the transition that the API and
    the lifecycle's stream already show, and a busy host writes it late."""
    wanted = set(ids)

    def written() -> Counter[str] | None:
        counts = Counter(e["job_id"] for e in read() if e["event"] == event)
        return counts if wanted <= set(counts) else None

    return eventually(written, timeout, interval=0.1,
                      message=lambda: f"not every job logged {event}: {wanted}")


def log_tail(path: Path, chars: int = 4000) -> str:
    """The end of a process's log, for a failure message."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def wait_ready(proc: subprocess.Popen[bytes], ready: Callable[[], object], timeout: float,
               log_path: Path, *, interval: float = 0.05, ignoring: Errors = ()) -> None:
    """Poll `ready` while `proc` runs; fail at once, with its log's tail, if it exits."""
    def running_and_ready() -> object:
        assert proc.poll() is None, \
            f"{shlex.join(map(str, proc.args))} exited with {proc.returncode}\n{log_tail(log_path)}"
        return ready()

    eventually(running_and_ready, timeout, interval, ignoring=ignoring,
               message=lambda: f"not ready: {shlex.join(map(str, proc.args))}\n"
                               f"{log_tail(log_path)}")


def start_process(argv: Sequence[str | Path], *, ready: Callable[[], object], timeout: float,
                  log_path: Path, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None, interval: float = 0.05,
                  ignoring: Errors = ()) -> subprocess.Popen[bytes]:
    """Start `argv` (stdout and stderr appended to `log_path`) and return it once `ready()`.

    `ready` may raise one of `ignoring` while the process comes up (a refused connection).
    If the process exits or is not ready within `timeout` seconds it is stopped and the
    AssertionError carries its log's tail.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, ready, timeout, log_path, interval=interval, ignoring=ignoring)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def stop_tree(proc: subprocess.Popen | None, timeout: float = 15,
              children_timeout: float = 5) -> None:
    """stop_process, then wait for (or SIGKILL) every descendant it had when asked to stop."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True) if proc else []
    except psutil.Error:
        tree = []
    stop_process(proc, timeout)
    reap(tree, children_timeout)


def reap(processes: Sequence[psutil.Process], timeout: float = 5) -> None:
    """Wait up to `timeout` s for each process to exit; SIGKILL those that do not."""
    import psutil

    for process in processes:
        try:
            process.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            process.kill()
        except psutil.Error:
            pass
