"""Utterances from a live stream of samples: where speech starts and stops (WebRTC's VAD, or
the client's commits), partial text while it goes on, the final text once it ended.

Protocol-neutral: it returns events (plain dicts) that the API translates into OpenAI's or
FunASR's messages. A final is the engine's transcription of the utterance's samples alone,
so it equals what the file path gives for the same segment.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from asr_service.engine.online import join_text

RATE = 16_000
FRAME_MS = 30  # WebRTC's VAD takes 10, 20 or 30 ms frames
FRAME = RATE * FRAME_MS // 1000
MAX_TURN_S = 30.0
"""An utterance longer than this is cut (Whisper's window; re-decoding a growing buffer for
partials costs more with every second of it)."""

Transcribe = Callable[[np.ndarray], str]
Event = dict


class Online(Protocol):
    """A streaming decoder (engine/online.py): feed() returns the text the audio added."""

    def feed(self, samples: np.ndarray) -> str: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI's `turn_detection`: server_vad ends an utterance after `silence_ms` of silence
    and keeps `padding_ms` before its speech; None (vad=False) leaves it to the client's
    commits."""

    vad: bool = True
    silence_ms: int = 500
    padding_ms: int = 300
    aggressiveness: int = 2
    """WebRTC VAD's 0 (least) to 3 (most eager to call a frame non-speech)."""


