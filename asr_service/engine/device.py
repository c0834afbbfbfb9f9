"""Which device a worker's model runs on: the same rule for every backend, never a silent
fallback from CUDA to CPU."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

from asr_service.errors import ModelLoadError

log = logging.getLogger(__name__)


def no_cuda(what: str) -> str:
    """The error for ASR_USE_GPU=true without CUDA."""
    return (f"ASR_USE_GPU=true but no CUDA device is available to this process ({what}); "
            "set ASR_USE_GPU=auto or false to run on CPU")


def probe_cuda(code: str) -> bool:
    """Run `code` (exits 0 when CUDA is usable) in a subprocess: a parent that initialised CUDA
    could not fork usable children."""
    return subprocess.run([sys.executable, "-c", code], timeout=300).returncode == 0


def preflight(use_gpu: str, cuda_probe: str, what: str) -> str:
    """The device a worker will use, decided in its parent: CUDA is probed in a subprocess."""
    if use_gpu == "false":
        return "cpu"
    return choose(use_gpu, probe_cuda(cuda_probe), what)


def in_process(use_gpu: str, has_cuda: Callable[[], bool], what: str) -> str:
    """The device for a model loaded in this process: has_cuda() (which imports the backend's
    CUDA library) is asked only when ASR_USE_GPU allows CUDA."""
    return "cpu" if use_gpu == "false" else choose(use_gpu, has_cuda(), what)


def choose(use_gpu: str, has_cuda: bool, what: str) -> str:
    """Map ASR_USE_GPU (auto/true/false) and CUDA's presence to "cuda" or "cpu"."""
    if use_gpu == "false":
        return "cpu"
    if use_gpu == "true":
        if not has_cuda:
            raise ModelLoadError(no_cuda(what))
        return "cuda"
    if has_cuda:
        log.warning("ASR_USE_GPU=auto: CUDA is available, running the model on the GPU")
        return "cuda"
    log.warning("ASR_USE_GPU=auto: no CUDA device is available, running the model on the CPU")
    return "cpu"
