"""The GE2E speaker encoder (resemblyzer's architecture and weights, not its package): mel
features and batched window embeddings. The only diarization module that imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_service.errors import ModelLoadError

SAMPLE_RATE = 16_000
N_MELS = 40
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
STRIDE = 2
"""The LSTM reads every second mel frame (20 ms apart). Its cost is per frame read, and on the
benchmark this halved it while the speaker counts held (15/15 on the reference turns at
thresholds 0.16-0.18, where every frame held them at 0.22 only)."""
WINDOW_FRAMES = 160 // STRIDE  # 1.6 s: the partial-utterance length the encoder was trained on
WEIGHTS = "pretrained.pt"
TARGET_DBFS = -30.0  # resemblyzer raises quiet speech to this level before its features
INT16_MAX = 2**15 - 1


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-style mel filterbank (librosa.filters.mel's default), shape (n_mels, n_fft//2+1)."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        mels = f / (200.0 / 3)
        log_region = f >= 1000.0
        return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0)
                        / (np.log(6.4) / 27.0), mels)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        freqs = m * (200.0 / 3)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), freqs)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


def louder(samples: np.ndarray) -> np.ndarray:
    """Quiet speech raised to TARGET_DBFS (never lowered), as resemblyzer's preprocessing."""
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) * INT16_MAX) ** 2))) if samples.size \
        else 0.0
    if rms <= 0:
        return samples
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    return samples if change < 0 else samples * np.float32(10 ** (change / 20))


class VoiceEncoder:
    """A 3-layer LSTM (256) -> linear 256 -> ReLU -> L2 norm, on 40-mel power frames."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        import torch
        from torch import nn

        path = Path(model_dir).expanduser() / WEIGHTS
        if not path.is_file():
            raise ModelLoadError(f"no speaker encoder weights at {path.resolve()} "
                                 "(ASR_SPEAKER_MODEL; `make models` unpacks models/voice-encoder)")
        self.device = torch.device(device)
        self._torch = torch
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
            self.lstm.load_state_dict({k[5:]: v for k, v in state.items()
                                       if k.startswith("lstm.")})
            self.linear.load_state_dict({k[7:]: v for k, v in state.items()
                                         if k.startswith("linear.")})
        except Exception as exc:
            raise ModelLoadError(f"could not load the speaker encoder {path}: {exc}") from exc
        self.lstm.to(self.device).eval()
        self.linear.to(self.device).eval()
        self._filters = torch.from_numpy(mel_filters()).to(self.device)
        self._window = torch.hann_window(N_FFT, device=self.device)

    def mel(self, samples: np.ndarray) -> object:
        """Power mel frames (n_frames, 40) of one stretch of speech, on the encoder's device
        (as librosa's melspectrogram: centred, zero-padded, Hann window), every STRIDE-th."""
        torch = self._torch
        with torch.inference_mode():
            wav = torch.from_numpy(np.ascontiguousarray(louder(samples), dtype=np.float32))
            spec = torch.stft(wav.to(self.device), N_FFT, HOP, window=self._window,
                              center=True, pad_mode="constant", return_complex=True)
            return (self._filters @ spec.abs() ** 2).T[::STRIDE].contiguous()

    def pad(self, frames: object, size: int) -> object:
        """Mel frames zero-padded at the end to `size` frames."""
        torch = self._torch
        return torch.nn.functional.pad(frames, (0, 0, 0, size - frames.shape[0]))  # type: ignore[attr-defined]

    def embed(self, windows: list[object]) -> np.ndarray:
        """L2-normed embeddings (n, 256) of mel windows of WINDOW_FRAMES frames, in one pass."""
        torch = self._torch
        if not windows:
            return np.zeros((0, 256), dtype=np.float32)
        with torch.inference_mode():
            batch = torch.stack(windows)  # type: ignore[arg-type]
            _, (hidden, _) = self.lstm(batch)
            raw = torch.relu(self.linear(hidden[-1]))
            normed = raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return normed.cpu().numpy()
