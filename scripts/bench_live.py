"""Live transcription under load: `make bench-live`.

Its own redis-server, the real API under gunicorn and one worker host (prefork, WORKERS
processes: a live session holds one while it lasts) with the real engine: the tiny Paraformer
and FSMN-VAD, or `--engine faster-whisper` with models/whisper-tiny-en. Each session streams
the same espeak-ng recording (SENTENCES, with pauses) in real time, 100 ms per message, over
OpenAI's Realtime protocol, as N sessions at once for N = 1, 2, ... WORKERS. Measured:
- partial latency: from sending the audio a delta was decoded from (its audio_end_ms) to the
  delta's arrival; p50/p95 over every delta of every session;
- final latency: from sending the audio at the VAD's end of the utterance (audio_end_ms of
  speech_stopped, silence_duration_ms after the speech) to the final's arrival, and from the
  end of speech itself;
- WER of the finals (joined) against the sentences, beside the WER of the file path
  (POST /api/v1/asr/submit of the whole recording), same model, same run;
- CPU of the API (gunicorn tree) per live session, in % of one core: gross (all its CPU over
  the sessions) and above idle (less what the same API used in the quiet 3 s before).
Prints a table and writes bench/live.json. The sessions per host are the largest N whose p95
partial latency stays under 1 s. Loopback only.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.assets import ensure_assets  # noqa: E402
from scripts.bench import VENV_BIN, Processes, base_env, get_json  # noqa: E402
from tests.conversations import VOICES, speak  # noqa: E402
from tests.harness import free_port  # noqa: E402

RATE = 16_000
CHUNK = RATE // 10
SILENCE_MS = 500
SENTENCES = ["the meeting moved to thursday because the budget review was not ready",
             "please send the notes after lunch",
             "our numbers look good this quarter but travel costs went up again",
             "the customer wants a demo next week",
             "everyone agreed that the new office needs better chairs and more light",
             "we should ask the team about the release plan before friday",
             "the tests must pass before we ship the new version",
             "she booked a quiet room for the calls in the afternoon",
             "the train was late so the workshop started twenty minutes after nine",
             "he forgot his laptop at home and borrowed one from the front desk",
             "the report shows that sales grew in every region except the north",
             "can you move the review to monday morning at ten",
             "the kitchen will be closed for cleaning on the last day of the month",
             "our new hire starts next week and needs a desk near the window",
             "the printer on the second floor is out of paper again",
             "thank you all for coming and see you at the next meeting"]
"""The recording's text, in order (`--sentences N`: the first N; 4 by default). A word is
100/N_words points of WER: 4 sentences (37 words) cannot tell a 2-point gap from none."""

OUT = ROOT / "bench" / "live.json"


def recording(sentences: list[str]) -> np.ndarray:
    """The sentences in two voices with 1 s pauses, 16 kHz int16."""
    parts = [np.zeros(RATE // 2, dtype=np.float32)]
    for i, sentence in enumerate(sentences):
        parts += [speak(sentence, VOICES[i % 2]), np.zeros(RATE, dtype=np.float32)]
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2")


def start_stack(procs: Processes, logs: Path, engine: str, workers: int, online: bool) -> str:
    assets = ensure_assets(ROOT / "models")
    url, api_port = procs.start_redis(logs), free_port()
    env = base_env()
    model = {"funasr": dict(ASR_ENGINE="funasr", ASR_MODEL=str(assets["asr"]),
                            ASR_VAD_MODEL=str(assets["vad"]),
                            ASR_ONLINE_MODEL=str(assets["streaming"]) if online else ""),
             "faster-whisper": dict(ASR_ENGINE="faster-whisper",
                                    ASR_MODEL=str(assets["whisper"]), ASR_VAD_MODEL="")}[engine]
    env.update(REDIS_URL=url, API_HOST="127.0.0.1", API_PORT=str(api_port), API_KEYS="",
               RATE_LIMIT="", ASR_PUNC_MODEL="", ASR_USE_GPU="false", ASR_THREADS="1",
               WORKER_COUNT=str(workers), LIVE_MAX_SESSIONS_PER_KEY="0",
               LOG_DIR=str(logs / "logs"), **model)
    base = procs.start_api(env, api_port, logs)

    def ready() -> bool:
        health = get_json(f"{base}/api/v1/dashboard", 5)
        return sum(w.get("engines_ready", 0) for w in health.get("workers", [])) >= workers

    procs.start("worker", [str(VENV_BIN / "celery"), "-A", "celery_app", "worker",
                           "-n", "live@%h", "--without-mingle", "--without-gossip",
                           "--loglevel=WARNING"],
                ready=ready, ignoring=(requests.RequestException, ValueError), timeout=300,
                log_path=logs / "worker.out", env=env)
    return base


def session(base: str, pcm: np.ndarray, out: dict[str, Any], silence_ms: int,
            utterances: int) -> None:
    """One real-time session of `utterances`; fills `out` with latencies and final texts."""
    sent: list[float] = []  # send time of each 100 ms chunk
    partial, final_vad, final_speech, finals = [], [], [], []

    def sent_at(ms: int) -> float:
        return sent[min(len(sent) - 1, max(0, (ms * RATE // 1000 - 1) // CHUNK))]

    with connect(base.replace("http", "ws") + "/v1/realtime?intent=transcription",
                 open_timeout=30, max_size=None) as ws:
        json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": RATE},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}}}))
        json.loads(ws.recv(timeout=30))
        began = time.monotonic()
        stopped: dict[str, int] = {}

        def receive() -> None:  # its own thread: arrival times are not quantized by the sends
            while len(finals) < utterances:
                try:
                    event = json.loads(ws.recv(timeout=30))
                except (TimeoutError, ConnectionClosed):
                    return
                now, kind = time.monotonic(), event["type"]
                if kind.endswith("transcription.delta") and event.get("audio_end_ms"):
                    partial.append(now - sent_at(event["audio_end_ms"]))
                elif kind == "input_audio_buffer.speech_stopped":
                    stopped[event["item_id"]] = event["audio_end_ms"]
                elif kind.endswith("transcription.completed"):
                    end = stopped.get(event["item_id"], event["end_ms"])
                    final_vad.append(now - sent_at(end))
                    final_speech.append(now - sent_at(max(0, end - silence_ms)))
                    finals.append(event["transcript"])
                elif kind == "error":
                    out["errors"] = out.get("errors", 0) + 1

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        for at in range(0, len(pcm), CHUNK):
            sent.append(time.monotonic())
            chunk = base64.b64encode(pcm[at:at + CHUNK].tobytes()).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            time.sleep(max(0.0, began + (at + CHUNK) / RATE - time.monotonic()))
        receiver.join(40)
    out.update(partial=partial, final_vad=final_vad, final_speech=final_speech, finals=finals)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (Levenshtein over words)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def file_text(base: str, pcm: np.ndarray) -> str:
    buf = io.BytesIO()
    sf.write(buf, pcm, RATE, format="WAV", subtype="PCM_16")
    task = requests.post(f"{base}/api/v1/asr/submit", files={"audio": ("r.wav", buf.getvalue())},
                         timeout=60).json()["task_id"]
    body = {"status": "queued"}
    for _ in range(5):  # ?wait is at most 60 s
        body = requests.get(f"{base}/api/v1/asr/result/{task}?wait=60", timeout=90).json()
        if body["status"] not in ("queued", "processing"):
            break
    if body["status"] != "succeeded":
        print(f"the file path did not succeed: {json.dumps(body)[:500]}", file=sys.stderr)
        return ""
    return body["result"]["text"]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 0)


def idle_api_cpu(procs: Processes, seconds: float = 3.0) -> float:
    """The API's CPU in % of a core with no session open (and the workers' heartbeats show the
    last level's sessions ended by the time this returns)."""
    before, t0 = procs.cpu_seconds()["api"], time.monotonic()
    time.sleep(seconds)
    return 100 * (procs.cpu_seconds()["api"] - before) / (time.monotonic() - t0)


