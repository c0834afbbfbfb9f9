"""Session fixtures shared by every test directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.assets import ensure_assets


@pytest.fixture(scope="session")
def model_assets() -> dict[str, Path]:
    """The tiny Paraformer and the real fsmn-vad under ./models, built once if missing."""
    return ensure_assets(Path(__file__).resolve().parents[1] / "models")
