"""Speaker labels onto a transcript: each segment the speaker of most of its windows, each
word the speaker of the window nearest to it; a segment whose words change speaker is split
there (engines with word times only)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from asr_service.diarize.clustering import Window
from asr_service.diarize.spec import speaker_name
from asr_service.engine.base import Segment, Transcript, Word

MIN_RUN_MS = 1000
"""A run of words shorter than this keeps the speaker of the run before it: one window's
slip does not split a sentence."""


def apply(transcript: Transcript, windows: list[Window], labels: np.ndarray) -> Transcript:
    """The transcript with `speaker` on every segment and word (segments are the regions the
    windows were taken from, in order)."""
    by_region: dict[int, list[int]] = {}
    for k, window in enumerate(windows):
        by_region.setdefault(window.region, []).append(k)
    words_left = sorted(transcript.words, key=lambda w: w.start_ms)
    segments: list[Segment] = []
    words: list[Word] = []
    seen: set[int] = set()
    for i, segment in enumerate(transcript.segments):
        ks = by_region.get(i, [])
        majority = int(np.bincount(labels[ks]).argmax()) if ks else 0
        centres = np.array([segment.start_ms + windows[k].centre_offset_ms for k in ks])
        mine = [w for w in words_left if id(w) not in seen
                and segment.start_ms <= (w.start_ms + w.end_ms) / 2 <= segment.end_ms]
        seen.update(id(w) for w in mine)
        marked = [replace(w, speaker=speaker_name(_nearest(w, centres, labels[ks], majority)))
                  for w in mine]
        runs = _runs(_smoothed(marked))
        if len(runs) > 1:
            segments += [Segment(run[0].start_ms, run[-1].end_ms,
                                 " ".join(w.word for w in run), run[0].speaker)
                         for run in runs]
        else:
            name = runs[0][0].speaker if runs else speaker_name(majority)
            segments.append(replace(segment, speaker=name))
            marked = [replace(w, speaker=name) for w in marked]
        words += marked if len(runs) <= 1 else [w for run in runs for w in run]
    words += [replace(w, speaker=None) for w in transcript.words if id(w) not in seen]
    words.sort(key=lambda w: (w.start_ms, w.end_ms))
    return replace(transcript, segments=segments, words=words)


def _nearest(word: Word, centres: np.ndarray, labels: np.ndarray, fallback: int) -> int:
    if not len(centres):
        return fallback
    return int(labels[int(np.abs(centres - (word.start_ms + word.end_ms) / 2).argmin())])


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
    return replace(
        transcript,
        segments=[replace(s, speaker=names.get(s.speaker or "")) for s in transcript.segments],
        words=[replace(w, speaker=names.get(w.speaker or "")) for w in transcript.words],
        speakers=list(names.values()))
