"""Output formats, all derived from the one normalized transcript (never by the engine).

The transcript is the stored result: text, segments (start/end in seconds, text), language,
duration_s and, when the engine gives word times, words. Subtitles split long segments into
cues of at most MAX_LINES lines of MAX_LINE_CHARS columns (the BBC and Netflix guidance is
~37-42 per line, 2 lines), cut at sentence, then clause, then word boundaries; text without
spaces (Chinese, Japanese) is cut between characters.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import srt
import webvtt
from webvtt.models import Timestamp

FORMATS = ("json", "txt", "srt", "vtt")
MAX_LINE_CHARS = 42
MAX_LINES = 2
_CONTENT_TYPES = {"json": "application/json", "txt": "text/plain; charset=utf-8",
                  "srt": "application/x-subrip; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}
_CLOSERS = "\"'”’)]}）」』】》〉"
_SENTENCE_END = re.compile(rf"[.!?。！？…][{re.escape(_CLOSERS)}]*$")
_CLAUSE_END = re.compile(rf"[,;:，；：、][{re.escape(_CLOSERS)}]*$")
# Scripts written without spaces (CJK ideographs, kana, CJK and full-width punctuation): a line
# may break between any two of their characters. Hangul is not here: Korean breaks at spaces.
_NO_SPACES = re.compile(r"[\u2e80-\u2fff\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                        r"\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]")
# No line starts with a closing mark or a small kana, nor ends with an opening one (kinsoku).
_NO_LINE_START = ",.!?;:%…、。，．！？；：ー々ぁぃぅぇぉっゃゅょァィゥェォッャュョ" + _CLOSERS
_NO_LINE_END = "([{（「『【《〈“‘"

Unit = tuple[str, str]  # a run no line may break inside: (separator before it, "" or " "; text)


@dataclass(frozen=True)
class Cue:
    """One subtitle: start and end in seconds, its lines, and who speaks (when diarized)."""

    start: float
    end: float
    lines: list[str]
    speaker: str | None = None


def iso_time(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 UTC date-time (None stays None): every API and webhook time."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def render(result: dict[str, Any], fmt: str) -> tuple[str, str]:
    """The transcript in one of FORMATS: (body, content type)."""
    writers = {"json": lambda r: json.dumps(r, ensure_ascii=False), "txt": to_text,
               "srt": to_srt, "vtt": to_vtt}
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return writers[fmt](result), _CONTENT_TYPES[fmt]


def to_text(result: dict[str, Any]) -> str:
    """The plain text, with a final newline; diarized: one line per turn, "Speaker 1: ..."."""
    if result.get("speakers") is None:
        return str(result.get("text") or "") + "\n"
    turns: list[tuple[str, list[str]]] = []
    for segment in result.get("segments") or []:
        text, speaker = _clean(str(segment.get("text") or "")), str(segment.get("speaker"))
        if not text:
            continue
        if turns and turns[-1][0] == speaker:
            turns[-1][1].append(text)
        else:
            turns.append((speaker, [text]))
    return "".join(f"{speaker}: {' '.join(texts)}\n" for speaker, texts in turns)


def to_srt(result: dict[str, Any]) -> str:
    """SubRip subtitles, composed by the `srt` library."""
    return srt.compose([srt.Subtitle(index=i, start=timedelta(seconds=c.start),
                                     end=timedelta(seconds=c.end),
                                     content=_prefixed(c.lines,
                                                       f"[{c.speaker}] " if c.speaker else ""))
                        for i, c in enumerate(cues(result), start=1)], reindex=False)


def _prefixed(lines: list[str], prefix: str) -> str:
    """The cue's text, its first line after `prefix` (a cue is never empty)."""
    return "\n".join([prefix + lines[0], *lines[1:]])


def to_vtt(result: dict[str, Any]) -> str:
    """WebVTT subtitles, composed by `webvtt-py`."""
    document = webvtt.WebVTT()
    for cue in cues(result):
        # Caption takes timestamps as text only; the library's Timestamp writes them. Its writer
        # escapes nothing, and cue text may not hold a raw "&" or "<" (a "<b>" would be a tag).
        lines = [line.replace("&", "&amp;").replace("<", "&lt;") for line in cue.lines]
        text = _prefixed(lines, f"<v {cue.speaker}>" if cue.speaker else "")  # a voice span
        document.captions.append(webvtt.Caption(str(Timestamp.from_seconds(cue.start)),
                                                str(Timestamp.from_seconds(cue.end)),
                                                text.split("\n")))
    return document.content


