"""The FunASR engine on the tiny Paraformer and the real fsmn-vad, checked against FunASR itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jiwer
import numpy as np
import pytest

import asr_service.engine.funasr_hub as engine_pkg
from asr_service.engine import build_engine
from asr_service.engine.base import SAMPLE_RATE, Engine, TranscribeOptions
from asr_service.engine.funasr_engine import FunASREngine
from asr_service.engine.funasr_import import REGISTRY_FILE
from asr_service.errors import EngineError, ModelLoadError
from asr_service.settings import Settings

if TYPE_CHECKING:
    from funasr import AutoModel

THREADS = 2


@pytest.fixture
def no_cuda() -> None:
    """Skip on a host with CUDA; torch is imported only when such a test runs, not at collection."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a host without CUDA")


def utterances(count: int = 3, speech_s: float = 1.5, pause_s: float = 2.0) -> np.ndarray:
    """Voiced bursts with pauses long enough (> 0.8 s) for the VAD to cut between them."""
    rng = np.random.default_rng(3)
    parts = []
    for i in range(count):
        t = np.arange(int(speech_s * SAMPLE_RATE)) / SAMPLE_RATE
        voiced = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.2 * np.sin(
            2 * np.pi * (300 + 80 * i) * t
        )
        parts.append(voiced + 0.05 * rng.standard_normal(len(t)))
        parts.append(np.zeros(int(pause_s * SAMPLE_RATE)))
    return np.concatenate(parts).astype(np.float32)


def settings(asr: Path | str, vad: Path | str = "", use_gpu: str = "false") -> Settings:
    """Settings for a CPU engine with the given model references."""
    return Settings(
        asr_model=str(asr), asr_vad_model=str(vad), asr_use_gpu=use_gpu, asr_threads=THREADS
    )


def direct(model_assets: dict[str, Path], with_vad: bool) -> AutoModel:
    """FunASR's own AutoModel with the arguments the engine uses."""
    from funasr import AutoModel

    vad = str(model_assets["vad"]) if with_vad else None
    return AutoModel(
        model=str(model_assets["asr"]), vad_model=vad, device="cpu", ncpu=THREADS,
        disable_update=True, disable_pbar=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vad_engine(model_assets: dict[str, Path]) -> Engine:
    """Tiny Paraformer behind the real FSMN-VAD."""
    return build_engine(settings(model_assets["asr"], model_assets["vad"]))


@pytest.fixture(scope="module")
def plain_engine(model_assets: dict[str, Path]) -> Engine:
    """Tiny Paraformer on the whole recording, no VAD."""
    return build_engine(settings(model_assets["asr"]))


@pytest.mark.parametrize("with_vad", [True, False])
def test_text_is_exactly_what_funasr_generates(
    model_assets: dict[str, Path], vad_engine: Engine, plain_engine: Engine, with_vad: bool
) -> None:
    audio = utterances()
    engine = vad_engine if with_vad else plain_engine
    transcript = engine.transcribe(audio, TranscribeOptions())
    expected = direct(model_assets, with_vad).generate(input=audio)[0]["text"]
    assert transcript.text == expected
    assert transcript.text.strip()
    assert transcript.model == "tiny-paraformer"
    assert transcript.language == "auto"


def test_same_audio_gives_the_same_text_twice(vad_engine: Engine) -> None:
    audio = utterances()
    first = vad_engine.transcribe(audio, TranscribeOptions())
    assert vad_engine.transcribe(audio.copy(), TranscribeOptions()) == first


def test_vad_gives_one_ordered_segment_per_utterance(vad_engine: Engine) -> None:
    audio = utterances(count=3)
    duration_ms = len(audio) * 1000 // SAMPLE_RATE
    transcript = vad_engine.transcribe(audio, TranscribeOptions())
    segments = transcript.segments
    assert len(segments) == 3
    assert all(0 <= s.start_ms < s.end_ms <= duration_ms and s.text for s in segments)
    assert all(a.end_ms <= b.start_ms for a, b in zip(segments, segments[1:], strict=False))
    assert " ".join(s.text for s in segments) == transcript.text


def test_without_vad_one_segment_spans_the_recording(plain_engine: Engine) -> None:
    audio = utterances(count=2)
    transcript = plain_engine.transcribe(audio, TranscribeOptions())
    duration_ms = len(audio) * 1000 // SAMPLE_RATE
    assert [(s.start_ms, s.end_ms, s.text) for s in transcript.segments] == [
        (0, duration_ms, transcript.text)
    ]


def test_silence_gives_empty_text_and_no_segments(vad_engine: Engine) -> None:
    transcript = vad_engine.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32), TranscribeOptions())
    assert (transcript.text, transcript.segments) == ("", [])


