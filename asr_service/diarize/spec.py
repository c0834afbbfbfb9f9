"""What a job asks of diarization: a known number of speakers, or bounds on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MAX_SPEAKERS = 20
"""The most speakers a job may ask for (num_speakers, min_speakers, max_speakers)."""


@dataclass(frozen=True)
class DiarizeSpec:
    """How many speakers to find: exactly num_speakers when given, else as many as the voices
    differ, kept within [min_speakers, max_speakers]."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def to_record(self) -> dict[str, int]:
        """The spec as a job record stores it (given fields only)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> DiarizeSpec | None:
        """The spec of a job record's `diarization` field (None: not asked for)."""
        if record is None:
            return None
        return cls(**{k: int(v) for k, v in record.items() if k in cls.__dataclass_fields__})

    def clamp(self, found: int, units: int) -> int:
        """The number of speakers to report when clustering found `found` among `units`
        windows: num_speakers if given, else `found` within the bounds (never above units)."""
        if self.num_speakers is not None:
            return max(1, min(self.num_speakers, units))
        low = self.min_speakers or 1
        high = self.max_speakers or max(found, low)
        return max(1, min(max(found, low), high, units))


def speaker_name(index: int) -> str:
    """The label of the index-th speaker to speak (0-based): "Speaker 1", "Speaker 2", ..."""
    return f"Speaker {index + 1}"
