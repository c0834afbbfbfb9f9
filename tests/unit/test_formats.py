"""Text, SRT, WebVTT and OpenAI bodies from the normalized transcript, read back by the
`srt` and `webvtt-py` parsers."""

from __future__ import annotations

import html
import json
import re
import unicodedata

import pytest
import srt
import webvtt

from asr_service import formats, openai_formats

SENTENCE = "This is a fairly long sentence, with a clause; and then some more words. "
ZH = "欢迎大家来体验达摩院推出的语音识别模型，" * 40  # 800 characters, no spaces


def transcript(*segments: tuple[float, float, str], **more) -> dict:
    return {"text": " ".join(t for _, _, t in segments), "language": "en", "duration_s": 60.2,
            "segments": [{"start": a, "end": b, "text": t} for a, b, t in segments], **more}


def _same_words(a: str, b: str) -> bool:
    return re.sub(r"\s+", " ", a).strip() == re.sub(r"\s+", " ", b).strip()


def _columns(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def _check_cues(cues: list[formats.Cue], start: float, end: float) -> None:
    assert cues and cues[0].start >= start and cues[-1].end <= end + 1e-6
    assert all(c.end - c.start >= 0.001 - 1e-9 and c.lines and all(c.lines) for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:], strict=False))
    assert all(len(c.lines) <= 2 and all(_columns(line) <= 42 for line in c.lines) for c in cues)


def _vtt_ms(caption: webvtt.Caption) -> tuple[int, int]:
    return caption.start_time.in_milliseconds(), caption.end_time.in_milliseconds()


