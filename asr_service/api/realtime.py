"""OpenAI's Realtime protocol for transcription sessions, at /v1/realtime?intent=transcription.

Client events: session.update (and the beta's transcription_session.update),
input_audio_buffer.append/commit/clear. Server events: session.created/updated,
input_audio_buffer.speech_started/speech_stopped/committed/cleared,
conversation.item.input_audio_transcription.delta/completed, error. Bad input gets an `error`
event and the session goes on (docs/live.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from asr_service.api.live import bp, log, sock, start
from asr_service.api.live_session import Relay

RATES = (16_000, 24_000)


@sock.route("/v1/realtime", bp=bp)
def realtime(ws: Any) -> None:
    """An OpenAI Realtime transcription session."""
    start(OpenAIRelay, ws)


class OpenAIRelay(Relay):
    """The session in OpenAI's events; a takeover's repeats are dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session.rate = 24_000  # OpenAI's default input, until session.update says
        self.started: set[str] = set()
        self.previous_item: str | None = None

    def greet(self) -> None:
        self.send({"type": "session.created", "session": self._session_object()})

    def handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return self.refuse("invalid_request_error", "binary frames are not part of this "
                               "protocol: send JSON events, audio base64 in "
                               "input_audio_buffer.append")
        try:
            event = json.loads(message)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            return self.refuse("invalid_json", "each message must be a JSON object with a 'type'")
        handler = {"session.update": self.update, "transcription_session.update": self.update,
                   "input_audio_buffer.append": self.append,
                   "input_audio_buffer.commit": lambda _: self.control("commit"),
                   "input_audio_buffer.clear": lambda _: self.control("clear")}.get(kind)
        if handler is None:
            return self.refuse("invalid_request_error", f"unknown or unsupported event type "
                               f"'{kind}' in a transcription session",
                               event_id=event.get("event_id"))
        handler(event)

    def update(self, event: dict) -> None:
        s = self.session
        try:
            config, rate = parse_session(event.get("session") or {}, s.config, s.rate)
        except ValueError as exc:
            return self.refuse("invalid_request_error", str(exc), event_id=event.get("event_id"))
        if rate != s.rate and s.sent_samples:
            return self.refuse("invalid_request_error", "the input rate cannot change once audio "
                               "was sent", event_id=event.get("event_id"))
        self.configure(config, rate)
        self.send({"type": "session.updated", "session": self._session_object()})

    def append(self, event: dict) -> None:
        if not self.configured:
            return self.refuse("session_not_configured", "send session.update (type "
                               "'transcription') before audio", event_id=event.get("event_id"))
        try:
            pcm = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return self.refuse("invalid_audio", "'audio' must be base64 of 16-bit PCM",
                               event_id=event.get("event_id"))
        if len(pcm) % 2:
            return self.refuse("invalid_audio", "16-bit PCM has an even number of bytes",
                               event_id=event.get("event_id"))
        self.push_audio(pcm)

    def translate(self, event: dict) -> list[dict]:
        kind, item = event.get("type"), event.get("item", "")
        if kind == "speech_started":
            if item in self.started:
                return []
            self.started.add(item)
            return [{"type": "input_audio_buffer.speech_started",
                     "audio_start_ms": event["start_ms"], "item_id": item}]
        if kind == "partial":
            added = self.grown(item, event["text"])
            # audio_end_ms (ours): the session audio this text was decoded from, which
            # `make bench-live` measures partial latency by.
            return [{"type": "conversation.item.input_audio_transcription.delta",
                     "item_id": item, "content_index": 0, "delta": added,
                     "audio_end_ms": event.get("at_ms")}] if added else []
        if kind == "speech_stopped" and item not in self.finished:
            previous, self.previous_item = self.previous_item, item
            return [{"type": "input_audio_buffer.speech_stopped",
                     "audio_end_ms": event["end_ms"], "item_id": item},
                    {"type": "input_audio_buffer.committed", "item_id": item,
                     "previous_item_id": previous}]
        if kind == "final" and self.finish(item) is not None:
            return [{"type": "conversation.item.input_audio_transcription.completed",
                     "item_id": item, "content_index": 0, "transcript": event["text"],
                     "start_ms": event["start_ms"], "end_ms": event["end_ms"]}]
        if kind == "cleared":
            return [{"type": "input_audio_buffer.cleared"}]
        if kind == "error":
            return [_error(event.get("code", "server_error"), event.get("message", ""))]
        return []

    def send(self, message: dict) -> None:
        message.setdefault("event_id", f"event_{uuid.uuid4().hex[:20]}")
        super().send(message)

    def refuse(self, code: str, message: str, close: bool = False,
               event_id: str | None = None) -> None:
        try:
            self.send(_error(code, message, event_id))
        except Exception as exc:
            log.warning("live error event not sent: %r", exc)
            close = True
        if close:
            self.close(1008, code)

    def _session_object(self) -> dict:
        s = self.session
        detection = s.config.get("turn_detection", "server_vad")
        return {"id": s.id, "object": "realtime.transcription_session", "type": "transcription",
                "audio": {"input": {
                    "format": {"type": "audio/pcm", "rate": s.rate},
                    "transcription": {"model": s.model, "language": s.config.get("language"),
                                      "prompt": " ".join(s.config.get("hotwords", []))},
                    "turn_detection": None if detection is None else {
                        "type": "server_vad", "prefix_padding_ms": s.config.get("padding_ms", 300),
                        "silence_duration_ms": s.config.get("silence_ms", 500)}}}}


