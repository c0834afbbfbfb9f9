"""Settings of the model, the engine and dynamic batching (workers only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """Model and batching (workers only; the API reads ASR_MODEL to name its default model)"""

    asr_engine: str = "funasr"
    """The backend: funasr (Paraformer and other FunASR models) or faster-whisper (CTranslate2
    Whisper models, from a local directory: `make models` provides models/whisper-tiny-en)."""
    asr_compute_type: str = "auto"
    """faster-whisper's CTranslate2 compute type; auto: int8 on CPU, float16 on CUDA."""
    asr_model: str = "paraformer-zh"
    """FunASR hub alias (needs the ModelScope hub) or a local model directory (faster-whisper: a
    local CTranslate2 directory); its last path part is the model's id. Offline: `make models`
    builds models/tiny-paraformer (random weights, for tests and demos)."""
    asr_online_model: str = ""
    """Streaming model for live sessions' partial text (FunASR ParaformerStreaming: an alias
    such as paraformer-zh-streaming, or a directory; `make models` builds
    models/tiny-paraformer-streaming). Each utterance's final still comes from ASR_MODEL
    (2-pass). Empty: partials re-decode the open utterance with ASR_MODEL."""
    asr_vad_model: str = "fsmn-vad"
    """Voice activity detection model (alias or directory); empty disables VAD (faster-whisper:
    empty turns on its built-in Silero VAD, any other value leaves VAD off)."""
    asr_speaker_model: str = "models/voice-encoder"
    """Speaker encoder for diarization (submit `diarize`): a directory holding the GE2E
    `pretrained.pt` (`make models` unpacks it from the resemblyzer wheel). Loaded by a worker
    process the first time a job asks for diarization, on the engine's device."""
    asr_punc_model: str = ""
    """Punctuation model (alias or directory); empty (the default) disables it."""
    asr_use_gpu: str = "auto"
    """auto: CUDA when present, else CPU (said in the worker log); true: CUDA required, the
    worker refuses to start without it; false: CPU."""
    asr_batch_audio_s: int = 300
    """Seconds of audio decoded together in one batch (FunASR batch_size_s); with dynamic
    batching, also the most audio one batch of jobs gathers. Deprecated alias: ASR_BATCH_SIZE."""
    asr_batch_wait_ms: int = 0
    """Dynamic batching (0: off). Above 0, a worker takes up to ASR_BATCH_JOBS jobs at once
    (Celery threads pool, WORKER_COUNT unused) and their recordings share engine calls in one
    engine process; a batch waits up to this many milliseconds for the jobs the worker has
    already started. Each job keeps its own result, failure and retry."""
    asr_batch_jobs: int = 16
    """Dynamic batching: jobs one worker takes at once, and the most one batch holds."""
    asr_threads: int = 0
    """CPU threads per worker process; 0 divides the host's cores between the WORKER_COUNT
    processes (all of them, with batching)."""
    asr_engine_nice: int = 10
    """Niceness the processes running the model add (a batching worker's engine process, a
    prefork worker's children): on a host whose cores the API shares, its answers (/health,
    submits, long-polls) go first and the decode takes the rest. 0: same priority as the API.
    No effect where nothing else wants the cores."""
    model_load_timeout_s: int = 600
    """How long one worker process may take to load and warm up its model (seconds)."""
