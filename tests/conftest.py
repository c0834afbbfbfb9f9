"""Session fixtures shared by every test directory, and how the suite is split for xdist."""

from __future__ import annotations

import fcntl
import functools
import re
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


ROOT = MODELS.parent
# A module-level `pytestmark` (one statement: no blank line inside) naming an xdist_group.
_FILE_GROUP = re.compile(r"""^pytestmark\b(?:(?!\n\n).)*?xdist_group\(["']([^"']+)["']\)""",
                         re.M | re.S)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to under xdist: its file (its module fixtures then start
    once, in one lane), or the xdist_group its file's `pytestmark` names: the files that touch
    one shared thing (the repo root, fixed names) run one after another in one lane."""
    path = nodeid.split("::", 1)[0]
    return _file_groups(path)


@functools.cache
def _file_groups(path: str) -> str:
    try:
        found = _FILE_GROUP.search((ROOT / path).read_text())
    except OSError:
        return path
    return found.group(1) if found else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's own loadgroup no longer groups under pytest 9 (it renames `item._nodeid`,
    which pytest 9 ignores, so every test became a unit and both lanes started every module's
    fixtures): this scheduler takes units from unit_of(), on the controller, from node ids."""
    from xdist.scheduler import LoadScopeScheduling

    # Keep the units in collection order (slow ones first, see below): xdist would otherwise
    # sort them by their count of tests, which sent the 2-minute soak, one test, last.
    config.option.loadscopereorder = False

    class FileOrGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return FileOrGroup(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist lane, the units with slow tests first: the lanes take units in collection
    order, and long ones first leaves the many short ones (unit tests) to even out the end.
    Sorting is stable: each file keeps its own order."""
    if hasattr(config, "workerinput"):
        slow = {unit_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
        items[:] = sorted(items, key=lambda item: unit_of(item.nodeid) not in slow)
