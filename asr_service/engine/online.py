"""A streaming model for live sessions' partial text (ASR_ONLINE_MODEL): FunASR's
ParaformerStreaming, fed in chunks with its encoder and decoder caches, as FunASR's own 2-pass
server does. Loaded once per worker process; one OnlineDecoder per open utterance."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from asr_service.errors import ModelLoadError
from asr_service.settings import Settings

log = logging.getLogger(__name__)

CHUNK_SIZE = (0, 10, 5)
"""FunASR's chunk_size [look-back, chunk, look-ahead] in 60 ms frames: text every 600 ms of
audio, with 300 ms of look-ahead (its clients send [5, 10, 5])."""
SAMPLES_PER_FRAME = 960  # 60 ms at 16 kHz
_loaded: dict[str, OnlineModel] = {}
_lock = threading.Lock()


class OnlineModel:
    """A loaded streaming model; decoders share it (one process, one session at a time)."""

    def __init__(self, model: str, device: str, threads: int) -> None:
        from asr_service.engine.funasr_import import auto_model

        AutoModel = auto_model(model)  # noqa: N806 (FunASR's class)
        self.name = Path(model).name if Path(model).is_dir() else model
        try:
            self.model = AutoModel(model=model, device=device, ncpu=threads,
                                   disable_update=True, disable_pbar=True, disable_log=True)
        except Exception as exc:
            raise ModelLoadError(f"FunASR could not load the online model {model!r}: {exc}") \
                from exc

    def decoder(self, chunk_size: tuple[int, int, int] = CHUNK_SIZE) -> OnlineDecoder:
        return OnlineDecoder(self, chunk_size)


class OnlineDecoder:
    """Text as audio arrives: feed() returns what each whole chunk added (FunASR's online
    output is incremental), finish() what the rest adds; reset() for the next utterance."""

    def __init__(self, model: OnlineModel, chunk_size: tuple[int, int, int]) -> None:
        self.model = model
        self.chunk_size = list(chunk_size)
        self.stride = chunk_size[1] * SAMPLES_PER_FRAME
        self.reset()

    def reset(self) -> None:
        self._cache: dict[str, Any] = {}
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> str:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        text = []
        while len(self._pending) >= self.stride:
            piece, self._pending = self._pending[:self.stride], self._pending[self.stride:]
            text.append(self._decode(piece, final=False))
        return _join(text)

    def finish(self) -> str:
        piece, self._pending = self._pending, np.zeros(0, dtype=np.float32)
        text = self._decode(piece, final=True) if piece.size else ""
        self._cache = {}
        return text

    def _decode(self, piece: np.ndarray, final: bool) -> str:
        result = self.model.model.generate(
            input=piece, cache=self._cache, is_final=final, chunk_size=self.chunk_size,
            encoder_chunk_look_back=4, decoder_chunk_look_back=1, disable_pbar=True)
        return str(result[0].get("text", "")) if result else ""


def _join(parts: list[str]) -> str:
    """Chunks' texts as one addition."""
    text = ""
    for part in parts:
        text = join_text(text, part)
    return text


def join_text(before: str, after: str) -> str:
    """Text that grows chunk by chunk: a space between Latin words, none between CJK
    characters (FunASR's own output separates the former only)."""
    if before and after and before[-1].isascii() and before[-1].isalnum() \
            and after[0].isascii() and after[0].isalnum():
        return f"{before} {after}"
    return before + after


def online_model(settings: Settings, device: str) -> OnlineModel | None:
    """This process's streaming model (loaded on first use), or None without ASR_ONLINE_MODEL
    (or with faster-whisper, which has none)."""
    if not settings.asr_online_model or settings.asr_engine != "funasr":
        return None
    with _lock:
        if settings.asr_online_model not in _loaded:
            _loaded[settings.asr_online_model] = OnlineModel(settings.asr_online_model, device,
                                                             settings.threads)
            log.info("online model ready", extra={"model": settings.asr_online_model})
        return _loaded[settings.asr_online_model]
