"""Imports run one way and stay light: each check imports a module in a fresh interpreter and
looks at what came with it (a module cached by an earlier test cannot hide anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import report

ROOT = Path(__file__).resolve().parents[2]
WEB = ("flask", "flask_smorest", "asr_service.api", "asr_service.app")
WORKER = ("asr_service.worker", "asr_service.tasks", "asr_service.batching")
PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
took = time.perf_counter() - started
print(json.dumps({{"s": took, "modules": sorted(sys.modules)}}))
"""


def imported_with(module: str) -> tuple[float, set[str]]:
    """(seconds the import took, every module loaded by then), in a fresh interpreter."""
    run = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(run.stdout.strip().splitlines()[-1])
    return found["s"], set(found["modules"])


def test_importing_the_settings_is_light_and_loads_no_web_worker_or_audio_library() -> None:
    took, modules = min(imported_with("asr_service.settings") for _ in range(3))
    _, bare = imported_with("json")  # what any interpreter (and this probe) loads anyway

    # Its cost is the modules it brings: counted, not timed, so a busy CI host cannot fail
    # it (the time is reported: ~0.03 s here, against 1.2 s and 939 modules before).
    report("import-settings", seconds=round(took, 3), modules=len(modules - bare))
    assert not {"flask", "celery", "av", "soundfile", "redis"} & modules
    assert len(modules - bare) < 120, sorted(modules - bare)


def test_the_webhook_deliverer_imports_neither_flask_nor_the_api() -> None:
    _, modules = imported_with("asr_service.webhooks")

    assert not set(WEB) & modules
    assert not {"celery", "av", "asr_service.service"} & modules


def test_the_engine_process_entry_module_imports_neither_flask_nor_the_api_nor_celery() -> None:
    from asr_service.batching import EngineHost
    from asr_service.engine import host

    assert EngineHost is host.EngineHost and host.serve.__module__ == "asr_service.engine.host"
    _, modules = imported_with("asr_service.engine.host")
    assert not {*WEB, "celery", "asr_service.service"} & modules


def test_the_api_never_imports_the_worker_side() -> None:
    _, modules = imported_with("asr_service.app")

    assert not set(WORKER) & modules


@pytest.mark.parametrize("module", ["asr_service.worker", "asr_service.tasks",
                                    "asr_service.sweep", "asr_service.stranded"])
def test_the_worker_side_never_imports_the_api_or_its_service(module: str) -> None:
    _, modules = imported_with(module)

    assert not {*WEB, "asr_service.service", "asr_service.waiters"} & modules


MAX_MODULE_LINES = 300


def test_no_module_of_the_package_is_over_300_lines() -> None:
    """A module that outgrows this does more than one thing: split it where the seams are."""
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
             for path in (ROOT / "asr_service").rglob("*.py")}

    assert {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES} == {}
