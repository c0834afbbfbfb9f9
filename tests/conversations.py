"""Spoken conversations for diarization tests and `make bench-diarize`: espeak-ng voices that
differ (male and female variants, other pitches) take turns of 2-8 s, and the reference turns
are written next to each recording as RTTM.

    python -m tests.conversations OUT_DIR [--count N] [--speakers 2|3] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16_000
# (espeak-ng voice, pitch 0-99, words per minute): two male variants and two female ones,
# chosen so that no two sound alike to the encoder (en-gb+f4 beside en-gb+f2 nearly does).
VOICES = [("en-us+m3", 35, 160), ("en-us+f5", 60, 150), ("en-us+m7", 55, 170),
          ("en-gb+f2", 90, 155)]
WORDS = ("the meeting moved to thursday because the budget review was not ready yet and "
         "everyone agreed that the new office needs better chairs more light and a quiet room "
         "for calls we should ask the team about the release plan the customer wants a demo "
         "next week so the tests must pass before friday please send the notes after lunch "
         "our numbers look good this quarter but travel costs went up again").split()
TURN_S = (2.0, 8.0)
# FSMN-VAD (the config of `make models`) ends a segment only after ~2.2 s of silence on these
# voices (measured: 2.0 s splits three voices of four, 1.8 s none): shorter pauses would put
# two turns in one FunASR segment, which then has one speaker (its text has no word times).
GAP_S = (2.2, 3.0)


@dataclass(frozen=True)
class Turn:
    """One speaker's turn in a conversation, in seconds."""

    speaker: str
    start: float
    end: float


def speak(text: str, voice: tuple[str, int, int]) -> np.ndarray:
    """`text` spoken by espeak-ng in `voice`, 16 kHz mono float32, without edge silence."""
    espeak = shutil.which("espeak-ng")
    if not espeak:
        raise RuntimeError("espeak-ng is not installed (make system-packages installs it)")
    name, pitch, speed = voice
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run([espeak, "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(out),
                        text], check=True, capture_output=True)
        samples, rate = sf.read(out, dtype="float32")
    samples = soxr.resample(samples, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(samples) > 1e-3)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples


def _turn_audio(rng: random.Random, voice: tuple[str, int, int]) -> np.ndarray:
    """A turn of TURN_S seconds: words added until it lasts long enough, cut to fit."""
    target = rng.uniform(*TURN_S)
    count = max(3, int(target * 2.6))
    while True:
        start = rng.randrange(len(WORDS))
        text = " ".join(WORDS[(start + i) % len(WORDS)] for i in range(count))
        audio = speak(text, voice)
        seconds = audio.size / RATE
        if TURN_S[0] <= seconds <= TURN_S[1]:
            return audio
        count = max(2, count + (-2 if seconds > TURN_S[1] else 2))


def conversation(seed: int, speakers: int, turns: int = 8) -> tuple[np.ndarray, list[Turn]]:
    """Samples and reference turns of a conversation: every speaker talks, never twice in a
    row (unless alone), with pauses of GAP_S between turns."""
    rng = random.Random(seed)
    voices = rng.sample(VOICES, speakers)
    order = list(range(speakers))
    rng.shuffle(order)
    while len(order) < turns:
        order.append(rng.choice([s for s in range(speakers) if s != order[-1]] or [0]))
    pieces: list[np.ndarray] = [np.zeros(int(0.5 * RATE), np.float32)]
    reference: list[Turn] = []
    at = 0.5
    for who in order:
        audio = _turn_audio(rng, voices[who])
        reference.append(Turn(f"spk{who + 1}", round(at, 3), round(at + audio.size / RATE, 3)))
        gap = np.zeros(int(rng.uniform(*GAP_S) * RATE), np.float32)
        pieces += [audio, gap]
        at += (audio.size + gap.size) / RATE
    return np.concatenate(pieces), reference


def rttm(name: str, turns: list[Turn]) -> str:
    """The turns as RTTM lines (the NIST format pyannote.metrics reads)."""
    return "".join(f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                   f"{t.speaker} <NA> <NA>\n" for t in turns)


def read_rttm(path: Path) -> list[Turn]:
    """Turns from an RTTM file."""
    turns = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, length = float(parts[3]), float(parts[4])
            turns.append(Turn(parts[7], start, start + length))
    return turns


def write(folder: Path, name: str, seed: int, speakers: int, turns: int = 8) -> Path:
    """Write NAME.wav and NAME.rttm under folder (kept when they exist); the wav's path."""
    folder.mkdir(parents=True, exist_ok=True)
    wav, ref = folder / f"{name}.wav", folder / f"{name}.rttm"
    if not (wav.is_file() and ref.is_file()):
        samples, turns_made = conversation(seed, speakers, turns)
        sf.write(wav, samples, RATE, subtype="PCM_16")
        ref.write_text(rttm(name, turns_made))
    return wav


def main() -> None:
    """CLI: write conversations and their RTTM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--speakers", type=int, default=2, choices=(1, 2, 3, 4))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for i in range(args.count):
        print(write(args.out, f"conv{args.speakers}_{i:02d}", args.seed + i, args.speakers))


if __name__ == "__main__":
    main()
