"""Parsing and checking of single environment variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote


def without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # drops user and password


def redis_url(env: Mapping[str, str]) -> str:
    url = _redis_url_as_given(env)
    password = env.get("REDIS_PASSWORD", "").strip()
    scheme, sep, rest = url.partition("://")
    if password and scheme in ("redis", "rediss") and "@" not in rest:
        return f"{scheme}{sep}:{quote(password, safe='')}@{rest}"
    return url


def _redis_url_as_given(env: Mapping[str, str]) -> str:
    if env.get("REDIS_URL"):
        url = env["REDIS_URL"].strip()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"REDIS_URL={without_password(url)!r}: must start with redis://, "
                             "rediss:// or unix://")
        return url
    host = env.get("REDIS_HOST", "127.0.0.1").strip() or "127.0.0.1"
    port = env.get("REDIS_PORT", "6379").strip()
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"REDIS_PORT={port!r}: must be a port number 1-65535")
    return f"redis://{host}:{port}/0"


def _whole_number(raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < value < 1e9:
        raise ValueError("must be more than 0")
    return value


def _webhook_secret(raw: str) -> str:
    if raw:
        import base64
        import binascii

        body = raw.removeprefix("whsec_")
        try:
            key = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not raw.startswith("whsec_") or len(key) < 16:
            raise ValueError("must be whsec_ followed by at least 16 random bytes in base64, "
                             "e.g. whsec_$(openssl rand -base64 32)")
    return raw


def _positive_int(raw: str) -> int:
    return _whole_number(raw, 1)


def _non_negative_int(raw: str) -> int:
    return _whole_number(raw, 0)


def _niceness(raw: str) -> int:
    value = _non_negative_int(raw)
    if value > 19:
        raise ValueError("must be a niceness 0-19")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _port(raw: str) -> int:
    value = _positive_int(raw)
    if value > 65535:
        raise ValueError("must be a port number 1-65535")
    return value


def _text(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _optional_text(raw: str) -> str:
    return raw


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _rate_limit(raw: str) -> str:
    if raw:
        from limits import parse_many  # a leaf library: parses "10/second;100/minute"

        try:
            parse_many(raw)
        except ValueError:
            raise ValueError('must look like "60/minute" or "10/second;500/hour"') from None
    return raw


def parser_for(default: object) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _bool
    if isinstance(default, float):
        return _positive_float
    return _positive_int if isinstance(default, int) else _text


def key_set(raw: str) -> frozenset[str]:
    return frozenset(k.strip() for k in raw.split(",") if k.strip())


def host_ports(raw: str) -> list[tuple[str, int]]:
    nodes = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not (sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def _sentinels(raw: str) -> str:
    host_ports(raw)
    return raw


PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_sentinels": _sentinels,
    "asr_use_gpu": _choice("auto", "true", "false"),
    "asr_engine": _choice("funasr", "faster-whisper"),
    "asr_compute_type": _choice("auto", "int8", "int8_float16", "int8_float32", "int16",
                                "float16", "bfloat16", "float32"),
    "asr_threads": _non_negative_int,
    "asr_engine_nice": _niceness,
    "asr_batch_wait_ms": _non_negative_int,
    "task_soft_time_limit_s": _non_negative_int,
    "worker_max_tasks_per_child": _non_negative_int,
    "worker_max_memory_mb": _non_negative_int,
    "max_stored_audio_mb": _non_negative_int,
    "max_queued_jobs": _non_negative_int,
    "max_queued_jobs_per_key": _non_negative_int,
    "live_max_sessions_per_key": _non_negative_int,
    # Empty is meaningful for these two: it turns the model off.
    "asr_vad_model": _optional_text,
    "asr_punc_model": _optional_text,
    "asr_online_model": _optional_text,
    "api_keys": _optional_text,
    "admin_api_keys": _optional_text,
    "allow_anonymous": _bool,
    "redis_password": _optional_text,
    "redis_sentinel_password": _optional_text,
    "redis_min_replicas": _non_negative_int,
    "flower_basic_auth": _optional_text,
    "webhook_secret": _webhook_secret,
    "public_url": _optional_text,
    "worker_ready_file": _optional_text,  # empty: no ready file
    "api_allowed_hosts": _optional_text,
    "rate_limit": _rate_limit,
    "log_level": lambda raw: _choice("debug", "info", "warning", "error")(raw).upper(),
    "api_port": _port,
    "flower_port": _port,
}
