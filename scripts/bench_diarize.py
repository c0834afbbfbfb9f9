"""`make bench-diarize`: diarization quality and cost on espeak-ng conversations, both engines.

For each engine (FunASR: the tiny Paraformer + FSMN-VAD; faster-whisper: tiny.en) it runs
every conversation without and with diarization, alternately in the same run, and prints:
DER (pyannote.metrics, collar 0.25 s) and the share of conversations whose speaker count is
right; RTF without / with diarization and the overhead. Then the peak memory of diarizing a
4 h recording (its speech regions from the reference turns, tiled) in a process of its own.

    python scripts/bench_diarize.py [--two 10] [--three 5] [--rounds 2] [--threads 1]
                                    [--hours 4] [--skip-long] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr_service.diarize import DiarizeSpec  # noqa: E402
from asr_service.diarize.runner import Diarizer  # noqa: E402
from asr_service.engine import build_engine  # noqa: E402
from asr_service.engine.base import Segment, TranscribeOptions, Transcript  # noqa: E402
from asr_service.settings import Settings  # noqa: E402
from tests.conversations import RATE, read_rttm, write  # noqa: E402

MODELS = ROOT / "models"
ENGINES = {
    "funasr": {"asr_engine": "funasr", "asr_model": str(MODELS / "tiny-paraformer"),
               "asr_vad_model": str(MODELS / "fsmn-vad")},
    "faster-whisper": {"asr_engine": "faster-whisper",
                       "asr_model": str(MODELS / "whisper-tiny-en"), "asr_vad_model": ""},
}
COLLAR_S = 0.25


def conversations(folder: Path, two: int, three: int) -> list[Path]:
    """The benchmark's conversations (made once under folder, kept)."""
    return ([write(folder, f"two_{i:02d}", 1 + i, 2) for i in range(two)]
            + [write(folder, f"three_{i:02d}", 101 + i, 3) for i in range(three)])


def annotation(turns: list[tuple[float, float, str]]):  # noqa: ANN201 - pyannote Annotation
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span

    found = Annotation()
    for start, end, who in turns:
        if end > start:
            found[Span(start, end)] = who
    return found