def cues(result: dict[str, Any], max_line_chars: int = MAX_LINE_CHARS,
         max_lines: int = MAX_LINES) -> list[Cue]:
    """The subtitle cues of a transcript: in order, never overlapping, never empty. A cue
    never spans two segments, so a diarized transcript's cues change speaker where its
    segments do; the speaker's label takes its room on the first line."""
    out: list[Cue] = []
    last_ms = 0  # times are whole milliseconds, so SRT and WebVTT write the same ones
    words = _Words(result.get("words") or [])
    for segment in result.get("segments") or []:
        text = _clean(str(segment.get("text") or ""))
        if not text:
            continue
        start = max(round(float(segment["start"]) * 1000), last_ms)
        end = max(round(float(segment["end"]) * 1000), start + 1)
        speaker = segment.get("speaker")
        width = max(8, max_line_chars - (len(str(speaker)) + 3 if speaker else 0))
        pieces = _split(_units(text, width), width, max_lines)
        times = (_word_times(pieces, text, words, start, end)
                 or _shared_times(pieces, start, end))
        for piece, (lo, hi) in zip(pieces, times, strict=True):
            out.append(Cue(lo / 1000, hi / 1000, _balanced(piece, width), speaker))
        last_ms = times[-1][1]
    return out


def _clean(text: str) -> str:
    # A cue's text never holds a blank line, or an arrow that would fake a cue's timing line.
    return re.sub(r"\s+", " ", text.replace("-->", "→")).strip()


def _width(text: str) -> int:
    # Columns, not characters: a CJK character is drawn twice as wide as a Latin letter, so it
    # counts 2 (a 42-column line holds 21 Chinese characters). No ASCII character is wide.
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _units(text: str, width: int) -> list[Unit]:
    """The text's runs that no line breaks inside: words, and single characters of CJK."""
    units: list[Unit] = []
    for word in text.split(" "):
        sep, begin = (" " if units else ""), 0
        if word.isascii() and 0 < len(word) <= width:  # no CJK, fits a line: one unit
            units.append((sep, word))
            continue
        for i in range(1, len(word) + 1):
            # Inside a word only where CJK allows, or where the word is longer than a line.
            if (i == len(word) or _breakable(word[i - 1], word[i])
                    or _width(word[begin:i + 1]) > width):
                units.append((sep, word[begin:i]))
                sep, begin = "", i
    return units


def _breakable(before: str, after: str) -> bool:
    return (bool(_NO_SPACES.match(before) or _NO_SPACES.match(after))
            and after not in _NO_LINE_START and before not in _NO_LINE_END)


def _wrap(units: list[Unit], width: int, limit: int = 0) -> list[list[Unit]]:
    """Greedy lines of at most `width` columns (the first `limit` lines only, when given)."""
    lines: list[list[Unit]] = []
    line: list[Unit] = []
    used = 0
    for sep, text in units:
        grow = _width(text) + (len(sep) if line else 0)
        if line and used + grow > width:
            lines.append(line)
            if len(lines) == limit:
                return lines
            line, used, grow = [], 0, _width(text)
        line.append((sep, text))
        used += grow
    return lines + [line] if line else lines


def _join(units: list[Unit]) -> str:
    return "".join(sep + text for sep, text in units).strip()


def _split(units: list[Unit], width: int, max_lines: int) -> list[list[Unit]]:
    """Consecutive pieces that each wrap into at most max_lines lines, cut where it reads best."""
    pieces = []
    while units:
        fit = sum(len(line) for line in _wrap(units, width, limit=max_lines))
        cut = fit if fit == len(units) else _cut(units[:fit])
        pieces.append(units[:cut])
        units = units[cut:]
    return pieces


