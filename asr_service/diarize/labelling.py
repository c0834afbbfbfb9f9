"""Speaker labels onto a transcript: each word the speaker of the window nearest to it, each
segment the speaker of its words (split where they change) or, without words, of most of the
windows inside it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from asr_service.diarize.spec import speaker_name
from asr_service.engine.base import Segment, Transcript, Word

MIN_RUN_MS = 1000
"""A run of words shorter than this keeps the speaker of the run before it: one window's
slip does not split a sentence."""
MERGE_GAP_MS = 800
"""Words closer than this belong to one region of speech (the windows' regions, with words):
300 ms cut turns into regions too short to embed well (faster-whisper over-counted 6 of 15
conversations), 800 ms counted all 15 right."""


def speech_regions(transcript: Transcript) -> list[tuple[int, int]]:
    """Where the windows go: the words' spans merged across short gaps when the engine gives
    word times (its segments may run over pauses and turns), else the segments (VAD's)."""
    if not transcript.words:
        return [(s.start_ms, s.end_ms) for s in transcript.segments]
    regions: list[list[int]] = []
    for word in sorted(transcript.words, key=lambda w: w.start_ms):
        if regions and word.start_ms - regions[-1][1] <= MERGE_GAP_MS:
            regions[-1][1] = max(regions[-1][1], word.end_ms)
        else:
            regions.append([word.start_ms, word.end_ms])
    return [(lo, hi) for lo, hi in regions]


def apply(transcript: Transcript, centres_ms: np.ndarray, labels: np.ndarray) -> Transcript:
    """The transcript with `speaker` on every segment and word (windows centred at
    centres_ms, ascending, with these labels); a segment with words spans its words."""
    segments: list[Segment] = []
    words: list[Word] = []
    pending = sorted(transcript.words, key=lambda w: (w.start_ms, w.end_ms))
    at = 0
    for segment in transcript.segments:
        mine: list[Word] = []
        while at < len(pending) and _mid(pending[at]) <= segment.end_ms:
            mine.append(pending[at])
            at += 1
        inside = labels[(centres_ms >= segment.start_ms) & (centres_ms <= segment.end_ms)]
        majority = (int(np.bincount(inside).argmax()) if inside.size
                    else _nearest((segment.start_ms + segment.end_ms) / 2, centres_ms, labels))
        runs = _runs(_smoothed([replace(w, speaker=speaker_name(
            _nearest(_mid(w), centres_ms, labels, majority))) for w in mine]))
        if not runs:
            segments.append(replace(segment, speaker=speaker_name(majority)))
            continue
        if len(runs) == 1:
            segments.append(replace(segment, start_ms=runs[0][0].start_ms,
                                    end_ms=runs[0][-1].end_ms, speaker=runs[0][0].speaker))
        else:
            segments += [Segment(run[0].start_ms, run[-1].end_ms,
                                 " ".join(w.word for w in run), run[0].speaker) for run in runs]
        words += [w for run in runs for w in run]
    words += [replace(w, speaker=speaker_name(_nearest(_mid(w), centres_ms, labels)))
              for w in pending[at:]]
    return replace(transcript, segments=segments, words=words)


def _mid(word: Word) -> float:
    return (word.start_ms + word.end_ms) / 2


def _nearest(ms: float, centres_ms: np.ndarray, labels: np.ndarray, fallback: int = 0) -> int:
    if not len(centres_ms):
        return fallback
    return int(labels[int(np.abs(centres_ms - ms).argmin())])


def _smoothed(words: list[Word]) -> list[Word]:
    """Runs shorter than MIN_RUN_MS take the speaker of the run before them (the first run
    takes the next one's)."""
    runs = _runs(words)
    while len(runs) > 1:
        short = [i for i, run in enumerate(runs) if run[-1].end_ms - run[0].start_ms < MIN_RUN_MS]
        if not short:
            break
        i = short[0]
        into = runs[i - 1 if i else 1][0].speaker
        runs[i] = [replace(w, speaker=into) for w in runs[i]]
        runs = _runs([w for run in runs for w in run])
    return [w for run in runs for w in run]


def _runs(words: list[Word]) -> list[list[Word]]:
    """Consecutive words of one speaker."""
    runs: list[list[Word]] = []
    for word in words:
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    return runs


def renumbered(transcript: Transcript) -> Transcript:
    """Speakers named in the order they first speak in the segments, and listed."""
    names: dict[str, str] = {}
    for segment in transcript.segments:
        if segment.speaker is not None:
            names.setdefault(segment.speaker, speaker_name(len(names)))
    for word in transcript.words:  # a word outside every segment (rare): its own name
        if word.speaker is not None:
            names.setdefault(word.speaker, speaker_name(len(names)))
    return replace(
        transcript,
        segments=[replace(s, speaker=names.get(s.speaker or "")) for s in transcript.segments],
        words=[replace(w, speaker=names.get(w.speaker or "")) for w in transcript.words],
        speakers=list(names.values()))
