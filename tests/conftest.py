"""Session fixtures shared by every test directory, and how the suite is split for xdist."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from scripts.assets import ensure_assets

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="session")
def model_assets() -> dict[str, Path]:
    """The tiny Paraformer and the real fsmn-vad under ./models, built once if missing.

    Each xdist worker has its own session: on a clean clone two of them would build at once, so
    the build holds a file lock and the second finds the models ready.
    """
    MODELS.mkdir(exist_ok=True)
    with (MODELS / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_assets(MODELS)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` a test file is one unit of work (its module fixtures start
    once), unless the file or test names an xdist_group of its own: the tests that touch one
    shared thing (the repo root, fixed names) then run one after another on one worker."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    if hasattr(config, "workerinput"):  # an xdist lane: the files with slow tests first
        slow = {_group(item) for item in items if item.get_closest_marker("slow")}
        # The lanes take units in collection order: long ones first leaves the many short ones
        # (unit tests) to even out the end. Sorting is stable: each file keeps its own order.
        items[:] = sorted(items, key=lambda item: _group(item) not in slow)


def _group(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
