"""OpenAI's transcription bodies (json, verbose_json, diarized_json), derived from the one
normalized transcript as formats.py derives the subtitles."""

from __future__ import annotations

import math
import string
from typing import Any


def openai_json(result: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `json` transcription body."""
    return {"text": str(result.get("text") or ""), "usage": _usage(result)}


def openai_verbose(result: dict[str, Any], words: bool) -> dict[str, Any]:
    """OpenAI's `verbose_json` body; `words` only when asked, empty without engine word times."""
    body: dict[str, Any] = {
        "task": "transcribe", "language": result.get("language") or "",
        "duration": float(result.get("duration_s") or 0.0),
        "text": str(result.get("text") or ""),
        "segments": [
            {"id": i, "seek": 0, "start": float(s["start"]), "end": float(s["end"]),
             "text": str(s.get("text") or ""), "tokens": [], "temperature": 0.0,
             "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0,
             **({"speaker": s["speaker"]} if s.get("speaker") else {})}
            for i, s in enumerate(result.get("segments") or [])],
        "usage": _usage(result),
    }
    if words:
        body["words"] = [{"word": str(w["word"]), "start": float(w["start"]),
                          "end": float(w["end"]),
                          **({"speaker": w["speaker"]} if w.get("speaker") else {})}
                         for w in result.get("words") or []]
    return body


def _usage(result: dict[str, Any]) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(float(result.get("duration_s") or 0.0))}


def openai_diarized(result: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `diarized_json` body: segments with a speaker each, named A, B, ... in the
    order they first speak."""
    letters: dict[str, str] = {}
    segments = []
    for i, s in enumerate(result.get("segments") or []):
        name = str(s.get("speaker") or "")
        letter = letters.setdefault(name, _letter(len(letters)))
        segments.append({"type": "transcript.text.segment", "id": f"seg_{i:03d}",
                         "start": float(s["start"]), "end": float(s["end"]),
                         "text": str(s.get("text") or ""), "speaker": letter})
    return {"task": "transcribe", "duration": float(result.get("duration_s") or 0.0),
            "text": str(result.get("text") or ""), "segments": segments,
            "usage": _usage(result)}


def _letter(index: int) -> str:
    """A, B, ..., Z, then AA, AB, ..."""
    letters = string.ascii_uppercase
    return letters[index] if index < 26 else _letter(index // 26 - 1) + letters[index % 26]
