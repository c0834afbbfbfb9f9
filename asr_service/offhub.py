"""Blocking C calls off the gevent hub: in an OS thread when gevent has patched the process."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def gevent_patched(module: str = "socket") -> bool:
    """Whether gevent's monkey patching has replaced `module` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched(module))


def call(fn: Callable[..., T], *args: object, timeout_s: float) -> T:
    """fn(*args); under gevent in the hub's thread pool, TimeoutError after timeout_s.

    Under gunicorn's gevent worker a C call (FFmpeg, libsndfile) runs in the only OS thread of
    the process, and no other greenlet (health, uploads, long-polls) runs until it returns. In
    a pool thread it only holds the GIL while it runs Python. Past timeout_s the caller gets
    its answer; the thread finishes (or fails) on its own, and its result is dropped.
    Without gevent (tests, the Flask dev server, a worker) it is a plain call.
    """
    if not gevent_patched():
        return fn(*args)
    import gevent

    # Also bounds the wait for a free pool thread, should the pool be full of overrunning calls.
    with gevent.Timeout(timeout_s, TimeoutError(f"no answer within {timeout_s:g} s")):
        return gevent.get_hub().threadpool.spawn(fn, *args).get()


def os_lock() -> Any:
    """A lock of OS threads, even in a process where gevent has patched `threading`.

    Code that call() runs in a pool thread must not wait on a lock that monkey patching made
    gevent's: an OS thread that waits on one can miss the wakeup from the OS thread that
    releases it, and wait until call()'s timeout (seen: 7 of 12 concurrent probes, 10 s each).
    """
    if not gevent_patched("threading"):
        return threading.Lock()
    from gevent import monkey

    return monkey.get_original("_thread", "allocate_lock")()
