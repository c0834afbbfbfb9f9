"""Utterances from a live stream: WebRTC VAD turns on espeak-ng speech, partials that only
grow, finals of each utterance's samples alone, commits, clears and resumes."""

from __future__ import annotations

import numpy as np
import pytest

from asr_service.live.turns import RATE, TurnDetection, Turns, common_prefix
from tests.conversations import VOICES, speak


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def two_utterances() -> tuple[np.ndarray, list[np.ndarray]]:
    first = speak("the meeting moved to thursday", VOICES[0])
    second = speak("please send the notes after lunch", VOICES[1])
    return np.concatenate([silence(0.5), first, silence(1.0), second, silence(1.0)]), \
        [first, second]


class Recorder:
    """Stands in for the engine: records what it was asked and answers with a word count."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, samples: np.ndarray) -> str:
        self.calls.append(len(samples))
        return " ".join(f"w{i}" for i in range(len(samples) // 4000))


def feed(turns: Turns, audio: np.ndarray, chunk_s: float = 0.1) -> list[dict]:
    step, events = int(chunk_s * RATE), []
    for at in range(0, len(audio), step):
        events += turns.append(audio[at:at + step])
    return events


def test_each_utterance_is_one_turn_with_growing_partials_and_a_final(two_utterances) -> None:
    audio, spoken = two_utterances
    engine = Recorder()
    events = feed(Turns(engine, TurnDetection(silence_ms=500)), audio)

    kinds = [e["type"] for e in events if e["type"] != "partial"]
    assert kinds == ["speech_started", "speech_stopped", "final"] * 2, kinds
    finals = [e for e in events if e["type"] == "final"]
    assert [f["item"] for f in finals] == ["item_0000", "item_0001"]
    for final, speech in zip(finals, spoken, strict=True):
        heard_s = (final["end_ms"] - final["start_ms"]) / 1000
        # The utterance, its 300 ms of padding and the 500 ms of silence that ended it.
        assert len(speech) / RATE < heard_s < len(speech) / RATE + 1.0, (final, len(speech))
    assert finals[0]["end_ms"] < finals[1]["start_ms"]
    for item in ("item_0000", "item_0001"):
        texts = [e["text"] for e in events if e["type"] == "partial" and e["item"] == item]
        assert texts, f"no partial for {item}"
        pairs = zip(texts, texts[1:], strict=False)
        assert all(b.startswith(a) and len(b) > len(a) for a, b in pairs)


def test_without_vad_the_client_commits_and_an_empty_commit_is_an_error() -> None:
    turns = Turns(Recorder(), TurnDetection(vad=False))
    assert turns.commit()[-1]["code"] == "input_audio_buffer_commit_empty"
    events = turns.append(silence(1.0)) + turns.append(silence(0.5))
    assert events[0] == {"type": "speech_started", "item": "item_0000", "start_ms": 0}
    final = turns.commit()[-1]
    assert final["type"] == "final" and (final["start_ms"], final["end_ms"]) == (0, 1500)
    assert turns.resume == int(1.5 * RATE) and turns.item == 1
    assert turns.append(silence(0.2))[0]["item"] == "item_0001"
    assert turns.clear() == [{"type": "cleared"}] and not turns.speaking
    # A takeover resumes after what was cleared: it is not heard again.
    assert turns.resume == int(1.7 * RATE) and turns.item == 1


def test_a_resumed_session_numbers_on_and_counts_time_from_the_start(two_utterances) -> None:
    audio, _ = two_utterances
    whole = feed(Turns(Recorder(), TurnDetection()), audio)
    first_final = next(e for e in whole if e["type"] == "final")
    resume = first_final["end_ms"] * RATE // 1000
    # A takeover: a new Turns from the resume point, fed the audio after it.
    rest = feed(Turns(Recorder(), TurnDetection(), first_item=1, offset=resume), audio[resume:])
    finals = [e for e in rest if e["type"] == "final"]
    assert [f["item"] for f in finals] == ["item_0001"]
    expected = [e for e in whole if e["type"] == "final"][1]
    # WebRTC's VAD smooths over a few frames: a fresh one may end the turn a little sooner.
    assert abs(finals[0]["start_ms"] - expected["start_ms"]) <= 30
    assert abs(finals[0]["end_ms"] - expected["end_ms"]) <= 300


def test_common_prefix_stops_at_a_word_boundary() -> None:
    assert common_prefix("the meeting moved", "the meeting moves") == "the meeting "
    assert common_prefix("abc", "abd") == "ab"  # no spaces (Chinese): characters
    assert common_prefix("same", "same") == "same"


def test_silence_moves_the_resume_point_so_a_silent_session_keeps_only_the_padding() -> None:
    turns = Turns(Recorder(), TurnDetection(padding_ms=300))
    for _ in range(100):  # 10 s of silence
        assert turns.append(silence(0.1)) == []
    # A takeover starts at the padding kept before the next utterance, not at the first sample.
    assert turns.heard - turns.resume <= int(0.3 * RATE) + 480
    assert turns.resume > 9 * RATE
