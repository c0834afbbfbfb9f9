"""The Batcher's rules, on a stand-in engine process: what joins a batch, and that a failure
in a batch fails only the recording that caused it (the real engine process and worker are
tested in tests/integration/test_batching.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from asr_service.batching import Batcher
from asr_service.engine.base import SAMPLE_RATE, TranscribeOptions, Transcript
from asr_service.engine.host import BatchResult, HostFailed, Item
from asr_service.errors import EngineError, EngineTimeLimit
from tests.harness import eventually


def audio(seconds: float, tag: float = 0.0) -> np.ndarray:
    """A recording that the stand-in recognises by its first sample."""
    samples = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    samples[0] = tag
    return samples


def said(samples: np.ndarray) -> Transcript:
    return Transcript(text=f"tag {samples[0]:g}", segments=[], language="auto", model="fake")


class FakeHost:
    """Stands in for EngineHost: "crashes" on tag 13 and "hangs" on tag 99 with the rest of
    its batch, fails tag 7 alone (an engine error), and records every batch it was given."""

    started = 0

    def __init__(self, log: list[list[float]], delay_s: float = 0.0) -> None:
        FakeHost.started += 1
        self.name, self.device, self.pid = "fake", "cpu", FakeHost.started
        self.log, self.delay_s, self.closed = log, delay_s, False

    def run(self, items: list[Item], timeout_s: float | None) -> list[BatchResult]:
        assert not self.closed
        tags = [float(a[0]) for a, _ in items]
        self.log.append(tags)
        time.sleep(self.delay_s)
        if 13 in tags:
            raise HostFailed("the engine process died (exit code -9)", timed_out=False)
        if 99 in tags:
            raise HostFailed(f"no answer within {timeout_s} s", timed_out=True)
        return [EngineError("bad") if t == 7 else said(a)
                for (a, _), t in zip(items, tags, strict=True)]

    def rss_bytes(self) -> int:
        return 10

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def batches() -> list[list[float]]:
    return []


def starting(hosts: list[FakeHost], batches: list[list[float]]) -> Callable[[], FakeHost]:
    """A start_host that keeps every engine process it started in `hosts`."""
    def start() -> FakeHost:
        hosts.append(FakeHost(batches))
        return hosts[-1]

    return start


def batcher(batches: list[list[float]], **kwargs: object) -> Batcher:
    settings: dict = {"wait_s": 0.2, "max_jobs": 4, "max_audio_s": 100.0, "time_limit_s": 5.0,
                      "start_host": lambda: FakeHost(batches), **kwargs}
    return Batcher(**settings)


def together(b: Batcher, recordings: list[np.ndarray], decode_s: float = 0.01,
             ) -> list[Transcript | Exception]:
    """Jobs started at once in job threads, as a worker's pool runs them: each announces
    itself, then its recording reaches the batcher after `decode_s` more than the one before."""
    all_started = threading.Barrier(len(recordings))

    def one(samples: np.ndarray, delay_s: float) -> Transcript | Exception:
        b.job_started()
        all_started.wait()
        try:
            time.sleep(delay_s)
            return b.transcribe(samples, TranscribeOptions())
        except Exception as exc:
            return exc
        finally:
            b.job_ended()

    with ThreadPoolExecutor(len(recordings)) as pool:
        futures = [pool.submit(one, samples, i * decode_s)
                   for i, samples in enumerate(recordings)]
        return [f.result() for f in futures]


def test_jobs_arriving_within_the_wait_share_one_call_up_to_max_jobs(batches):
    b = batcher(batches)
    outcomes = together(b, [audio(1, t) for t in range(1, 7)])
    assert [o.text for o in outcomes] == [f"tag {t}" for t in range(1, 7)]
    # 10 ms apart, a busy machine can swap two arrivals: which job lands in which batch is the
    # arrival order's; what the batcher decides is four in one call, then the other two.
    assert [len(batch) for batch in batches] == [4, 2], batches
    assert sorted(t for batch in batches for t in batch) == [1, 2, 3, 4, 5, 6]
    b.close()


def test_a_lone_job_does_not_wait(batches):
    b = batcher(batches, wait_s=5.0)
    started = time.monotonic()
    assert together(b, [audio(1, 3)])[0].text == "tag 3"
    assert time.monotonic() - started < 1.0
    assert batches == [[3]]
    b.close()


def test_a_batch_waits_for_started_jobs_up_to_the_wait_only(batches):
    b = batcher(batches, wait_s=0.3)
    # recordings reach the batcher 0, 0.2, 0.4 and 0.6 s after the first: the first two fit
    # in its wait, the others make the next batch (whose own wait then takes in the last)
    outcomes = together(b, [audio(1, t) for t in (1, 2, 3, 4)], decode_s=0.2)
    assert [o.text for o in outcomes] == ["tag 1", "tag 2", "tag 3", "tag 4"]
    assert batches == [[1, 2], [3, 4]]
    b.close()


def test_a_job_that_never_reaches_the_engine_is_not_waited_for(batches):
    b = batcher(batches, wait_s=5.0)
    b.job_started()  # e.g. its recording will not decode: it ends without transcribing
    b.job_ended()
    started = time.monotonic()
    assert together(b, [audio(1, 3)])[0].text == "tag 3"
    assert time.monotonic() - started < 1.0
    b.close()


def test_a_job_past_the_audio_limit_starts_the_next_batch(batches):
    b = batcher(batches, max_audio_s=2.5)
    together(b, [audio(1, 1), audio(1, 2), audio(1, 3), audio(3, 4)])
    assert batches == [[1, 2], [3], [4]]  # a job longer than the limit still runs, alone
    b.close()


def test_an_engine_error_fails_only_its_job(batches):
    b = batcher(batches)
    outcomes = together(b, [audio(1, 1), audio(1, 7), audio(1, 3)])
    assert [getattr(o, "text", None) for o in outcomes] == ["tag 1", None, "tag 3"]
    assert isinstance(outcomes[1], EngineError)
    assert batches == [[1, 7, 3]]
    b.close()


def test_a_batch_whose_engine_process_dies_runs_again_one_by_one(batches):
    hosts: list[FakeHost] = []
    start = starting(hosts, batches)
    ready: list[int] = []
    b = batcher(batches, start_host=start, on_ready=lambda host: ready.append(host.pid))
    outcomes = together(b, [audio(1, 1), audio(1, 13), audio(1, 3)])
    assert [getattr(o, "text", None) for o in outcomes] == ["tag 1", None, "tag 3"]
    assert isinstance(outcomes[1], EngineError) and "died" in str(outcomes[1])
    assert batches == [[1, 13, 3], [1], [13], [3]]
    # the first process, and the one that died alone with the culprit, were replaced
    assert [h.closed for h in hosts] == [True, True, False]
    assert ready == [h.pid for h in hosts]  # each said it is ready, replacements too
    b.close()


def test_a_lone_job_whose_engine_process_dies_runs_once_more_before_it_is_blamed(batches):
    b = batcher(batches)
    outcome = together(b, [audio(1, 13)])[0]
    assert isinstance(outcome, EngineError) and "died" in str(outcome)
    assert batches == [[13], [13]]
    b.close()


def test_a_batch_past_the_time_limit_fails_only_the_slow_job_as_a_time_limit(batches):
    b = batcher(batches)
    outcomes = together(b, [audio(1, 99), audio(1, 2)])
    assert isinstance(outcomes[0], EngineTimeLimit)
    assert "hard time limit of 5.0 s" in outcomes[0].detail
    assert outcomes[1].text == "tag 2"
    assert batches == [[99, 2], [99], [2]]
    b.close()


def test_an_engine_process_above_the_memory_limit_is_replaced(batches):
    hosts: list[FakeHost] = []
    start = starting(hosts, batches)
    b = batcher(batches, start_host=start, max_rss_bytes=5)
    assert b.transcribe(audio(1, 1), TranscribeOptions()).text == "tag 1"
    assert b.transcribe(audio(1, 2), TranscribeOptions()).text == "tag 2"
    eventually(lambda: len(hosts) == 3, timeout=5)  # replaced after the outcome is given
    assert hosts[0].closed and hosts[1].closed
    b.close()


def test_an_engine_process_that_cannot_be_replaced_stops_the_worker(batches):
    fatal = threading.Event()
    starts = iter([FakeHost(batches)])

    def start() -> FakeHost:
        try:
            return next(starts)
        except StopIteration:
            raise EngineError("model gone") from None

    b = batcher(batches, start_host=start, on_fatal=fatal.set)
    outcome = together(b, [audio(1, 13)])[0]
    assert fatal.is_set()
    assert isinstance(outcome, EngineError)
