"""What a host's processes use: CPU and memory of a process tree (psutil), GPU memory from the
NVIDIA driver. Sampled by the worker for its heartbeat and by the API for its dashboard."""

from __future__ import annotations

import functools
import subprocess

import psutil


class ProcessTreeUsage:
    """CPU and resident memory of a process and its descendants, measured between calls."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        # The same Process objects must be asked again: cpu_percent() compares with their
        # previous call (a process seen for the first time counts 0 %).
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, int, set[int]]:
        """(CPU percent summed over the tree, RSS bytes summed, the pids in the tree)."""
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            tree = [self.root]
        cpu, rss, known = 0.0, 0, {}
        for proc in tree:
            proc = self._known.get(proc.pid, proc)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue  # it ended between listing and reading
            known[proc.pid] = proc
        self._known = known
        return round(cpu, 1), rss, set(known)


@functools.cache
def tree_usage(pid: int) -> ProcessTreeUsage:
    """The (kept) sampler of this process tree."""
    return ProcessTreeUsage(pid)


def gpu_memory_bytes(pids: set[int]) -> int | None:
    """GPU memory held by these processes, per the NVIDIA driver (nvidia-smi).

    Asked of the driver rather than torch: the worker's main process never imports torch, and
    its children (which hold the models) only answer for themselves. None when there is no
    nvidia-smi or it lists none of these pids (e.g. a container without the host's pid space).
    """
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=2, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used = 0
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        try:
            if int(pid) in pids:
                used += int(float(mib)) * 1024 * 1024
        except ValueError:
            continue  # "[N/A]" on some drivers
    return used or None