def test_short_segments_round_trip_through_both_parsers():
    result = transcript((0.0, 2.5, "hello world"), (3.137, 6.0, "this is a test"),
                        (61.25, 3725.5, "an hour later"))
    subtitles = list(srt.parse(formats.to_srt(result)))
    captions = webvtt.from_string(formats.to_vtt(result))
    times_ms = [(0, 2500), (3137, 6000), (61250, 3725500)]

    assert [s.content for s in subtitles] == ["hello world", "this is a test", "an hour later"]
    assert [s.index for s in subtitles] == [1, 2, 3]
    assert [(s.start // srt.timedelta(milliseconds=1), s.end // srt.timedelta(milliseconds=1))
            for s in subtitles] == times_ms
    assert [c.text for c in captions] == ["hello world", "this is a test", "an hour later"]
    assert [_vtt_ms(c) for c in captions] == times_ms
    assert captions[2].end == "01:02:05.500"


def test_silence_gives_valid_empty_subtitles():
    for empty in (transcript(), transcript((0.0, 3.0, ""), (3.0, 5.0, "  \n "))):
        assert formats.cues(empty) == []
        assert formats.to_srt(empty) == "" and list(srt.parse(formats.to_srt(empty))) == []
        assert formats.to_vtt(empty).startswith("WEBVTT")
        assert len(webvtt.from_string(formats.to_vtt(empty))) == 0
    assert formats.render(transcript(), "txt") == ("\n", "text/plain; charset=utf-8")


def test_render_gives_each_format_its_content_type():
    result = transcript((0.0, 2.5, "hello world"), (3.1, 6.0, "this is a test"))

    assert formats.render(result, "txt") == ("hello world this is a test\n",
                                             "text/plain; charset=utf-8")
    body, content_type = formats.render(result, "srt")
    assert content_type == "application/x-subrip; charset=utf-8" and body.startswith("1\n")
    body, content_type = formats.render(result, "vtt")
    assert content_type == "text/vtt; charset=utf-8" and body.startswith("WEBVTT\n")
    body, content_type = formats.render(result, "json")
    assert content_type == "application/json" and json.loads(body) == result
    assert set(formats.FORMATS) == {"json", "txt", "srt", "vtt"}
    with pytest.raises(ValueError, match="docx"):
        formats.render(result, "docx")


def test_a_long_english_segment_is_split_into_readable_cues():
    text = (SENTENCE * 12).strip()  # 887 characters over 60 s
    result = transcript((2.0, 62.0, text))
    cues = formats.cues(result)

    _check_cues(cues, 2.0, 62.0)
    assert len(cues) >= 10
    assert _same_words(" ".join(" ".join(c.lines) for c in cues), text)
    # Cut at a sentence or clause end where one falls inside the cue, not mid-clause.
    assert sum(" ".join(c.lines).endswith((".", ";", ",")) for c in cues) >= len(cues) - 1
    # Never inside a word: every line is made of the text's own words.
    assert all(word in text.split() for c in cues for line in c.lines for word in line.split())
    parsed = list(srt.parse(formats.to_srt(result)))
    assert [s.content.split("\n") for s in parsed] == [c.lines for c in cues]
    assert parsed[0].start.total_seconds() == 2.0 and parsed[-1].end.total_seconds() == 62.0
    assert len(webvtt.from_string(formats.to_vtt(result))) == len(cues)


def test_a_long_chinese_segment_is_cut_between_characters():
    result = transcript((0.0, 60.0, ZH))
    cues = formats.cues(result)

    _check_cues(cues, 0.0, 60.0)
    assert len(cues) >= 15
    assert "".join("".join(c.lines) for c in cues) == ZH
    # A CJK character is two columns wide: at most 21 of them to a 42-column line.
    assert all(len(line) <= 21 for c in cues for line in c.lines)
    assert all(c.lines[-1].endswith("，") for c in cues)  # at the clause mark, not mid-phrase
    assert not any(line.startswith("，") for c in cues for line in c.lines)
    assert len(webvtt.from_string(formats.to_vtt(result))) == len(cues)
    assert ["".join(s.content.split("\n")) for s in srt.parse(formats.to_srt(result))] == \
        ["".join(c.lines) for c in cues]


def test_mixed_chinese_and_english_wraps_by_width_and_keeps_words_whole():
    text = "我们使用 Python 语言来" + ZH[:100]
    cues = formats.cues(transcript((0.0, 20.0, text)))

    _check_cues(cues, 0.0, 20.0)
    assert "Python" in cues[0].lines[0]
    assert re.sub(r"\s", "", "".join("".join(c.lines) for c in cues)) == re.sub(r"\s", "", text)


def test_only_a_word_longer_than_a_line_is_cut_inside():
    url = "https://example.com/" + "a" * 90
    text = f"see {url} for more information about the 3.5 million things we found today"
    cues = formats.cues(transcript((0.0, 10.0, text)))
    lines = [line for c in cues for line in c.lines]

    _check_cues(cues, 0.0, 10.0)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    # The pieces that are not whole words of the text are the URL's, in order: nothing else is cut.
    assert "".join(w for line in lines for w in line.split() if w not in text.split()) == url
    assert len(lines) > len(url) // 42


def test_no_line_starts_with_closing_punctuation_or_a_small_kana():
    # Greedy 21-character lines would start with "っ" and with "。".
    text = "あ" * 21 + "っ" + "い" * 20 + "。" + "う" * 19 + "ょう、" + "えお" * 10
    cues = formats.cues(transcript((0.0, 10.0, text)))
    lines = [line for c in cues for line in c.lines]

    _check_cues(cues, 0.0, 10.0)
    assert "".join(lines) == text
    assert not any(line[0] in "。、，！？っょ" for line in lines)


def test_two_line_cues_are_balanced_not_one_full_line_and_a_word():
    text = "the quick brown fox jumps over the lazy dog and runs away"  # 57 characters
    (cue,) = formats.cues(transcript((0.0, 3.0, text)))

    assert len(cue.lines) == 2 and " ".join(cue.lines) == text
    assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 8


def test_a_segment_without_duration_still_lasts_a_millisecond():
    result = transcript((5.0, 5.0, "blip"), (5.0, 5.0, "blop"), (7.0, 8.0, "after"),
                        words=[{"word": "blip", "start": 5.0, "end": 5.0}])
    cues = formats.cues(result)

    assert [(c.start, c.end) for c in cues] == [(5.0, 5.001), (5.001, 5.002), (7.0, 8.0)]
    assert [(s.start.total_seconds(), s.end.total_seconds())
            for s in srt.parse(formats.to_srt(result))] == [(5.0, 5.001), (5.001, 5.002),
                                                            (7.0, 8.0)]


def test_without_words_a_segment_is_timed_by_character_count():
    text = "A short first sentence here. " + "Then a much longer second sentence " * 2
    result = transcript((10.0, 20.0, text.strip()))
    cues = formats.cues(result, max_line_chars=30)
    sizes = [len(" ".join(c.lines)) for c in cues]

    _check_cues(cues, 10.0, 20.0)
    assert len(cues) >= 2 and cues[0].lines == ["A short first sentence here."]
    assert cues[0].start == 10.0 and cues[-1].end == 20.0
    for cue, size in zip(cues, sizes, strict=True):
        assert cue.end - cue.start == pytest.approx(10.0 * size / sum(sizes), abs=0.002)


def test_word_times_set_the_cue_boundaries():
    words = [f"w{i}" for i in range(40)]
    text = " ".join(words)  # 40 short words: two or more cues
    result = transcript((0.0, 40.0, text),
                        words=[{"word": w, "start": i * 0.5, "end": i * 0.5 + 0.4}
                               for i, w in enumerate(words)])
    cues = formats.cues(result)

    assert len(cues) >= 2
    for cue in cues:
        first, last = int(cue.lines[0].split()[0][1:]), int(cue.lines[-1].split()[-1][1:])
        assert (cue.start, cue.end) == pytest.approx((first * 0.5, last * 0.5 + 0.4))
    parsed = list(srt.parse(formats.to_srt(result)))
    assert parsed[1].start.total_seconds() == pytest.approx(cues[1].start)


def test_word_times_of_multi_character_chinese_words():
    tokens = ["欢迎", "大家", "来", "体验", "达摩院", "推出", "的", "语音", "识别", "模型，"] * 6
    words = [{"word": w, "start": i * 0.4, "end": i * 0.4 + 0.3} for i, w in enumerate(tokens)]
    result = transcript((0.0, 24.0, "".join(tokens)), words=words)
    cues = formats.cues(result)

    _check_cues(cues, 0.0, 24.0)
    # Each cue ends at a "模型，" word and the next starts at the following "欢迎".
    assert len(cues) == 3
    assert [t for c in cues for t in (c.start, c.end)] == pytest.approx(
        [t for k in range(3) for t in (20 * k * 0.4, 20 * (k + 1) * 0.4 - 0.1)])


def test_words_that_do_not_spell_the_segment_are_not_used():
    result = transcript((0.0, 40.0, (SENTENCE * 2).strip()),
                        words=[{"word": "unrelated", "start": 0.0, "end": 39.0}])
    assert formats.cues(result) == formats.cues({**result, "words": []})


def test_segments_that_overlap_give_cues_that_do_not():
    result = transcript((0.0, 5.0, "first part of it"), (4.0, 8.0, "second part"),
                        (4.5, 4.6, "late"))
    cues = formats.cues(result)

    assert [c.lines for c in cues] == [["first part of it"], ["second part"], ["late"]]
    assert all(a.end <= b.start and b.end > b.start for a, b in zip(cues, cues[1:],
                                                                    strict=False))


def test_arrows_and_blank_lines_in_text_cannot_break_the_cue_structure():
    result = transcript((0.0, 2.0, "a --> b\n\nc\n1\n00:00:09,000 --> 00:00:10,000"),
                        (2.0, 4.0, "next"))
    subtitles = list(srt.parse(formats.to_srt(result)))
    captions = webvtt.from_string(formats.to_vtt(result))

    assert [s.content.replace("\n", " ") for s in subtitles] == \
        ["a → b c 1 00:00:09,000 → 00:00:10,000", "next"]
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subtitles] == \
        [(0.0, 2.0), (2.0, 4.0)]
    assert [c.text.replace("\n", " ") for c in captions] == \
        ["a → b c 1 00:00:09,000 → 00:00:10,000", "next"]
    assert [_vtt_ms(c) for c in captions] == [(0, 2000), (2000, 4000)]