def common_prefix(a: str, b: str) -> str:
    """The longest prefix of both, cut back to a word boundary where the text has spaces."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    prefix = a[:n]
    if n < len(a) and n < len(b) and " " in prefix:  # do not end inside a word
        prefix = prefix[:prefix.rfind(" ") + 1]
    return prefix


class Turns:
    """Feeds 16 kHz float32 samples through; returns the events they cause.

    Events: {"type": "speech_started", "item", "start_ms"}; {"type": "partial", "item", "text",
    "at_ms"} (the stable text so far, decoded from the audio up to at_ms: it only grows);
    {"type": "speech_stopped", "item", "end_ms"}; {"type": "final", "item", "text", "start_ms",
    "end_ms"}; {"type": "cleared"}. Items are numbered from `first_item`; times count from
    `offset` samples.
    """

    def __init__(self, transcribe: Transcribe, detection: TurnDetection, partial_ms: int = 300,
                 first_item: int = 0, offset: int = 0, online: Online | None = None) -> None:
        import webrtcvad  # the worker's dependency: the API never runs a session

        self.transcribe = transcribe
        self.online = online
        """A streaming decoder (2-pass: partials from it, finals from `transcribe`); None:
        partials re-decode the open utterance."""
        self.detection = detection
        self.partial_samples = RATE * partial_ms // 1000
        self.item = first_item
        self.position = offset
        """Samples seen since the session began (times in events count from its start)."""
        self._vad = webrtcvad.Vad(detection.aggressiveness)
        self._pending = np.zeros(0, dtype=np.float32)  # less than a frame, not yet classified
        self._before: deque[np.ndarray] = deque(maxlen=max(1, detection.padding_ms // FRAME_MS))
        self._turn: list[np.ndarray] = []
        self._turn_start = 0
        self._turn_samples = 0
        self._silent_frames = 0
        self._since_partial = 0
        self._decodes: list[str] = []  # the last two decodes of the open turn
        self._stable = ""
        self._next_partial_at = 0.0
        self.resume = offset
        """Where a worker that takes the session over starts (with item number `self.item`):
        after the last final, or, between utterances, at the padding kept before the next
        one. Nothing earlier is needed again, so the input stream is trimmed up to it."""

    @property
    def speaking(self) -> bool:
        return bool(self._turn)

    @property
    def heard(self) -> int:
        """Samples appended so far (the next append's first sample is this one)."""
        return self.position + len(self._pending)

    def append(self, samples: np.ndarray) -> list[Event]:
        """More audio; with VAD, utterances start and end inside it."""
        if not self.detection.vad:
            start, self.position = self.position, self.position + len(samples)
            return self._grow(samples, speech=True, start=start)
        events: list[Event] = []
        data = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        whole = len(data) - len(data) % FRAME
        for at in range(0, whole, FRAME):
            events += self._frame(data[at:at + FRAME])
        self._pending = data[whole:].copy()
        return events

    def commit(self) -> list[Event]:
        """The client says the utterance ended: final text for what the buffer holds."""
        pending, self._pending = self._pending, np.zeros(0, dtype=np.float32)
        start, self.position = self.position, self.position + len(pending)
        events = []
        if pending.size and (self.speaking or not self.detection.vad):
            events = self._grow(pending, speech=False, start=start)
        if not self.speaking:
            return [*events, {"type": "error", "code": "input_audio_buffer_commit_empty",
                              "message": "nothing to commit: the buffer holds no speech"}]
        return [*events, *self._end(self.position)]

    def clear(self) -> list[Event]:
        """Drop the open utterance unheard (a takeover resumes after it, too)."""
        self.position += len(self._pending)
        self._pending = np.zeros(0, dtype=np.float32)
        self._reset()
        self.resume = self.position
        return [{"type": "cleared"}]

    def _frame(self, frame: np.ndarray) -> list[Event]:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        speech = self._vad.is_speech(pcm, RATE)
        start = self.position
        self.position += len(frame)
        if not self.speaking:
            if not speech:
                self._before.append(frame)
                # Silence before the padding can never be part of an utterance: a takeover
                # need not hear it again (and the input stream of a silent session stays
                # bounded by the padding).
                self.resume = max(self.resume, self.position - len(self._before) * FRAME)
                return []
            padding = list(self._before)
            self._before.clear()
            began = start - sum(len(p) for p in padding)
            return self._grow(np.concatenate([*padding, frame]), speech=True, start=began)
        self._silent_frames = 0 if speech else self._silent_frames + 1
        events = self._grow(frame, speech=speech, start=start)
        if self.speaking and self._silent_frames * FRAME_MS >= self.detection.silence_ms:
            events += self._end(self.position)
        return events

    def _grow(self, samples: np.ndarray, speech: bool, start: int) -> list[Event]:
        """Add samples (the caller has counted them in `position`) to the open utterance,
        opening one at `start` if none is; partial text as it goes."""
        events: list[Event] = []
        if not samples.size:
            return events
        if not self.speaking:
            self._turn_start = max(0, start)
            events.append({"type": "speech_started", "item": self._item_id(),
                           "start_ms": self._ms(self._turn_start)})
        self._turn.append(samples)
        self._turn_samples += len(samples)
        self._since_partial += len(samples)
        if self._turn_samples >= MAX_TURN_S * RATE:
            return events + self._end(self._turn_start + self._turn_samples)
        if self.online is not None:
            return events + self._stream(samples)
        if speech and self._since_partial >= self.partial_samples \
                and time.monotonic() >= self._next_partial_at:
            self._since_partial = 0
            began = time.monotonic()
            events += self._partial()
            # A decode that took d seconds waits d more before the next: partials use at most
            # half the process, so a slow model (Whisper on a CPU) never falls behind the audio.
            self._next_partial_at = 2 * time.monotonic() - began
        return events

    def _stream(self, samples: np.ndarray) -> list[Event]:
        """The streaming model's text for this audio of the open turn (it only grows)."""
        assert self.online is not None
        try:
            added = self.online.feed(samples)
        except Exception:  # a partial is not worth the session: the final still comes
            added = ""
        if not added:
            return []
        self._stable = join_text(self._stable, added)
        return [{"type": "partial", "item": self._item_id(), "text": self._stable,
                 "at_ms": self._ms(self.position)}]

    def reconfigure(self, detection: TurnDetection, partial_ms: int) -> None:
        """New turn detection and partial cadence (between utterances only)."""
        if self.speaking:
            return
        self.detection = detection
        self.partial_samples = RATE * partial_ms // 1000
        self._vad.set_mode(detection.aggressiveness)
        self._before = deque(self._before, maxlen=max(1, detection.padding_ms // FRAME_MS))

    def _partial(self) -> list[Event]:
        """Decode the turn so far; publish only what two decodes in a row agree on (local
        agreement, as whisper_streaming does): the partial text never takes words back."""
        text = self.transcribe(np.concatenate(self._turn))
        self._decodes = [*self._decodes[-1:], text]
        agreed = common_prefix(*self._decodes) if len(self._decodes) == 2 else ""
        if len(agreed) > len(self._stable) and agreed.startswith(self._stable):
            self._stable = agreed
            return [{"type": "partial", "item": self._item_id(), "text": agreed,
                     "at_ms": self._ms(self.position)}]
        return []

    def _end(self, end: int) -> list[Event]:
        item = self._item_id()
        audio = np.concatenate(self._turn)
        start = self._turn_start
        self._reset()
        self.item += 1
        self.resume = end
        return [{"type": "speech_stopped", "item": item, "end_ms": self._ms(end)},
                {"type": "final", "item": item, "text": self.transcribe(audio),
                 "start_ms": self._ms(start), "end_ms": self._ms(end)}]

    def _reset(self) -> None:
        if self.online is not None:
            self.online.reset()
        self._turn, self._turn_samples, self._silent_frames = [], 0, 0
        self._since_partial, self._decodes, self._stable = 0, [], ""

    def _item_id(self) -> str:
        return f"item_{self.item:04d}"

    @staticmethod
    def _ms(samples: int) -> int:
        return samples * 1000 // RATE
