"""faster-whisper backend (CTranslate2): the only module that imports faster_whisper and
ctranslate2 (when a worker loads it). Models are local CTranslate2 directories; nothing is
downloaded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from asr_service.engine import device as devices
from asr_service.engine.base import (
    SAMPLE_RATE,
    Segment,
    TranscribeOptions,
    Transcript,
    Word,
    mono_samples,
    transcribe_each,
    warm_up_audio,
)
from asr_service.errors import EngineError, ModelLoadError
from asr_service.settings import Settings

log = logging.getLogger(__name__)
CUDA_PROBE = "import sys, ctranslate2; sys.exit(0 if ctranslate2.get_cuda_device_count() else 3)"
NO_CUDA_HINT = "check the driver, CUDA_VISIBLE_DEVICES and that CTranslate2 sees the GPU"
COMPUTE_TYPES = {"cpu": "int8", "cuda": "float16"}  # for ASR_COMPUTE_TYPE=auto
BEAM_SIZE = 5


def check_model(settings: Settings) -> None:
    """ASR_MODEL must be a local CTranslate2 Whisper directory (no hub is reachable)."""
    path = Path(settings.asr_model).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelLoadError(
            f"ASR_MODEL={settings.asr_model!r} is not a CTranslate2 Whisper model directory "
            f"(no model.bin in {path.resolve()}); faster-whisper models are loaded from local "
            "directories only (`make models` provides models/whisper-tiny-en)")


def preflight(settings: Settings) -> str:
    """The model directory and the device, checked in the worker's parent (CUDA in a
    subprocess)."""
    check_model(settings)
    return devices.preflight(settings.asr_use_gpu, CUDA_PROBE, NO_CUDA_HINT)


def _ctranslate2_has_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


def build(settings: Settings) -> WhisperEngine:
    """Check the model and device, then load it."""
    check_model(settings)
    device = devices.in_process(settings.asr_use_gpu, _ctranslate2_has_cuda, NO_CUDA_HINT)
    compute_type = (COMPUTE_TYPES[device] if settings.asr_compute_type == "auto"
                    else settings.asr_compute_type)
    return WhisperEngine(settings.asr_model, device, compute_type, settings.threads,
                         vad=not settings.asr_vad_model)


def decode_options(options: TranscribeOptions, vad: bool) -> dict[str, Any]:
    """WhisperModel.transcribe() options for a job (the fidelity test calls it the same way)."""
    kwargs: dict[str, Any] = {"beam_size": BEAM_SIZE, "word_timestamps": True,
                              "vad_filter": vad}
    if options.language and options.language != "auto":
        kwargs["language"] = options.language.split("-")[0]
    if options.hotwords:
        kwargs["hotwords"] = " ".join(options.hotwords)
    return kwargs


class WhisperEngine:
    """A faster-whisper model loaded once per process."""

    def __init__(self, model: str, device: str, compute_type: str, threads: int,
                 vad: bool) -> None:
        from faster_whisper import WhisperModel

        self.name = Path(model).name
        self.device = device
        self.compute_type = compute_type
        self._vad = vad
        try:
            self._model = WhisperModel(model, device=device, compute_type=compute_type,
                                       cpu_threads=threads, num_workers=1,
                                       local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"faster-whisper could not load {model!r} on {device} "
                                 f"({compute_type}): {exc}") from exc
        if self._model.model.device != device:  # CTranslate2 never moves silently; be sure
            raise ModelLoadError(f"the model is on {self._model.model.device}, not {device}")

    def warm_up(self) -> None:
        """One transcription of 1 s of low noise, so the first job pays no lazy set-up."""
        self.transcribe(warm_up_audio(), TranscribeOptions())

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe float32 mono samples at SAMPLE_RATE; the text is Whisper's, untouched."""
        samples = mono_samples(audio)
        try:
            pieces, info = self._model.transcribe(samples, **decode_options(options, self._vad))
            pieces = list(pieces)  # the generator decodes as it is read
        except Exception as exc:
            seconds = samples.size / SAMPLE_RATE
            raise EngineError(f"faster-whisper failed on {seconds:.1f} s of audio: "
                              f"{exc!r}") from exc
        return to_transcript(pieces, info.language, self.name, samples.size)

    def transcribe_batch(
        self, items: list[tuple[np.ndarray, TranscribeOptions]]
    ) -> list[Transcript | Exception]:
        """One after another: faster-whisper's batched pipeline batches the chunks of one
        recording, with other results than its sequential decoding."""
        return transcribe_each(self, items)


def to_transcript(pieces: list[Any], language: str, model: str, n_samples: int) -> Transcript:
    """faster-whisper's segments as the normalized Transcript (times clamped to the audio)."""
    end_ms = n_samples * 1000 // SAMPLE_RATE

    def ms(seconds: float) -> int:
        return min(max(int(round(seconds * 1000)), 0), end_ms)

    segments = [Segment(ms(p.start), ms(p.end), p.text.strip()) for p in pieces
                if p.text.strip()]
    words = [Word(ms(w.start), ms(w.end), w.word.strip()) for p in pieces
             for w in (p.words or []) if w.word.strip()]
    text = " ".join(s.text for s in segments)
    return Transcript(text=text, segments=segments, language=language, model=model, words=words)
