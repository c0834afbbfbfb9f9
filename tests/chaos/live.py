"""The soak's live client: real-time transcription sessions through the faults, and what the
checker demands of them.

A session (OpenAI Realtime protocol, /v1/realtime, on either API process) sends clips and
commits each (no server VAD, so every final is the engine's text of one whole clip), waiting
for each final before the next clip. Whatever strikes, no final may come twice, none may be
wrong, none may be skipped; an API process that dies or a Redis that goes away may end a
session (its client reconnects, as any would), but a session left open must never stall.
"""

from __future__ import annotations

import base64
import io
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from tests.chaos.load import History

LIVE_CLIPS = ("a", "b")  # 3 s and 6 s: a session's audio stays far within LIVE_BUFFER_S
COMMITS = 3  # clips a session sends
FINAL_WAIT_S = 60  # a final later than this after its commit is a stall
CHUNK_S = 1.0


@dataclass
class LiveClient:
    """One client thread opening live sessions one after another."""

    name: str
    seed: str
    apis: list[str]
    key: str
    model: str
    clips: dict[str, bytes]
    history: History
    rng: random.Random = field(init=False)
    pcm: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.pcm = {name: sf.read(io.BytesIO(self.clips[name]), dtype="int16")[0]
                    for name in LIVE_CLIPS}

    def run(self, until: float, pause_s: float) -> None:
        while time.time() < until:
            self.session()
            time.sleep(self.rng.uniform(0, pause_s))

    def session(self) -> None:
        api = self.rng.choice(self.apis)
        record: dict[str, Any] = {"op": "live", "client": self.name, "api": api,
                                  "t0": time.time(), "commits": [], "finals": [], "errors": []}
        try:
            ws = connect(f"{api.replace('http', 'ws')}/v1/realtime?intent=transcription"
                         f"&model={self.model}", open_timeout=10, close_timeout=2,
                         max_size=None, additional_headers={"Authorization": f"Bearer {self.key}"})
        except InvalidStatus as exc:
            record.update(status=exc.response.status_code, end="refused")
        except (OSError, TimeoutError, WebSocketException) as exc:
            record.update(status=0, end=f"connect {type(exc).__name__}")
        else:
            record["status"] = 101
            try:
                with ws:
                    record["end"] = self._talk(ws, record)
            except ConnectionClosed as exc:
                record["end"] = f"closed {exc.rcvd.code if exc.rcvd else ''} " \
                    f"{exc.rcvd.reason if exc.rcvd else ''}".strip()
            except (OSError, TimeoutError, WebSocketException) as exc:
                record["end"] = f"broken {type(exc).__name__}"
        record["t1"] = time.time()
        self.history.add(**record)

    def _talk(self, ws: Any, record: dict[str, Any]) -> str:
        record["session"] = json.loads(ws.recv(timeout=10))["session"]["id"]
        ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16_000}, "turn_detection": None}}}}))
        for _ in range(COMMITS):
            clip = self.rng.choice(LIVE_CLIPS)
            pcm, step = self.pcm[clip], int(CHUNK_S * 16_000)
            for at in range(0, len(pcm), step):
                ws.send(json.dumps({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(pcm[at:at + step].tobytes())
                                    .decode()}))
            committed = time.time()
            ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            item, deadline = None, committed + FINAL_WAIT_S
            while True:
                try:
                    event = json.loads(ws.recv(timeout=max(0.1, deadline - time.time())))
                except TimeoutError:
                    return "stalled"
                kind = event.get("type", "")
                if kind == "input_audio_buffer.committed":
                    item = event["item_id"]
                    record["commits"].append({"item": item, "clip": clip, "t": committed})
                elif kind.endswith("input_audio_transcription.completed"):
                    record["finals"].append({"item": event["item_id"], "t": time.time(),
                                             "text": event["transcript"]})
                    if event["item_id"] == item:
                        break
                elif kind == "error":
                    record["errors"].append((event.get("error") or {}).get("code", "?"))
        return "done"


def check(records: list[dict], references: dict[str, str]) -> tuple[list[dict], dict]:
    """Violations (no final repeated, wrong, skipped or stalled) and the live figures."""
    violations: list[dict] = []
    sessions = [r for r in records if r.get("op") == "live"]
    waits = []
    for s in sessions:
        where = {"job": None, "session": s.get("session"), "client": s["client"]}
        items = [f["item"] for f in s["finals"]]
        if len(items) != len(set(items)):
            violations.append({**where, "rule": "live final repeated", "items": items})
        clips = {c["item"]: c for c in s["commits"]}
        for final in s["finals"]:
            commit = clips.get(final["item"])
            if commit is None:
                violations.append({**where, "rule": "live final of no commit", **final})
            elif final["text"] != references[commit["clip"]]:
                violations.append({**where, "rule": "live final wrong", "clip": commit["clip"],
                                   "text": final["text"], "want": references[commit["clip"]]})
            else:
                waits.append(final["t"] - commit["t"])
        # Only the last commit may lack its final, and only in a session a fault ended.
        last = s["commits"][-1]["item"] if s["commits"] else None
        skipped = [c["item"] for c in s["commits"] if c["item"] not in set(items)
                   and (c["item"] != last or s["end"] == "done")]
        if skipped:
            violations.append({**where, "rule": "live final skipped", "items": skipped})
        if s["end"] == "stalled":
            violations.append({**where, "rule": "live session stalled",
                               "after_s": FINAL_WAIT_S, "commits": len(s["commits"])})
    ends: dict[str, int] = {}
    for s in sessions:
        end = s["end"] if s["end"] in ("done", "stalled") else \
            f"refused {s['status']}" if s["end"] == "refused" else "ended by a fault"
        ends[end] = ends.get(end, 0) + 1
    waits.sort()
    return violations, {
        "sessions": len(sessions), "ends": ends, "finals": len(waits),
        "final_wait_p50_s": round(waits[len(waits) // 2], 2) if waits else None,
        "final_wait_max_s": round(waits[-1], 2) if waits else None}