@pytest.mark.parametrize("samples", [0, 1, 399])
def test_empty_and_tiny_audio_give_empty_text(
    vad_engine: Engine, plain_engine: Engine, samples: int
) -> None:
    audio = np.zeros(samples, np.float32)
    for engine in (vad_engine, plain_engine):
        transcript = engine.transcribe(audio, TranscribeOptions())
        assert (transcript.text, transcript.segments) == ("", [])


def test_hotwords_and_language_do_not_change_a_plain_paraformer(vad_engine: Engine) -> None:
    audio = utterances()
    plain = vad_engine.transcribe(audio, TranscribeOptions())
    hinted = vad_engine.transcribe(audio, TranscribeOptions(language="en", hotwords=["alpha"]))
    assert hinted.text == plain.text
    assert hinted.language == "en"


def test_a_failure_inside_funasr_is_an_engine_error(
    vad_engine: FunASREngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(vad_engine._model, "generate", broken)
    with pytest.raises(EngineError, match="FunASR failed on 10.5 s of audio.*kaboom"):
        vad_engine.transcribe(utterances(), TranscribeOptions())


def mixed_batch() -> list[tuple[np.ndarray, TranscribeOptions]]:
    """Recordings of many lengths (one long enough to be padded against), silence, too short
    to decode, a hinted one (cannot share the call) and a malformed one."""
    return [
        (utterances(), TranscribeOptions()),
        (utterances(count=1, speech_s=0.6), TranscribeOptions()),
        (np.zeros(2 * SAMPLE_RATE, np.float32), TranscribeOptions()),
        (utterances(count=6, speech_s=2.5), TranscribeOptions()),
        (np.zeros(100, np.float32), TranscribeOptions()),
        (utterances(count=2, speech_s=1.0), TranscribeOptions(language="en", hotwords=["x"])),
        (np.zeros((2, SAMPLE_RATE), np.float32), TranscribeOptions()),
        (utterances(count=2, speech_s=3.0, pause_s=0.3), TranscribeOptions()),
        (utterances(count=1, speech_s=8.0), TranscribeOptions()),
    ]


PADDING_WER = 0.05  # measured: 0.036 and 0.008 on two of the seven


@pytest.mark.slow  # each recording decoded alone and in a batch, with and without VAD
@pytest.mark.parametrize("with_vad", [True, False])
def test_a_batch_gives_each_recording_what_it_gets_alone(
    vad_engine: Engine, plain_engine: Engine, with_vad: bool
) -> None:
    engine = vad_engine if with_vad else plain_engine
    items = mixed_batch()
    outcomes = engine.transcribe_batch(items)
    assert len(outcomes) == len(items)
    same = 0
    for (audio, options), outcome in zip(items, outcomes, strict=True):
        try:
            alone = engine.transcribe(audio, options)
        except EngineError as exc:  # the malformed one: its own error, nobody else's
            assert isinstance(outcome, EngineError) and str(outcome) == str(exc)
            continue
        assert not isinstance(outcome, Exception)
        # Padded to its batch's longest segment, a segment may decode a token differently on
        # these random weights (as FunASR's own batches do): the spans are the same, the text
        # within PADDING_WER.
        assert [(s.start_ms, s.end_ms) for s in outcome.segments] == [
            (s.start_ms, s.end_ms) for s in alone.segments]
        assert (outcome.language, outcome.model) == (alone.language, alone.model)
        if alone.text:
            assert jiwer.wer(alone.text, outcome.text) <= PADDING_WER
            same += outcome.text == alone.text
        else:
            assert outcome.text == ""
    assert same >= 4


@pytest.mark.slow  # the batch, then each recording alone again
def test_a_batch_whose_shared_call_fails_runs_its_recordings_alone(
    vad_engine: FunASREngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = mixed_batch()[:4]
    expected = [vad_engine.transcribe(a, o) for a, o in items]

    def broken(pieces: list[np.ndarray]) -> list[str]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(vad_engine, "_decode_pieces", broken)
    assert vad_engine.transcribe_batch(items) == expected


def test_warm_up_runs(vad_engine: FunASREngine) -> None:
    vad_engine.warm_up()


@pytest.mark.usefixtures("no_cuda")
def test_gpu_required_without_cuda_refuses_to_start(model_assets: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="ASR_USE_GPU=true but no CUDA device"):
        build_engine(settings(model_assets["asr"], use_gpu="true"))


@pytest.mark.usefixtures("no_cuda")
def test_silent_cpu_fallback_is_refused(model_assets: dict[str, Path]) -> None:
    # FunASR quietly loads on CPU when asked for CUDA it does not have; the engine must not.
    with pytest.raises(ModelLoadError, match="requested cuda"):
        FunASREngine(str(model_assets["asr"]), None, None, "cuda", THREADS, 300)


def test_missing_local_directory_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such model directory"):
        build_engine(settings(tmp_path / "no-such-model"))


def test_unreachable_hub_fails_fast_and_names_the_fix(
    model_assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_pkg, "HUB_HOST", "hub.invalid")  # .invalid never resolves
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path))  # an empty cache
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        build_engine(settings("paraformer-zh", model_assets["vad"]))
    assert time.monotonic() - started < 10
    assert "ASR_MODEL='paraformer-zh'" in caught.value.detail
    assert "could not be reached" in caught.value.detail
    assert "local model directory" in caught.value.detail


