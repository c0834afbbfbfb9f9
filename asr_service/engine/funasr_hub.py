"""FunASR model references: local directories, or hub aliases the hub or the cache can serve.

Checked before a worker forks, without importing funasr or torch.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
from pathlib import Path

from asr_service.errors import ModelLoadError
from asr_service.settings import Settings

HUB_HOST = "www.modelscope.cn"
HUB_TIMEOUT_S = 3.0
LOCAL_HINT = (
    "Point ASR_MODEL / ASR_VAD_MODEL / ASR_PUNC_MODEL at a local model directory instead "
    "(`make models` builds models/tiny-paraformer and models/fsmn-vad)."
)


def check_model_refs(settings: Settings) -> None:
    """Reject missing model directories, and aliases neither the hub nor the cache can serve."""
    _check_model_refs(_model_refs(settings))


def _model_refs(settings: Settings) -> dict[str, str]:
    refs = {
        "ASR_MODEL": settings.asr_model,
        "ASR_VAD_MODEL": settings.asr_vad_model,
        "ASR_PUNC_MODEL": settings.asr_punc_model,
    }
    return {name: value for name, value in refs.items() if value}


def _check_model_refs(refs: dict[str, str]) -> None:
    """Reject missing local directories, and hub aliases that neither cache nor hub can serve."""
    aliases: dict[str, str] = {}
    for name, value in refs.items():
        if Path(value).expanduser().is_dir():
            continue
        if _looks_like_path(value):
            where = Path(value).expanduser().resolve()
            raise ModelLoadError(f"{name}={value!r}: no such model directory ({where})")
        aliases[name] = value
    # Only when the hub is down do we pay for the cache lookup (it imports modelscope).
    if not aliases or _hub_reachable():
        return
    for name, value in aliases.items():
        if not _in_modelscope_cache(value):
            raise ModelLoadError(
                f"{name}={value!r} is not a local directory, and the ModelScope hub "
                f"({HUB_HOST}) could not be reached to download it (nor is it in the local "
                f"ModelScope cache). {LOCAL_HINT}"
            )


def _looks_like_path(value: str) -> bool:
    """True for values meant as a directory; `org/name` alone is a ModelScope model id."""
    if value.startswith((".", "/", "~")) or "\\" in value or value.count("/") > 1:
        return True
    # "models/tiny-paraformer" is a path when ./models exists, not a hub id.
    return "/" in value and Path(value.split("/", 1)[0]).is_dir()


def _hub_reachable() -> bool:
    """TCP connect to the hub on 443; runs in a thread because DNS lookups ignore timeouts."""
    host, timeout_s = HUB_HOST, HUB_TIMEOUT_S  # read at call time so tests can point elsewhere
    outcome: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(outcome and outcome[0])


def _in_modelscope_cache(value: str) -> bool:
    """Whether FunASR could load this alias or model id from the local ModelScope cache."""
    try:
        from modelscope.utils.file_utils import get_model_cache_root, get_modelscope_cache_dir
    except ImportError:
        return False
    model_id = _funasr_name_map().get(value, value)
    if "/" not in model_id:
        return False
    owner, name = model_id.split("/", 1)
    candidates = [
        Path(get_model_cache_root(), owner, name),
        Path(get_model_cache_root(), owner, name.replace(".", "___")),  # newer modelscope
        Path(get_modelscope_cache_dir(), owner, name),  # older modelscope layout
    ]
    return any(
        (c / "configuration.json").is_file() or (c / "config.yaml").is_file() for c in candidates
    )


def _funasr_name_map() -> dict[str, str]:
    """FunASR's alias -> ModelScope id table, read without importing funasr (~7 s, ~500 MB)."""
    spec = importlib.util.find_spec("funasr")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations)), "download", "name_maps_from_hub.py")
    module_spec = importlib.util.spec_from_file_location("_funasr_name_maps", path)
    if module_spec is None or module_spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return dict(getattr(module, "name_maps_ms", {}))