def _cut(units: list[Unit]) -> int:
    """Where to end a cue that can hold these units: sentence, then clause, then any unit end."""
    room = _width(_join(units))
    for mark in (_SENTENCE_END, _CLAUSE_END):
        for end in range(len(units), 0, -1):
            # Not so early that the cue is left mostly empty.
            if mark.search(units[end - 1][1]) and 3 * _width(_join(units[:end])) > room:
                return end
    return len(units)  # a space, or between two CJK characters


def _balanced(units: list[Unit], width: int) -> list[str]:
    """The piece's lines, as even as the same number of lines allows."""
    count = len(_wrap(units, width))
    # The narrowest width that still gives `count` lines. A narrower greedy wrap never has
    # fewer lines, so a bisection finds it in ~6 wraps instead of one wrap per column.
    narrow, wide = 1, width
    while narrow < wide:
        middle = (narrow + wide) // 2
        if len(_wrap(units, middle)) == count:
            wide = middle
        else:
            narrow = middle + 1
    return [_join(line) for line in _wrap(units, wide)]


def _shared_times(pieces: list[list[Unit]], start: int, end: int) -> list[tuple[int, int]]:
    """The segment's time (ms), shared out by the pieces' character counts."""
    sizes = [len(_join(piece)) for piece in pieces]
    bounds = [start + round((end - start) * sum(sizes[:i]) / sum(sizes))
              for i in range(len(pieces) + 1)]
    return _ordered(list(zip(bounds, bounds[1:], strict=False)), start, end)


class _Words:
    """A transcript's words, looked up by the time (ms) of their midpoints.

    Sorted once per transcript, so each segment costs a bisect plus its own words, not a scan
    of all of them: a 4 h transcript with words has ~35,000 of them in ~2,900 segments.
    """

    def __init__(self, words: list[dict[str, Any]]) -> None:
        self.words = words
        self.midpoints: list[float] | None = None  # built on first use, like the scan it replaces
        self.order: list[int] = []

    def between(self, start: int, end: int) -> list[dict[str, Any]]:
        """The words whose midpoint lies in [start, end] ms, in the transcript's order."""
        if self.midpoints is None:
            keyed = [(500 * (float(w["start"]) + float(w["end"])), i)
                     for i, w in enumerate(self.words)]
            # A NaN time is inside no segment (every comparison is false), and it would
            # scramble the sort.
            keyed = sorted(k for k in keyed if not math.isnan(k[0]))
            self.midpoints, self.order = [mid for mid, _ in keyed], [i for _, i in keyed]
        lo = bisect.bisect_left(self.midpoints, start)
        hi = bisect.bisect_right(self.midpoints, end)
        return [self.words[i] for i in sorted(self.order[lo:hi])]


def _word_times(pieces: list[list[Unit]], text: str, words: _Words, start: int,
                end: int) -> list[tuple[int, int]] | None:
    """Cue times (ms) from the engine's word times, when those words spell the segment."""
    inside = words.between(start, end)
    letters: list[tuple[float, float]] = []  # each letter's time: its word's, shared out
    spelled = ""
    for word in inside:
        # Only letters and digits count, and _clean changes no letter: it need not run here.
        chars = [c for c in str(word["word"]) if c.isalnum()]
        spelled += "".join(chars)
        lo, hi = 1000 * float(word["start"]), 1000 * float(word["end"])
        letters += [(lo + (hi - lo) * k / len(chars), lo + (hi - lo) * (k + 1) / len(chars))
                    for k in range(len(chars))]
    counts = [sum(c.isalnum() for c in _join(piece)) for piece in pieces]
    if not inside or 0 in counts or spelled.casefold() != "".join(
            c for c in text if c.isalnum()).casefold():
        return None  # punctuation aside, the words are not this segment's text
    times, first = [], 0
    for count in counts:
        times.append((round(letters[first][0]), round(letters[first + count - 1][1])))
        first += count
    return _ordered(times, start, end)


def _ordered(times: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Within the segment where it can, in order, never overlapping, each at least 1 ms."""
    out: list[tuple[int, int]] = []
    for lo, hi in times:
        lo = max(lo, start, out[-1][1] if out else start)
        out.append((lo, max(min(hi, end), lo + 1)))
    return out
