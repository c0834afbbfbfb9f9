"""FunASR backend: the only module that imports funasr and torch (when a worker loads it)."""

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
    mono_samples,
    transcribe_each,
    warm_up_audio,
)
from asr_service.engine.funasr_hub import check_model_refs
from asr_service.errors import EngineError, ModelLoadError
from asr_service.settings import Settings

log = logging.getLogger(__name__)
CUDA_PROBE = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
NO_CUDA_HINT = "check the driver, CUDA_VISIBLE_DEVICES and the torch build"


def preflight(settings: Settings) -> str:
    """Model references and the device, checked in the worker's parent (CUDA in a subprocess).

    A prefork worker on the CPU also imports here, once, the FunASR modules its models need:
    each child it forks, and each that replaces one (a crash, a time limit, a memory recycle),
    then only loads the weights (0.1 s for the tiny model; the import is 2.7 s). Not on CUDA:
    a module that asks torch about CUDA at import would start the driver in the parent, and
    a forked child cannot use it. A batching worker's engine process is spawned: it imports
    for itself."""
    check_model_refs(settings)
    device = devices.preflight(settings.asr_use_gpu, CUDA_PROBE, NO_CUDA_HINT)
    if device == "cpu" and not settings.batching:
        from asr_service.engine.funasr_import import auto_model

        auto_model(settings.asr_model, settings.asr_vad_model, settings.asr_punc_model,
                   settings.asr_online_model)
    return device


def _torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build(settings: Settings) -> FunASREngine:
    """Check the model references and device, then load the engine."""
    check_model_refs(settings)
    return FunASREngine(
        model=settings.asr_model,
        vad_model=settings.asr_vad_model or None,
        punc_model=settings.asr_punc_model or None,
        device=devices.in_process(settings.asr_use_gpu, _torch_has_cuda, NO_CUDA_HINT),
        threads=settings.threads,
        batch_size_s=settings.asr_batch_audio_s,
    )

# One 25 ms fbank frame. Below it FunASR raises (ZeroDivisionError with VAD, a kaldi
# "num_mel_bins too large" error without), so such clips are answered as silence.
MIN_SAMPLES = 400
# Batched decoding pads every segment to the batch's longest: a batch closes before padding
# would be more than this share of it.
PAD_WASTE = 0.25


