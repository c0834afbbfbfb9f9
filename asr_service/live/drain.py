"""A worker's shutdown as its pool's children see it: one byte of shared memory."""

from __future__ import annotations

import mmap


class Drain:
    """Raised by the worker's main process when a shutdown begins (SIGTERM: a deploy, a
    scale-in). Every pool child sees it: the byte is mapped, shared and anonymous, before the
    pool forks, and a prefork child gets no signal of its own. A live session then hands itself
    to another worker instead of holding this one for as long as its client talks."""

    def __init__(self) -> None:
        self._flag = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: forked children share it

    def set(self) -> None:
        self._flag[0] = 1

    def is_set(self) -> bool:
        return self._flag[0] == 1
