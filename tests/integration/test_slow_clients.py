"""Slow uploads do not starve the API: health answers while 32 uploads trickle in at 1 KB/s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.slow  # 32 uploads trickling in at 1 KB/s

sys.path.insert(0, str(ROOT / "scripts"))
import bench_slow_clients as bench  # noqa: E402


def test_health_answers_while_slow_uploads_hold_connections(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path):
    # The benchmark itself, shorter: its own Redis, the real gunicorn config, no worker.
    monkeypatch.setattr(bench, "TRICKLE_S", 8)
    monkeypatch.setattr(bench, "OUT", tmp_path)

    assert bench.main() == 0

    during = json.loads((tmp_path / "slow_clients.json").read_text())["health_during"]
    assert during["probes"] >= 5 and during["failed"] == 0, during
