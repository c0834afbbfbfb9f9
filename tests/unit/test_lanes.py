"""The suite's xdist lanes: a test file is one unit of work, or the group its pytestmark names."""

from __future__ import annotations

from tests.conftest import unit_of


def test_a_file_is_one_unit_and_the_files_that_share_the_repo_root_are_one() -> None:
    shared = {unit_of(f"tests/integration/{name}.py::test_x")
              for name in ("test_listeners", "test_hostile_uploads", "test_hostile_input")}

    assert shared == {"repo-root"}
    assert unit_of("tests/integration/test_live.py::test_a[1]") == "tests/integration/test_live.py"
    assert unit_of("tests/unit/test_formats.py::test_b") == "tests/unit/test_formats.py"
