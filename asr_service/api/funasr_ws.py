"""FunASR runtime's WebSocket protocol (runtime/docs/websocket_protocol.md), so FunASR's own
clients (Python, HTML5, ESP32 devices) connect unchanged: they dial ws://host:port with no
path, so an upgrade at `/` speaks it, and `/funasr` too.

Client: a JSON config (`mode` online/offline/2pass, `wav_name`, `is_speaking`, `chunk_size`,
`audio_fs`, `wav_format` pcm, `hotwords`, `itn`), binary 16-bit PCM, then
`{"is_speaking": false}` at the end of each recording (another config may follow on the same
socket). Server: `online`/`2pass-online` messages carry partial text as it grows (each adds to
the last), `offline`/`2pass-offline` ones each utterance's final text with `timestamp`
[[start, end]] in ms; the answer to `is_speaking: false` has `is_final` and `is_end` true.
The protocol has no error message: bad input closes the socket (1003 or 1008) with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from asr_service.api.live import bp, sock, start
from asr_service.api.live_session import Relay

MODES = ("online", "offline", "2pass")
RATES = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)


@sock.route("/", bp=bp)
def funasr_root(ws: Any) -> None:
    """A FunASR client session (they dial the server with no path)."""
    start(FunASRRelay, ws)


@sock.route("/funasr", bp=bp)
def funasr(ws: Any) -> None:
    """A FunASR client session at a named path."""
    start(FunASRRelay, ws)


def hotword_list(value: Any) -> list[str]:
    """FunASR's hotwords: a JSON object {"word": weight} or words split by spaces or commas."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, dict):
        words = [str(w) for w in value]
    else:
        words = str(value or "").replace(",", " ").split()
    return [w[:64] for w in words if w][:50]


class FunASRRelay(Relay):
    """The session in FunASR's messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode = "2pass"
        self.wav_name = "demo"

    def handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            if not self.configured:
                return self.refuse("config_first", "send the JSON config (mode, wav_name, "
                                   "is_speaking) before audio", close=True)
            if len(message) % 2:
                return self.refuse("odd_pcm", "audio must be 16-bit PCM: an even number of "
                                   "bytes", close=True)
            self.push_audio(message)
            return None
        try:
            config = json.loads(message)
            if not isinstance(config, dict):
                raise ValueError
        except ValueError:
            return self.refuse("invalid_json", "text messages must be JSON objects", close=True)
        if "mode" in config or not self.configured:
            try:
                self._configure(config)
            except ValueError as exc:
                return self.refuse("invalid_config", str(exc), close=True)
        if config.get("is_speaking") is False:
            self.control("flush")
        return None

    def _configure(self, config: dict) -> None:
        mode = config.get("mode", self.mode)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if str(config.get("wav_format", "pcm")).lower() != "pcm":
            raise ValueError("only PCM streams are served (wav_format 'pcm')")
        rate = int(config.get("audio_fs", 16_000))
        if rate not in RATES:
            raise ValueError(f"audio_fs {rate} is not served: one of {RATES}")
        try:
            chunk = [int(c) for c in config.get("chunk_size") or [5, 10, 5]]
            if len(chunk) != 3 or not 1 <= chunk[1] <= 33 or min(chunk) < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError("chunk_size must be three integers, e.g. [5, 10, 5], with a chunk "
                             "of 1-33 60 ms frames") from None
        partial_ms = chunk[1] * 60  # FunASR: 10 -> 600 ms
        self.mode, self.wav_name = mode, str(config.get("wav_name", self.wav_name))[:200]
        ours = {**self.session.config, "partial_ms": partial_ms, "chunk_size": chunk}
        if "hotwords" in config:
            ours["hotwords"] = hotword_list(config["hotwords"])
        self.configure(ours, rate)

    def translate(self, event: dict) -> list[dict]:
        kind, item = event.get("type"), event.get("item", "")
        if kind == "partial" and self.mode != "offline":
            added = self.grown(item, event["text"])
            return [self._message("online", added, False)] if added else []
        if kind == "final" and (said := self.finish(item)) is not None:
            if self.mode == "online":  # only growing text: what the partials did not say
                rest = event["text"][len(said):] if event["text"].startswith(said) else ""
                return [self._message("online", rest, False)] if rest else []
            stamp = json.dumps([[event["start_ms"], event["end_ms"]]])
            return [{**self._message("offline", event["text"], False), "timestamp": stamp}]
        if kind == "flushed":
            return [{**self._message("offline" if self.mode != "online" else "online", "",
                                     True), "is_end": True}]
        return []

    def _message(self, pass_: str, text: str, final: bool) -> dict:
        mode = f"2pass-{pass_}" if self.mode == "2pass" else pass_
        return {"mode": mode, "wav_name": self.wav_name, "text": text, "is_final": final}

    def refuse(self, code: str, message: str, close: bool = False,
               event_id: str | None = None) -> None:
        # FunASR's protocol has no error message: the close frame carries the reason.
        self.close(1003 if code in ("config_first", "odd_pcm") else 1008,
                   f"{code}: {message}")