def test_vtt_escapes_what_would_read_as_markup():
    result = transcript((0.0, 2.0, "AT&T said <b>no</b>"))
    caption = webvtt.from_string(formats.to_vtt(result))[0]

    assert caption.raw_text == "AT&amp;T said &lt;b>no&lt;/b>"
    assert html.unescape(caption.raw_text) == "AT&T said <b>no</b>"
    assert list(srt.parse(formats.to_srt(result)))[0].content == "AT&T said <b>no</b>"


def test_txt_is_the_text_and_a_newline():
    text = "欢迎大家来体验达摩院推出的语音识别模型"
    assert formats.to_text({"text": text, "segments": []}) == text + "\n"
    assert formats.to_text(transcript((0.0, 1.0, "hi"), (1.0, 2.0, "there"))) == "hi there\n"


def test_openai_bodies():
    result = transcript((0.0, 1.5, "hi there"), (2.0, 3.0, "bye"),
                        words=[{"word": "hi", "start": 0.0, "end": 0.4}])
    verbose = openai_formats.openai_verbose(result, words=True)

    assert openai_formats.openai_json(result) == {"text": "hi there bye",
                                           "usage": {"type": "duration", "seconds": 61}}
    assert {k: verbose[k] for k in ("task", "language", "duration", "text", "usage")} == {
        "task": "transcribe", "language": "en", "duration": 60.2, "text": "hi there bye",
        "usage": {"type": "duration", "seconds": 61}}
    assert isinstance(verbose["usage"]["seconds"], int)
    assert [(s["id"], s["start"], s["end"], s["text"]) for s in verbose["segments"]] == \
        [(0, 0.0, 1.5, "hi there"), (1, 2.0, 3.0, "bye")]
    assert verbose["segments"][1] == {
        "id": 1, "seek": 0, "start": 2.0, "end": 3.0, "text": "bye", "tokens": [],
        "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
    assert all(isinstance(s[k], float) for s in verbose["segments"]
               for k in ("start", "end", "temperature", "avg_logprob", "compression_ratio",
                         "no_speech_prob"))
    assert verbose["words"] == [{"word": "hi", "start": 0.0, "end": 0.4}]
    assert "words" not in openai_formats.openai_verbose(result, words=False)
    assert openai_formats.openai_verbose(transcript((0, 1, "x")), words=True)["words"] == []
    json.dumps(verbose)  # a JSON body as it is


def test_word_wrapping_never_leaves_a_one_word_cue_in_the_middle():
    text = ("hotel hotel hotel hotel oscar oscar golf golf papa india india hotel hotel golf "
            "oscar oscar oscar oscar oscar hotel golf india bravo golf november golf golf hotel "
            "oscar hotel hotel oscar oscar golf golf golf golf alpha alpha oscar golf hotel "
            "oscar hotel oscar oscar oscar oscar mike")
    cues = formats.cues(transcript((0.0, 4.98, text)))

    assert [len(c.lines) for c in cues] == [2, 2, 2, 1]
    assert all(len(line) <= 42 for c in cues for line in c.lines)
    assert _same_words(" ".join(" ".join(c.lines) for c in cues), text)