def bench_engine(name: str, clips: list[Path], rounds: int, threads: int) -> dict:
    """DER, speaker counts and RTF with and without diarization for one engine."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    settings = Settings(**ENGINES[name], asr_threads=threads, asr_use_gpu="false",
                        asr_speaker_model=str(MODELS / "voice-encoder"))
    engine = build_engine(settings)
    engine.warm_up()
    diarizer = Diarizer(settings.asr_speaker_model, engine.device, threads)
    started = time.perf_counter()
    diarizer.encoder()
    load_s = time.perf_counter() - started
    audio = {clip: sf.read(clip, dtype="float32")[0] for clip in clips}
    plain, turns = TranscribeOptions(), TranscribeOptions(turns=True)
    engine.transcribe(audio[clips[0]], plain)  # warm both paths once
    diarizer.label(audio[clips[0]], engine.transcribe(audio[clips[0]], turns), DiarizeSpec())
    without: dict[Path, list[float]] = {c: [] for c in clips}
    with_: dict[Path, list[float]] = {c: [] for c in clips}
    labelled: dict[Path, Transcript] = {}
    step: dict[Path, list[float]] = {c: [] for c in clips}  # the diarize step alone
    for r in range(rounds):
        for clip in clips:
            order = (False, True) if r % 2 == 0 else (True, False)  # alternate who goes first
            for diarize in order:
                t0 = time.perf_counter()
                if diarize:
                    transcript = engine.transcribe(audio[clip], turns)
                    t1 = time.perf_counter()
                    labelled[clip] = diarizer.label(audio[clip], transcript, DiarizeSpec())
                    with_[clip].append(time.perf_counter() - t0)
                    step[clip].append(time.perf_counter() - t1)
                else:
                    engine.transcribe(audio[clip], plain)
                    without[clip].append(time.perf_counter() - t0)
    der = DiarizationErrorRate(collar=COLLAR_S)
    per_clip = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "uem approximated": the union of both, as intended
        for clip in clips:
            ref = read_rttm(clip.with_suffix(".rttm"))
            hyp = labelled[clip]
            value = der(annotation([(t.start, t.end, t.speaker) for t in ref]),
                        annotation([(s.start_ms / 1000, s.end_ms / 1000, s.speaker or "?")
                                    for s in hyp.segments]))
            per_clip.append({"clip": clip.stem, "der": round(value, 4),
                             "speakers": len(hyp.speakers or []),
                             "truth": len({t.speaker for t in ref})})
    seconds = sum(a.size for a in audio.values()) / RATE
    t_without = sum(statistics.median(v) for v in without.values())
    t_with = sum(statistics.median(v) for v in with_.values())
    t_step = sum(statistics.median(v) for v in step.values())
    return {"engine": name, "clips": len(clips), "audio_s": round(seconds, 1),
            "der": round(abs(der), 4),
            # DER's parts: who-spoke errors apart from speech found where there is none or
            # missed (the engine's VAD and timestamps).
            **{part: round(der[name] / der["total"], 4) for part, name in (
                ("confusion", "confusion"), ("false_alarm", "false alarm"),
                ("missed", "missed detection"))},
            "count_right": sum(c["speakers"] == c["truth"] for c in per_clip),
            "rtf_without": round(t_without / seconds, 4), "rtf_with": round(t_with / seconds, 4),
            "overhead_pct": round(100 * (t_with - t_without) / t_without, 1),
            # The diarize step's own time over the job without it: steadier than the
            # difference of two whole runs on a busy host.
            "step_rtf": round(t_step / seconds, 4),
            "step_pct": round(100 * t_step / t_without, 1),
            "encoder_load_s": round(load_s, 2), "per_clip": per_clip}


def long_child(clips: list[str], hours: float, threads: int) -> None:
    """In a process of its own: diarize `hours` of tiled conversations; print the memory."""
    import psutil

    rss = psutil.Process().memory_info
    pieces = [(sf.read(c, dtype="float32")[0], read_rttm(Path(c).with_suffix(".rttm")))
              for c in clips]
    total = int(hours * 3600 * RATE)
    samples = np.empty(total, dtype=np.float32)  # filled in place: no concatenated copies
    segments: list[Segment] = []
    at = 0
    while at < total:
        for x, turns in pieces:
            n = min(x.size, total - at)
            samples[at:at + n] = x[:n]
            segments += [Segment(int(1000 * (at / RATE + t.start)),
                                 int(1000 * (at / RATE + min(t.end, n / RATE))), "x")
                         for t in turns if t.start < n / RATE]
            at += n
            if at >= total:
                break
    diarizer = Diarizer(str(MODELS / "voice-encoder"), "cpu", threads)
    diarizer.encoder()
    before = rss().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    out = diarizer.label(samples, Transcript("x", segments, "en", "m"), DiarizeSpec())
    took = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"hours": hours, "segments": len(segments),
                      "speech_s": round(sum(s.end_ms - s.start_ms for s in segments) / 1000),
                      "speakers": len(out.speakers or []), "diarize_s": round(took, 1),
                      "audio_mb": round(samples.nbytes / 2**20),
                      "rss_before_mb": round(before / 2**20),
                      "peak_rss_mb": round(max(peak, peak_before) / 2**20),
                      "growth_mb": round((peak - before) / 2**20)}))


def table(results: list[dict]) -> str:
    head = (f"{'engine':16} {'clips':>5} {'audio s':>8} {'DER':>7} {'confus.':>8} "
            f"{'false al.':>9} {'missed':>7} {'count ok':>9} "
            f"{'RTF w/o':>8} {'RTF with':>9} {'overhead':>9} {'step':>6}")
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r['engine']:16} {r['clips']:>5} {r['audio_s']:>8} {100 * r['der']:>6.2f}% "
                    f"{100 * r['confusion']:>7.2f}% {100 * r['false_alarm']:>8.2f}% "
                    f"{100 * r['missed']:>6.2f}% "
                    f"{r['count_right']:>4}/{r['clips']:<4} {r['rtf_without']:>8} "
                    f"{r['rtf_with']:>9} {r['overhead_pct']:>8}% {r['step_pct']:>5}%")
    return "\n".join(rows)


def main() -> None:
    """CLI: the benchmark; prints its tables (and writes --out as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--two", type=int, default=10)
    parser.add_argument("--three", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--engines", default="funasr,faster-whisper")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--folder", type=Path, default=ROOT / "run" / "bench-diarize")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--long-child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.long_child is not None:
        return long_child(args.long_child, args.hours, args.threads)
    clips = conversations(args.folder, args.two, args.three)
    results = [bench_engine(name, clips, args.rounds, args.threads)
               for name in args.engines.split(",")]
    print(table(results))
    for r in results:
        print(f"{r['engine']}: per clip " + ", ".join(
            f"{c['clip']} {100 * c['der']:.1f}% {c['speakers']}/{c['truth']}"
            for c in r["per_clip"]))
    report: dict = {"engines": results, "threads": args.threads, "rounds": args.rounds}
    if not args.skip_long:
        run = subprocess.run([sys.executable, __file__, "--hours", str(args.hours),
                              "--threads", str(args.threads), "--long-child",
                              *map(str, clips)], capture_output=True, text=True, check=True)
        report["long"] = json.loads(run.stdout.strip().splitlines()[-1])
        long = report["long"]
        print(f"{args.hours:g} h recording ({long['segments']} segments, {long['speech_s']} s of "
              f"speech): diarized in {long['diarize_s']} s, {long['speakers']} speakers; "
              f"peak RSS {long['peak_rss_mb']} MB (audio alone {long['audio_mb']} MB, "
              f"before diarizing {long['rss_before_mb']} MB, growth {long['growth_mb']} MB)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