def test_importing_the_engine_package_and_backends_loads_no_model_library() -> None:
    code = (
        "import sys, asr_service.engine, asr_service.engine.funasr_engine, "
        "asr_service.engine.whisper_engine; print(sorted(m for m in ('torch', 'funasr', "
        "'faster_whisper', 'ctranslate2') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_each_class_a_worker_imports_is_the_one_a_full_funasr_import_registers(tmp_path):
    """A worker imports only the FunASR modules its models' classes come from
    (engine/funasr_import.py): each name must lead to the module that a full `import funasr`
    leaves registered under it (some names are registered twice; the last import wins)."""
    out = tmp_path / "registry.json"
    subprocess.run([sys.executable, "-m", "asr_service.engine.funasr_import", str(out)],
                   check=True, capture_output=True, timeout=180)
    assert json.loads(out.read_text()) == json.loads(REGISTRY_FILE.read_text()), \
        "funasr changed: run `python -m asr_service.engine.funasr_import` and commit the file"


CHECK_SLIM_IMPORT = """
import importlib, sys
from pathlib import Path
from asr_service.engine import funasr_import
funasr_import._package()
# Registered by both, in the order a full import does not take: e_paraformer's must win.
importlib.import_module("funasr.models.e_paraformer.decoder")
importlib.import_module("funasr.models.paraformer.decoder")
funasr_import.auto_model(sys.argv[1], sys.argv[2])
from funasr.register import tables
needed = [c for d in sys.argv[1:] for c in funasr_import._classes_for([d])]
print(all(getattr(tables, t)[n].__module__ == m for t, n, m in needed), len(needed))
import funasr
print(funasr._asr_service_complete, "transformers" in sys.modules,
      funasr.__getattr__.__name__)  # anyone's `from funasr import AutoModel`: the whole package
"""


def test_a_worker_imports_a_dozen_funasr_modules_and_others_still_get_all(model_assets):
    run = subprocess.run(
        [sys.executable, "-c", CHECK_SLIM_IMPORT, str(model_assets["asr"]),
         str(model_assets["vad"])], check=True, capture_output=True, text=True, timeout=180)
    assert run.stdout.split()[-5:] == ["True", "9", "False", "False", "whole_on_first_use"], \
        run.stdout
