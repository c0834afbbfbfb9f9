"""The Diarizer a worker process holds: it loads the speaker encoder the first time a job asks
for diarization (never otherwise), then labels transcripts with it."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from asr_service.diarize import clustering, labelling
from asr_service.diarize.spec import DiarizeSpec
from asr_service.engine.base import SAMPLE_RATE, Transcript
from asr_service.errors import EngineError

log = logging.getLogger(__name__)

BATCH_WINDOWS = 128
"""Windows embedded in one forward pass: one pass for a job of up to ~200 s of speech, and
a bounded transient (~100 MB of LSTM activations on CPU) on a 4 h one."""


class Diarizer:
    """Speaker labels for a transcript, from the encoder loaded on first use (thread-safe)."""

    def __init__(self, model_dir: str, device: str = "cpu", threads: int = 0) -> None:
        self.model_dir = model_dir
        self.device = device
        self.threads = threads
        self._encoder = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the encoder is in memory (only after a job asked for diarization)."""
        return self._encoder is not None

    def encoder(self):  # noqa: ANN201 - VoiceEncoder, whose module imports torch
        """The speaker encoder, loaded once."""
        with self._lock:
            if self._encoder is None:
                started = time.perf_counter()
                from asr_service.diarize.encoder import VoiceEncoder

                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)
                self._encoder = VoiceEncoder(self.model_dir, _torch_device(self.device))
                log.info("speaker encoder loaded", extra={
                    "device": self.device, "load_s": round(time.perf_counter() - started, 3)})
            return self._encoder

    def label(self, samples: np.ndarray, transcript: Transcript,
              spec: DiarizeSpec) -> Transcript:
        """The transcript with `speaker` on segments and words and the speakers found."""
        if not transcript.segments:
            return Transcript(transcript.text, [], transcript.language, transcript.model,
                              list(transcript.words), speakers=[])
        try:
            regions = labelling.speech_regions(transcript)
            windows, embeddings = self.embed_regions(samples, regions)
            labels = clustering.cluster_windows(windows, embeddings, spec)
        except Exception as exc:
            raise EngineError(f"diarization failed: {exc!r}") from exc
        centres = np.array([regions[w.region][0] + w.centre_offset_ms for w in windows])
        return labelling.renumbered(labelling.apply(transcript, centres, labels))

    def embed_regions(self, samples: np.ndarray, regions_ms: list[tuple[int, int]]
                      ) -> tuple[list[clustering.Window], np.ndarray]:
        """Windows over each region and their embeddings, in batches of BATCH_WINDOWS: one
        mel per region, and no more than one batch of features held at a time."""
        encoder = self.encoder()
        from asr_service.diarize.encoder import WINDOW_FRAMES

        windows: list[clustering.Window] = []
        pending: list[object] = []
        out: list[np.ndarray] = []
        for i, (start, end) in enumerate(regions_ms):
            lo, hi = start * SAMPLE_RATE // 1000, max(end * SAMPLE_RATE // 1000, 0)
            region = samples[lo:hi]
            if region.size < clustering.FRAME_MS * SAMPLE_RATE // 1000:
                continue
            mel = encoder.mel(region)
            for frame in clustering.window_starts(int(mel.shape[0])):
                piece = mel[frame:frame + WINDOW_FRAMES]
                if piece.shape[0] < WINDOW_FRAMES:  # zero-padded, as resemblyzer pads the wav
                    piece = encoder.pad(piece, WINDOW_FRAMES)
                windows.append(clustering.Window(i, frame))
                pending.append(piece)
                if len(pending) == BATCH_WINDOWS:
                    out.append(encoder.embed(pending))
                    pending = []
        if pending:
            out.append(encoder.embed(pending))
        return windows, (np.concatenate(out) if out else np.zeros((0, 256), np.float32))


def _torch_device(device: str) -> str:
    """The torch device of the engine's device name ("cuda", "cuda:0", "cpu")."""
    return "cuda" if device.startswith("cuda") else "cpu"
