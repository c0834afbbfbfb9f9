"""Subtitles of long transcripts with word times: linear in the words, same bytes as the scan."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from asr_service import formats
from tests.harness import report
from tests.samples import whisper_shaped

FOUR_HOURS_S = 4 * 3600


def _scan(self: formats._Words, start: int, end: int) -> list[dict[str, Any]]:
    """What _word_times did before: every word of the transcript, for every segment."""
    return [w for w in self.words if start <= 500 * (float(w["start"]) + float(w["end"])) <= end]


def test_srt_of_a_four_hour_transcript_with_words_is_fast() -> None:
    result = whisper_shaped(FOUR_HOURS_S)

    began = time.perf_counter()
    body = formats.to_srt(result)
    took = time.perf_counter() - began

    report("srt_4h_words", segments=len(result["segments"]), words=len(result["words"]),
           to_srt_ms=round(took * 1000, 1))
    assert body.startswith("1\n00:00:00,000 --> ")
    assert body.count(" --> ") >= len(result["segments"])
    assert took < 2.0  # the goal is 200 ms; the per-segment scan took 10.6 s here


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled-words"])
def test_subtitles_are_byte_identical_to_the_scan(monkeypatch: pytest.MonkeyPatch,
                                                  shuffle: bool) -> None:
    result = whisper_shaped(600, seed=3, shuffle=shuffle)
    # Overlapping segments, a word straddling two segments, a NaN time, a misspelled segment.
    result["segments"][3]["end"] += 2.0
    result["words"].append({"word": " w1", "start": 24.8, "end": 25.2})
    result["words"].append({"word": " nan", "start": math.nan, "end": 1.0})
    result["segments"][7]["text"] = "not what was said"

    fast = (formats.to_srt(result), formats.to_vtt(result))
    monkeypatch.setattr(formats._Words, "between", _scan)
    assert (formats.to_srt(result), formats.to_vtt(result)) == fast