def run_level(base: str, procs: Processes, pcm: np.ndarray, sentences: list[str], n: int,
              silence_ms: int,
              idle_pct: float) -> dict[str, Any]:
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    cpu_before, t0 = procs.cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=session, args=(base, pcm, r, silence_ms, len(sentences)))
               for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    wall, cpu_after = time.monotonic() - t0, procs.cpu_seconds()
    merged = {k: [v for r in results for v in r.get(k, [])]
              for k in ("partial", "final_vad", "final_speech")}
    reference = " ".join(sentences)
    return {"sessions": n, "partials": len(merged["partial"]),
            "partial_p50_ms": pct(merged["partial"], 0.5),
            "partial_p95_ms": pct(merged["partial"], 0.95),
            "final_after_vad_end_p50_ms": pct(merged["final_vad"], 0.5),
            "final_after_vad_end_p95_ms": pct(merged["final_vad"], 0.95),
            "final_after_speech_end_p50_ms": pct(merged["final_speech"], 0.5),
            "final_after_speech_end_p95_ms": pct(merged["final_speech"], 0.95),
            "finals_per_session": [len(r.get("finals", [])) for r in results],
            "errors": sum(r.get("errors", 0) for r in results),
            "live_wer": round(statistics.mean(
                wer(reference, " ".join(r.get("finals", []))) for r in results), 3),
            "api_cpu_pct_per_session": round(
                100 * (cpu_after["api"] - cpu_before["api"]) / wall / n, 2),
            "api_cpu_pct_per_session_above_idle": round(
                (100 * (cpu_after["api"] - cpu_before["api"]) / wall - idle_pct) / n, 2),
            "api_idle_cpu_pct": round(idle_pct, 2),
            "worker_cpu_pct": round(100 * (cpu_after["worker"] - cpu_before["worker"]) / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("funasr", "faster-whisper"), default="funasr")
    p.add_argument("--workers", type=int, default=3, help="worker processes = most sessions")
    p.add_argument("--online", action="store_true",
                   help="2-pass: partials from the tiny streaming Paraformer (ASR_ONLINE_MODEL)")
    p.add_argument("--sentences", type=int, default=4, choices=range(1, len(SENTENCES) + 1),
                   metavar=f"1-{len(SENTENCES)}", help="how many of SENTENCES the recording says")
    p.add_argument("--silence-ms", type=int, default=SILENCE_MS,
                   help="server_vad silence_duration_ms: the silence that ends an utterance")
    args = p.parse_args(argv)
    sentences = SENTENCES[:args.sentences]
    pcm = recording(sentences)
    procs = Processes()
    levels: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
            base = start_stack(procs, Path(tmp), args.engine, args.workers, args.online)
            offline = file_text(base, pcm)
            for n in range(1, args.workers + 1):
                idle = idle_api_cpu(procs)
                levels.append(run_level(base, procs, pcm, sentences, n, args.silence_ms, idle))
    finally:
        procs.stop_all()
    file_wer = round(wer(" ".join(sentences), offline), 3)
    carried = max((r["sessions"] for r in levels
                   if r["partial_p95_ms"] is not None and r["partial_p95_ms"] < 1000), default=0)
    partials = "streaming model (2-pass)" if args.online else "re-decoded by the offline model"
    print(f"\nbench-live: {args.engine}, partials {partials}, {len(pcm) / RATE:.1f} s recording of "
          f"{len(sentences)} sentences ({len(words(' '.join(sentences)))} words) streamed in "
          "real time, 100 ms per message, "
          f"silence_duration_ms {args.silence_ms}, one worker host of {args.workers} processes, "
          "2-core CPU host")
    cols = ("sessions", "partials", "partial_p50_ms", "partial_p95_ms",
            "final_after_vad_end_p50_ms", "final_after_vad_end_p95_ms",
            "final_after_speech_end_p50_ms", "final_after_speech_end_p95_ms", "live_wer",
            "api_cpu_pct_per_session", "api_cpu_pct_per_session_above_idle", "worker_cpu_pct",
            "errors")
    print(" | ".join(cols))
    for r in levels:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"file path WER on the same recording: {file_wer}; sessions this host carries with "
          f"p95 partial latency < 1 s: {carried}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"engine": args.engine, "online": args.online,
                               "silence_ms": args.silence_ms, "levels": levels,
                               "file_wer": file_wer,
                               "sessions_carried": carried}, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