class FunASREngine:
    """A FunASR AutoModel (ASR + optional VAD and punctuation) loaded once per process."""

    def __init__(
        self,
        model: str,
        vad_model: str | None,
        punc_model: str | None,
        device: str,
        threads: int,
        batch_size_s: int,
    ) -> None:
        self.name = Path(model).name if Path(model).is_dir() else model
        self.device = device
        self._batch_size_s = batch_size_s
        self._has_vad = bool(vad_model)
        self._has_punc = bool(punc_model)
        import torch

        from asr_service.engine.funasr_import import auto_model

        AutoModel = auto_model(model, vad_model, punc_model)  # noqa: N806 (FunASR's class)
        torch.set_num_threads(threads)
        try:
            self._model = AutoModel(
                model=model,
                vad_model=vad_model or None,
                punc_model=punc_model or None,
                device=device,
                ncpu=threads,
                disable_update=True,  # otherwise it queries the registry with no timeout
                disable_pbar=True,
                disable_log=True,
            )
        except Exception as exc:
            raise ModelLoadError(f"FunASR could not load model {model!r}: {exc}") from exc
        self._check_device()

    def _check_device(self) -> None:
        """Fail loudly where FunASR silently fell back to another device (it picks CPU)."""
        import torch

        wanted = torch.device(self.device).type
        for role in ("model", "vad_model", "punc_model"):
            module = getattr(self._model, role, None)
            param = next(module.parameters(), None) if module is not None else None
            if param is not None and param.device.type != wanted:
                raise ModelLoadError(
                    f"FunASR put the {role} on {param.device.type}, not on the requested "
                    f"{self.device}; refusing to run on the wrong device"
                )

    def warm_up(self) -> None:
        """Run one transcription of 1 s of low noise so the first job pays no lazy set-up."""
        self.transcribe(warm_up_audio(), TranscribeOptions())

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe float32 mono samples at SAMPLE_RATE; the text is FunASR's, untouched."""
        samples = mono_samples(audio)
        if samples.size < MIN_SAMPLES:
            return Transcript(text="", segments=[], language=options.language, model=self.name)
        try:
            if options.turns and self._has_vad and not self._has_punc:
                # FunASR joins the VAD segments into one sentence without punctuation; the
                # batched path keeps one per VAD segment, with the same texts.
                result = self._generate_batch([samples])[0]
                return self._to_transcript([result] if result else [], samples.size, options)
            results = self._model.generate(input=samples, **self._generate_kwargs(options))
            return self._to_transcript(results, samples.size, options)
        except Exception as exc:
            seconds = samples.size / SAMPLE_RATE
            raise EngineError(f"FunASR failed on {seconds:.1f} s of audio: {exc!r}") from exc

    def transcribe_batch(
        self, items: list[tuple[np.ndarray, TranscribeOptions]]
    ) -> list[Transcript | Exception]:
        """Recordings with no per-call options share one batched ASR call (after a VAD pass of
        each); the rest, and every item of a batch that fails, run one by one."""
        outcomes: dict[int, Transcript | Exception] = {}
        shared = [i for i, (audio, options) in enumerate(items)
                  if not self._has_punc and audio.ndim == 1 and audio.size >= MIN_SAMPLES
                  and self._generate_kwargs(options) == self._generate_kwargs(TranscribeOptions())]
        if len(shared) > 1:
            try:
                arrays = [mono_samples(items[i][0]) for i in shared]
                for i, result, samples in zip(shared, self._generate_batch(arrays), arrays,
                                              strict=True):
                    outcomes[i] = self._to_transcript([result] if result else [], samples.size,
                                                      items[i][1])
            except Exception as exc:
                log.warning("batched call failed (%r); running its items one by one", exc)
                outcomes.clear()
        rest = [i for i in range(len(items)) if i not in outcomes]
        outcomes.update(zip(rest, transcribe_each(self, [items[i] for i in rest]), strict=True))
        return [outcomes[i] for i in range(len(items))]

    def _generate_batch(self, arrays: list[np.ndarray]) -> list[dict[str, Any]]:
        """What generate() returns for each array alone, from one ASR call over all of them.

        FunASR batches only within one input, and with VAD on CPU not even that (it decodes
        segment by segment). Here each input's VAD segments are cut exactly as
        AutoModel.inference_with_vad cuts them, all go through the ASR model in one batch,
        and each input's result is put together as it does without a punctuation model:
        segment texts joined by a space, one sentence_info entry per segment.
        """
        from funasr.utils.vad_utils import slice_padding_audio_samples

        model = self._model
        pieces: list[np.ndarray] = []
        owners: list[tuple[int, list[int]]] = []
        if not self._has_vad:
            pieces = list(arrays)
            owners = [(i, [0, a.size * 1000 // SAMPLE_RATE]) for i, a in enumerate(arrays)]
        else:
            vad = model.inference(arrays, model=model.vad_model, kwargs=model.vad_kwargs)
            for i, (samples, found) in enumerate(zip(arrays, vad, strict=True)):
                spans = [(span, 0) for span in found["value"]]
                cut, _ = slice_padding_audio_samples(samples, samples.size, spans)
                pieces.extend(cut)
                owners.extend((i, list(span)) for span, _ in spans)
        texts = self._decode_pieces(pieces)
        by_input: list[list[tuple[list[int], str]]] = [[] for _ in arrays]
        for (i, span), text in zip(owners, texts, strict=True):
            by_input[i].append((span, text))
        results = []
        for spans in by_input:
            text = " ".join(t for _, t in spans)
            info = [{"start": span[0], "end": span[1], "text": t} for span, t in spans]
            results.append({"text": text, **({"sentence_info": info} if self._has_vad else {})}
                           if text.strip() else {})
        return results

    def _decode_pieces(self, pieces: list[np.ndarray]) -> list[str]:
        """The ASR model's text for each piece, decoded in batches of similar length (shortest
        first, as FunASR orders them) so that padding costs at most PAD_WASTE of a batch."""
        model = self._model
        order = sorted(range(len(pieces)), key=lambda k: pieces[k].size)
        texts = [""] * len(pieces)
        budget = self._batch_size_s * SAMPLE_RATE
        group: list[int] = []
        filled = 0  # samples in the group

        def decode(group: list[int]) -> None:
            kwargs = {**model.kwargs, "batch_size": len(group)}  # never mutate the model's own
            decoded = model.inference([pieces[k] for k in group], model=model.model,
                                      kwargs=kwargs)
            if len(decoded) != len(group):
                raise EngineError(f"{len(decoded)} results for {len(group)} segments")
            for k, result in zip(group, decoded, strict=True):
                texts[k] = str(result.get("text", ""))

        for k in order:
            longest = pieces[k].size  # sorted: the newcomer is the longest
            padded = longest * (len(group) + 1)
            if group and (padded > budget or filled + longest < padded * (1 - PAD_WASTE)):
                decode(group)
                group, filled = [], 0
            group.append(k)
            filled += longest
        if group:
            decode(group)
        return texts

    def _generate_kwargs(self, options: TranscribeOptions) -> dict[str, Any]:
        """Per-call generate() options; none of them changes the text of a plain Paraformer."""
        kwargs: dict[str, Any] = {"batch_size_s": self._batch_size_s}
        if self._has_vad:
            # Adds sentence_info (per-sentence start/end) next to the unchanged text.
            kwargs["sentence_timestamp"] = True
        if options.hotwords:
            # SeACo-Paraformer biases decoding with these; a plain Paraformer ignores them.
            kwargs["hotword"] = " ".join(options.hotwords)
        if options.language and options.language != "auto":
            kwargs["language"] = options.language  # a hint for SenseVoice-like models
        return kwargs

    def _to_transcript(
        self, results: list[dict[str, Any]], n_samples: int, options: TranscribeOptions
    ) -> Transcript:
        """Normalize generate()'s first result into a Transcript."""
        # With VAD, FunASR returns [] when the VAD found speech but the ASR decoded nothing.
        result = results[0] if results else {}
        text = str(result.get("text", ""))
        duration_ms = n_samples * 1000 // SAMPLE_RATE
        segments = _segments(result, text, duration_ms) if text.strip() else []
        language = str(result.get("language") or options.language or "auto")
        return Transcript(text=text, segments=segments, language=language, model=self.name)


def _segments(result: dict[str, Any], text: str, duration_ms: int) -> list[Segment]:
    """Timed segments from one generate() result, clamped to the audio and ordered.

    Keys measured with FunASR 1.4.16 (Paraformer): without VAD {key, text}; with VAD
    {key, text} ({key, text, timestamp: []} when the VAD finds no speech), plus
    sentence_info when sentence_timestamp=True. sentence_info has one entry per VAD
    segment (or per punctuated sentence when a punc model and token timestamps exist)
    with start/end in ms: the best source. Otherwise token timestamps bound a single
    segment; otherwise the one segment is the whole recording.
    """
    sentences = [s for s in result.get("sentence_info") or [] if str(s.get("text", "")).strip()]
    if sentences:
        raw = [(s["start"], s["end"], str(s["text"]).strip()) for s in sentences]
    elif result.get("timestamp"):
        stamps = result["timestamp"]
        raw = [(stamps[0][0], stamps[-1][1], text.strip())]
    else:
        raw = [(0, duration_ms, text.strip())]
    segments = []
    for start, end, seg_text in raw:
        # Token timestamps may start a frame before 0 or end past the last sample.
        lo = min(max(int(start), 0), duration_ms)
        segments.append(
            Segment(start_ms=lo, end_ms=min(max(int(end), lo), duration_ms), text=seg_text)
        )
    return sorted(segments, key=lambda s: (s.start_ms, s.end_ms))
