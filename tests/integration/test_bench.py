"""`make bench` in miniature: scripts/bench.py runs end to end (two short load levels, three
clips) and its JSON holds measured figures for the bare engine and the service, and for
funasr-server either figures or "n/a" with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # scripts/bench.py end to end

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path: Path, model_assets: dict[str, Path]) -> None:
    models_dir = model_assets["asr"].parent
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--concurrency", "1,2",
         "--seconds", "3", "--clips", "3", "--models-dir", str(models_dir), "--out",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "bench-tiny.json").read_text())
    assert (tmp_path / "bench-tiny.png").stat().st_size > 0

    for key in ("engine", "engine_novad"):
        assert result[key]["jobs"] > 0 and result[key]["audio_s_per_s"] > 0, result[key]
    levels = result["service"]["levels"]
    batched = result["batched"]["levels"]
    assert result["batched"]["status"] == "measured"
    for service in (levels, batched):
        assert [lv["concurrency"] for lv in service] == [1, 2]
        for lv in service:
            assert lv["jobs"] > 0 and lv["audio_s_per_s"] > 0 and lv["failed"] == 0, lv
            assert lv["health_probes"] > 0 and lv["health_p99_ms"] is not None, lv
    assert all(lv["ratio_unbatched"] > 0 for lv in batched)
    peer = result["peer"]
    if peer["status"] == "measured":
        assert [lv["jobs"] > 0 and lv["audio_s_per_s"] > 0 for lv in peer["levels"]] == [True] * 2
        assert all(lv["ratio_peer"] > 0 for lv in levels)
    else:
        assert peer["status"] == "n/a" and peer["reason"], peer
    assert "service batched" in run.stdout and "audio-s/s" in run.stdout
    assert "over service (unbatched): c=1" in run.stdout
