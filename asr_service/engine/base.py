"""The engine interface: what every ASR backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from asr_service.errors import EngineError

SAMPLE_RATE = 16_000


def mono_samples(audio: np.ndarray) -> np.ndarray:
    """`audio` as contiguous float32 mono samples, or the EngineError every engine raises."""
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise EngineError(f"expected mono samples, got an array of shape {samples.shape}")
    return samples


def warm_up_audio() -> np.ndarray:
    """1 s of low noise: what engines transcribe once so the first job pays no lazy set-up."""
    return np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 1e-3


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: start/end in milliseconds and its text."""

    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None
    """Who spoke it ("Speaker 1", ...) when the job asked for diarization."""


@dataclass(frozen=True)
class Word:
    """A word with its times in milliseconds (engines with word timestamps only)."""

    start_ms: int
    end_ms: int
    word: str
    speaker: str | None = None
    """Who spoke it, when the job asked for diarization."""


@dataclass(frozen=True)
class Transcript:
    """The one normalized result every engine returns."""

    text: str
    segments: list[Segment]
    language: str
    model: str
    words: list[Word] = field(default_factory=list)
    speakers: list[str] | None = None
    """The speakers found, in order of first appearance (None: diarization not asked for)."""


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options; engines ignore what they cannot honour."""

    language: str = "auto"
    hotwords: list[str] = field(default_factory=list)
    turns: bool = False
    """One segment per stretch of speech the VAD found (diarization labels segments), where
    the engine would otherwise join them (FunASR without a punctuation model)."""


class Engine(Protocol):
    """An ASR backend loaded once per worker process."""

    name: str
    device: str

    def warm_up(self) -> None:
        """Run one small transcription so the first job does not pay for lazy setup."""
        ...

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe float32 mono samples at SAMPLE_RATE."""
        ...

    def transcribe_batch(
        self, items: list[tuple[np.ndarray, TranscribeOptions]]
    ) -> list[Transcript | Exception]:
        """Transcribe several recordings, in one model call where the engine can; one outcome
        per item, in order: a failed item's exception never fails the others."""
        ...


def transcribe_each(
    engine: Engine, items: list[tuple[np.ndarray, TranscribeOptions]]
) -> list[Transcript | Exception]:
    """transcribe_batch for an engine that cannot share a model call: one item after another."""
    outcomes: list[Transcript | Exception] = []
    for audio, options in items:
        try:
            outcomes.append(engine.transcribe(audio, options))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes
