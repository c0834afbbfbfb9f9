"""The streaming model for live partials (ASR_ONLINE_MODEL): the tiny ParaformerStreaming
`make models` builds, fed in whatever pieces the client sends, gives what FunASR gives for the
same audio in its own chunks; in Turns it makes the partials, the offline model the finals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asr_service.engine.online import OnlineModel, join_text
from asr_service.live.turns import RATE, TurnDetection, Turns
from tests.conversations import VOICES, speak


@pytest.fixture(scope="module")
def online(model_assets: dict[str, Path]) -> OnlineModel:
    return OnlineModel(str(model_assets["streaming"]), "cpu", 1)


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    return speak("the meeting moved to thursday because the budget was not ready", VOICES[0])


def test_any_piece_sizes_give_funasrs_own_chunked_text(online: OnlineModel,
                                                      utterance: np.ndarray) -> None:
    stride, cache, expected = 10 * 960, {}, ""
    whole = len(utterance) // stride * stride
    for at in range(0, whole, stride):  # FunASR's own loop over 600 ms chunks
        result = online.model.generate(input=utterance[at:at + stride], cache=cache,
                                       is_final=False, chunk_size=[0, 10, 5],
                                       encoder_chunk_look_back=4, decoder_chunk_look_back=1)
        expected = join_text(expected, result[0]["text"] if result else "")
    decoder, got = online.decoder(), ""
    for at in range(0, whole, 1234):  # odd pieces, as a client's messages come
        got = join_text(got, decoder.feed(utterance[at:min(at + 1234, whole)]))
    assert got and got == expected


def test_partials_come_from_the_stream_and_finals_from_the_offline_model(
        online: OnlineModel, utterance: np.ndarray) -> None:
    offline_calls: list[int] = []

    def offline(samples: np.ndarray) -> str:
        offline_calls.append(len(samples))
        return "the final"

    turns = Turns(offline, TurnDetection(), online=online.decoder())
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), utterance,
                            np.zeros(RATE, np.float32)])
    events = []
    for at in range(0, len(audio), 1600):
        events += turns.append(audio[at:at + 1600])
    partials = [e for e in events if e["type"] == "partial"]
    assert len(partials) >= 3
    assert all(b["text"].startswith(a["text"]) for a, b in zip(partials, partials[1:],
                                                                strict=False))
    started = next(e for e in events if e["type"] == "speech_started")
    # The first words come one 600 ms chunk after speech starts (plus the padding kept).
    assert partials[0]["at_ms"] - started["start_ms"] <= 1000, (started, partials[0])
    finals = [e for e in events if e["type"] == "final"]
    assert [f["text"] for f in finals] == ["the final"]
    assert len(offline_calls) == 1  # no re-decoding for partials: one offline call, the final
