"""Diarization without a worker: the clustering rules, the labels a transcript gets, the
diarized output formats, and the 422 of incoherent speaker counts."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import srt
import webvtt
from flask.testing import FlaskClient

from asr_service import formats, openai_formats
from asr_service.app import create_app
from asr_service.diarize import DiarizeSpec, clustering, labelling
from asr_service.diarize.clustering import Window
from asr_service.diarize.encoder import mel_filters
from asr_service.engine.base import Segment, Transcript, Word
from asr_service.pipeline import to_result
from asr_service.settings import Settings
from tests.samples import encode

ROOT = Path(__file__).resolve().parents[2]


def voices(*counts: int, seed: int = 0) -> np.ndarray:
    """Unit embeddings around one random direction per voice, `counts[i]` of voice i, in
    voice order."""
    rng = np.random.default_rng(seed)
    rows = []
    for count in counts:
        centre = np.abs(rng.standard_normal(256))
        for _ in range(count):
            rows.append(centre + 0.15 * np.abs(rng.standard_normal(256)))
    x = np.array(rows)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_two_distinct_voices_make_two_speakers_numbered_by_first_appearance() -> None:
    x = voices(3, 4)[[4, 0, 5, 1, 2, 6, 3]]  # voice 2 speaks first

    labels = clustering.cluster(x, DiarizeSpec())

    assert labels.tolist() == [0, 1, 0, 1, 1, 0, 0]


def test_one_voice_is_one_speaker_and_nothing_is_no_speaker() -> None:
    assert set(clustering.cluster(voices(6), DiarizeSpec()).tolist()) == {0}
    assert clustering.cluster(voices(1), DiarizeSpec()).tolist() == [0]
    assert clustering.cluster(np.zeros((0, 256)), DiarizeSpec()).tolist() == []


def test_num_speakers_and_the_bounds_override_the_threshold() -> None:
    three = voices(3, 3, 3)

    assert clustering.cluster(three, DiarizeSpec(num_speakers=2)).max() == 1
    assert clustering.cluster(three, DiarizeSpec(max_speakers=2)).max() == 1
    assert clustering.cluster(voices(6), DiarizeSpec(min_speakers=2)).max() == 1
    assert clustering.cluster(three, DiarizeSpec(num_speakers=5)).max() == 4
    assert clustering.cluster(voices(2), DiarizeSpec(num_speakers=5)).max() == 1  # <= units


def test_spec_clamp_rules() -> None:
    assert DiarizeSpec().clamp(found=3, units=10) == 3
    assert DiarizeSpec(min_speakers=4).clamp(found=3, units=10) == 4
    assert DiarizeSpec(max_speakers=2).clamp(found=3, units=10) == 2
    assert DiarizeSpec(num_speakers=2, max_speakers=9).clamp(found=7, units=10) == 2
    assert DiarizeSpec(min_speakers=4).clamp(found=1, units=3) == 3
    assert DiarizeSpec.from_record(None) is None
    assert DiarizeSpec.from_record({"max_speakers": 3}) == DiarizeSpec(max_speakers=3)
    assert DiarizeSpec(min_speakers=2).to_record() == {"min_speakers": 2}


def test_many_units_fit_a_sample_and_every_unit_gets_its_nearest_speaker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clustering, "MAX_UNITS", 10)
    x = voices(30, 30, seed=3)

    labels = clustering.cluster(x, DiarizeSpec())

    assert labels[:30].tolist() == [0] * 30 and labels[30:].tolist() == [1] * 30


def test_windows_cover_a_region_and_drop_a_mostly_empty_last_one() -> None:
    # frames of 20 ms (the encoder reads every second 10 ms mel frame): a window is 80
    assert clustering.window_starts(25) == [0]  # shorter than a window: one, padded
    assert clustering.window_starts(240) == [0, 80, 160]  # 4.8 s: hop 1.6 s
    assert clustering.window_starts(150) == [0, 80]  # the last one 87% speech: kept
    assert clustering.window_starts(125) == [0]  # a second would be 56% speech: dropped


def test_units_average_at_most_unit_windows_of_one_region() -> None:
    windows = [Window(0, f) for f in range(10)] + [Window(1, 0)]
    unit_of, units = clustering.units_of(windows, voices(11))

    assert unit_of.tolist() == [0] * clustering.UNIT_WINDOWS + [1, 1, 2]
    assert np.allclose(np.linalg.norm(units, axis=1), 1)


def transcript(*segments: Segment, words: list[Word] | None = None) -> Transcript:
    return Transcript(" ".join(s.text for s in segments), list(segments), "en", "m",
                      words or [])


def test_segments_take_their_windows_speaker_and_names_follow_first_speech() -> None:
    t = transcript(Segment(0, 3000, "hello there"), Segment(4000, 6000, "hi"),
                   Segment(7000, 9000, "bye"))
    centres = np.array([800, 1600, 4800, 7800])

    out = labelling.renumbered(labelling.apply(t, centres, np.array([1, 1, 0, 1])))

    assert [s.speaker for s in out.segments] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert out.speakers == ["Speaker 1", "Speaker 2"]


def test_a_segment_whose_words_change_speaker_is_split_there() -> None:
    words = [Word(0, 500, "one"), Word(500, 1000, "two"), Word(1000, 1500, "three"),
             Word(3000, 3500, "four"), Word(3500, 4000, "five"), Word(4000, 4500, "six")]
    t = transcript(Segment(0, 4500, "one two three four five six"), words=words)

    out = labelling.renumbered(labelling.apply(t, np.array([800, 3200]), np.array([0, 1])))

    assert [(s.text, s.speaker, s.start_ms, s.end_ms) for s in out.segments] == [
        ("one two three", "Speaker 1", 0, 1500), ("four five six", "Speaker 2", 3000, 4500)]
    assert [w.speaker for w in out.words] == ["Speaker 1"] * 3 + ["Speaker 2"] * 3


def test_a_short_run_of_words_keeps_the_speaker_around_it() -> None:
    words = [Word(i * 400, i * 400 + 400, f"w{i}") for i in range(10)]
    t = transcript(Segment(0, 4000, " ".join(w.word for w in words)), words=words)

    out = labelling.apply(t, np.array([800, 2000, 2400, 3200]), np.array([0, 1, 0, 0]))

    assert len(out.segments) == 1 and {w.speaker for w in out.words} == {"Speaker 1"}


def test_with_words_the_windows_go_over_the_words_not_the_pauses_inside_a_segment() -> None:
    words = [Word(0, 400, "a"), Word(450, 900, "b"), Word(3000, 3500, "c")]
    t = transcript(Segment(0, 5000, "a b c"), words=words)

    assert labelling.speech_regions(t) == [(0, 900), (3000, 3500)]
    assert labelling.speech_regions(transcript(Segment(0, 5000, "x"))) == [(0, 5000)]
    out = labelling.apply(t, np.array([450, 3250]), np.array([0, 0]))
    assert (out.segments[0].start_ms, out.segments[0].end_ms) == (0, 3500)  # its words' span


DIARIZED = to_result(Transcript(
    "hello there. hi. bye now", [Segment(0, 2000, "hello there.", "Speaker 1"),
                                 Segment(2500, 3000, "hi.", "Speaker 2"),
                                 Segment(3500, 4000, "bye", "Speaker 1"),
                                 Segment(4100, 4500, "now", "Speaker 1")],
    "en", "m", [Word(0, 900, "hello", "Speaker 1")], speakers=["Speaker 1", "Speaker 2"]),
    4.5, 0.5, 0.05)


def test_the_result_carries_speakers_segments_and_words_with_a_speaker() -> None:
    assert DIARIZED["speakers"] == ["Speaker 1", "Speaker 2"]
    assert DIARIZED["diarization_s"] == 0.05
    assert [s["speaker"] for s in DIARIZED["segments"]] == ["Speaker 1", "Speaker 2",
                                                            "Speaker 1", "Speaker 1"]
    assert DIARIZED["words"][0]["speaker"] == "Speaker 1"
    plain = to_result(transcript(Segment(0, 1000, "x")), 1.0, 0.1)
    assert "speakers" not in plain and "speaker" not in plain["segments"][0]


def test_srt_and_vtt_cues_name_their_speaker() -> None:
    subtitles = list(srt.parse(formats.to_srt(DIARIZED)))
    captions = webvtt.from_string(formats.to_vtt(DIARIZED))

    assert [s.content for s in subtitles[:2]] == ["[Speaker 1] hello there.", "[Speaker 2] hi."]
    assert "<v Speaker 2>hi." in formats.to_vtt(DIARIZED)
    assert [c.voice for c in captions] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 1"]


def test_a_long_diarized_segment_keeps_lines_within_the_width() -> None:
    text = " ".join(["word"] * 40)
    result = {"segments": [{"start": 0, "end": 10, "text": text, "speaker": "Speaker 12"}],
              "speakers": ["Speaker 12"]}

    for subtitle in srt.parse(formats.to_srt(result)):
        assert subtitle.content.startswith("[Speaker 12] ")
        assert all(len(line) <= formats.MAX_LINE_CHARS for line in subtitle.content.split("\n"))


def test_text_has_one_line_per_turn() -> None:
    assert formats.to_text(DIARIZED) == ("Speaker 1: hello there.\nSpeaker 2: hi.\n"
                                         "Speaker 1: bye now\n")


def test_openai_diarized_json_names_speakers_by_letter() -> None:
    body = openai_formats.openai_diarized(DIARIZED)

    assert body["task"] == "transcribe" and body["duration"] == 4.5
    assert [(s["speaker"], s["text"]) for s in body["segments"]] == [
        ("A", "hello there."), ("B", "hi."), ("A", "bye"), ("A", "now")]
    assert body["segments"][0]["type"] == "transcript.text.segment"
    assert body["segments"][0]["id"] == "seg_000"
    assert openai_formats._letter(27) == "AB"
    assert openai_formats.openai_verbose(DIARIZED, words=True)["segments"][1]["speaker"] == \
        "Speaker 2"


def test_mel_filters_match_librosa() -> None:
    librosa = pytest.importorskip("librosa")

    expected = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)
    assert np.allclose(mel_filters(), expected, atol=1e-7)


def test_the_diarizer_imports_neither_torch_nor_sklearn_until_a_job_asks() -> None:
    probe = ("import sys; from asr_service.diarize.runner import Diarizer; "
             "import asr_service.worker; d = Diarizer('models/voice-encoder'); "
             "print(d.loaded, sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "False []"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0",
                               log_dir=str(tmp_path_factory.mktemp("logs")))).test_client()


@pytest.mark.parametrize("fields, field", [
    ({"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, "max_speakers"),
    ({"diarize": "true", "num_speakers": "5", "max_speakers": "2"}, "num_speakers"),
    ({"num_speakers": "2"}, "num_speakers"),
    ({"diarize": "true", "max_speakers": "0"}, "max_speakers"),
])
def test_incoherent_speaker_counts_are_a_422_problem(client: FlaskClient, fields: dict,
                                                     field: str) -> None:
    response = client.post("/api/v1/asr/submit", content_type="multipart/form-data", data={
        "audio": (io.BytesIO(encode("wav", 1.0)), "a.wav"), **fields})

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_data(as_text=True)


def test_openai_speaker_counts_are_checked_too(client: FlaskClient) -> None:
    response = client.post("/v1/audio/transcriptions", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(encode("wav", 1.0)), "a.wav"),
                                 "model": "whisper-1", "response_format": "diarized_json",
                                 "min_speakers": "3", "max_speakers": "2"})

    assert response.status_code == 400
    assert "max_speakers" in response.get_data(as_text=True)