def _error(code: str, message: str, event_id: str | None = None) -> dict:
    return {"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                       "message": message, "event_id": event_id}}


def parse_session(body: dict, current: dict, rate: int) -> tuple[dict, int]:
    """A session.update's `session` (GA shape `audio.input.*`, or the beta's flat
    `input_audio_format`/`input_audio_transcription`) -> (our config, input rate)."""
    if body.get("type") not in (None, "transcription"):
        raise ValueError("only sessions of type 'transcription' are served here")
    config = dict(current)
    audio_in = (body.get("audio") or {}).get("input") or {}
    fmt = audio_in.get("format", body.get("input_audio_format"))
    if isinstance(fmt, dict):
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            raise ValueError(f"input format {fmt.get('type')!r} is not served: use audio/pcm")
        rate = int(fmt.get("rate", rate))
    elif isinstance(fmt, str):
        if fmt != "pcm16":
            raise ValueError(f"input_audio_format {fmt!r} is not served: use pcm16")
        rate = 24_000
    if rate not in RATES:
        raise ValueError(f"input rate {rate} Hz is not served: use 24000 or 16000")
    transcription = audio_in.get("transcription", body.get("input_audio_transcription"))
    if isinstance(transcription, dict):
        if transcription.get("language"):
            config["language"] = str(transcription["language"])[:16]
        prompt = str(transcription.get("prompt") or "")[:1000]
        config["hotwords"] = [w for w in prompt.replace(",", " ").split() if w][:50]
    if "turn_detection" in audio_in or "turn_detection" in body:
        detection = audio_in.get("turn_detection", body.get("turn_detection"))
        if detection is None:
            config["turn_detection"] = None
        elif isinstance(detection, dict) and detection.get("type", "server_vad") == "server_vad":
            config["turn_detection"] = "server_vad"
            silence = int(detection.get("silence_duration_ms", config.get("silence_ms", 500)))
            padding = int(detection.get("prefix_padding_ms", config.get("padding_ms", 300)))
            if not 100 <= silence <= 10_000 or not 0 <= padding <= 2_000:
                raise ValueError("silence_duration_ms must be 100-10000, prefix_padding_ms 0-2000")
            config["silence_ms"], config["padding_ms"] = silence, padding
        else:
            raise ValueError("turn_detection must be null or {'type': 'server_vad', ...}")
    return config, rate
