"""ASR engines: the registry picks the configured backend (ASR_ENGINE); each backend module
owns its model checks, device preflight and options, and imports its heavy libraries only when
a worker process loads it."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from asr_service.engine.base import Engine
from asr_service.settings import Settings

BACKENDS = {
    "funasr": "asr_service.engine.funasr_engine",
    "faster-whisper": "asr_service.engine.whisper_engine",
}


def backend(settings: Settings) -> ModuleType:
    """The module of the configured backend (importing it imports no model library)."""
    return importlib.import_module(BACKENDS[settings.asr_engine])


def preflight(settings: Settings) -> str:
    """Checks for a worker's parent before it forks; returns the device the children use."""
    return backend(settings).preflight(settings)


def build_engine(settings: Settings) -> Engine:
    """Check the model and device, then load the configured engine (in a worker process)."""
    return backend(settings).build(settings)


def yield_cores(settings: Settings) -> None:
    """Lower the priority of the process that is about to run the model (ASR_ENGINE_NICE)."""
    if settings.asr_engine_nice:
        os.nice(settings.asr_engine_nice)
