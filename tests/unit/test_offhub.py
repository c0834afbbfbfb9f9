"""Blocking C calls run off the gevent hub, and a submit's probe answers within its bound."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from asr_service import offhub

ROOT = Path(__file__).resolve().parents[2]

# Run under gevent's monkey patching, as gunicorn's gevent worker does: a greenlet ticks every
# 10 ms while the probe's C call (here libc's usleep, 3 s) runs; the probe is bounded at 0.5 s.
UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import ctypes, json, os, time
    import gevent
    from asr_service import audio, offhub
    from asr_service.errors import ProbeBusy

    libc = ctypes.CDLL(None)
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    def stuck_probe(data):
        libc.usleep(3_000_000)  # a C call that holds the thread, as FFmpeg's waits did

    ticker = gevent.spawn(tick)
    gevent.sleep(0.05)
    audio.probe = stuck_probe
    began = time.monotonic()
    try:
        audio.probe_off_hub(b"x", timeout_s=0.5)
        answer = "accepted"
    except ProbeBusy as exc:
        answer = exc.slug
    took = time.monotonic() - began
    during = [t for t in ticks if t >= began]
    stall = max(b - a for a, b in zip(during, during[1:])) if len(during) > 1 else took
    print(json.dumps({"answer": answer, "took_s": took, "ticks": len(during),
                      "longest_stall_s": stall,
                      "result": offhub.call(lambda a, b: a + b, 2, 3, timeout_s=5)}))
    os._exit(0)  # the stuck pool thread would otherwise hold the exit for the rest of its 3 s
""")


def test_a_stuck_probe_under_gevent_answers_in_time_and_stalls_no_greenlet() -> None:
    run = subprocess.run([sys.executable, "-c", UNDER_GEVENT], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print("offhub under gevent:", figures)

    # An overrun is the server's fault: 503 to try again, never "not audio" for a good file.
    assert figures["answer"] == "probe-busy"
    assert figures["result"] == 5
    assert figures["took_s"] < 2.5  # the bound was 0.5 s; the C call lasts 3 s
    # Other greenlets kept running while the C call held its thread (old code: 0 ticks).
    assert figures["ticks"] > 5 and figures["longest_stall_s"] < 1.0


def test_without_gevent_it_is_a_plain_call_in_this_thread() -> None:
    caller = threading.get_ident()

    assert offhub.call(threading.get_ident, timeout_s=0.001) == caller
    with pytest.raises(ZeroDivisionError):
        offhub.call(lambda: 1 / 0, timeout_s=1)


# Many probes at once, as a burst of submits to one gunicorn gevent worker makes them: every
# body goes through libsndfile's open first, which soundfile serialises behind one lock.
CONCURRENT_PROBES = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import json, os
    import gevent
    from asr_service import audio
    from asr_service.errors import AudioInvalid, ProbeBusy
    from tests import samples

    bodies = ([samples.sdp_session(41234 + i) for i in range(6)]
              + [samples.ffconcat("README.md")] * 3 + [samples.encode("wav", 0.5)] * 3)
    answers = []

    def probe(body):
        try:
            answers.append(audio.probe_off_hub(body, timeout_s=2).format)
        except (AudioInvalid, ProbeBusy) as exc:
            answers.append(exc.slug)

    for _ in range(20):
        gevent.joinall([gevent.spawn(probe, body) for body in bodies])
    print(json.dumps({a: answers.count(a) for a in set(answers)}))
    os._exit(0)
""")


def test_concurrent_probes_under_gevent_never_wait_on_each_other() -> None:
    # soundfile's lock, made by gevent's patched threading, lost wakeups between the pool's OS
    # threads: 7 of the first 12 probes waited out their bound (503) instead of taking ~1 ms.
    run = subprocess.run([sys.executable, "-c", CONCURRENT_PROBES], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    answers = json.loads(run.stdout.strip().splitlines()[-1])
    assert answers == {"audio-invalid": 180, "wav": 60}, answers
