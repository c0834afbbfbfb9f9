"""Typed settings read from the environment; the only reader of os.environ."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote, urlsplit

JOB_OVERHEAD_BYTES = 3 * 1024
"""What one active job costs Redis besides its recording (record, indexes, Celery message):
measured ~2.7 KB (tests/integration/test_redis_full.py reports it); counted against
MAX_STORED_AUDIO_MB with each recording."""


class SettingsError(ValueError):
    """One or more environment variables are invalid; the message lists all of them."""


@dataclass(frozen=True)
class Settings:
    """Service configuration. Every field has a matching variable in config/.env.example."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    """Broker, result backend and job store. REDIS_URL, or REDIS_HOST/REDIS_PORT."""
    asr_engine: str = "funasr"
    """The backend the workers run: funasr or faster-whisper."""
    asr_use_gpu: str = "auto"
    """auto: CUDA when present else CPU; true: CUDA required; false: CPU."""
    asr_compute_type: str = "auto"
    """faster-whisper's CTranslate2 compute type; auto: int8 on CPU, float16 on CUDA."""
    asr_batch_size: int = 300
    """FunASR batch_size_s: seconds of audio decoded per batch; with ASR_BATCH_WAIT_MS, also
    the most audio one cross-job batch gathers."""
    asr_batch_wait_ms: int = 0
    """Dynamic batching: how long a batch waits for the recordings of jobs its worker has
    already started (0: off, each worker process runs one job at a time)."""
    asr_batch_jobs: int = 16
    """Dynamic batching: jobs one worker takes at once, and the most one batch holds."""
    asr_model: str = "paraformer-zh"
    """The model: a FunASR hub alias or a local model directory (faster-whisper: a local
    CTranslate2 directory such as models/whisper-tiny-en)."""
    asr_vad_model: str = "fsmn-vad"
    """VAD model alias or directory; empty disables VAD."""
    asr_punc_model: str = ""
    """Punctuation model alias or directory; empty (the default) disables it."""
    asr_threads: int = 0
    """CPU threads per worker process; 0 divides the host's cores by WORKER_COUNT."""
    max_recordings: int = 1000
    """Recordings kept in Redis; older ones are removed (never a queued or running job's)."""
    max_stored_audio_mb: int = 2048
    """Budget for all recordings held in Redis (0: none). Finished jobs' recordings are removed
    first, oldest first; a submit (or retry) that active jobs alone, each counted as its
    recording + JOB_OVERHEAD_BYTES, would push over it gets 503."""
    max_queued_jobs: int = 50000
    """Jobs queued or running at once, all clients together (0: no cap); beyond, 503."""
    max_queued_jobs_per_key: int = 5000
    """Jobs queued or running at once per API key (one tenant without API_KEYS; 0: no cap);
    beyond, 429."""
    worker_count: int = 1
    """Worker processes `make worker` starts on this host (Celery concurrency)."""
    max_upload_mb: int = 100
    """Largest accepted upload; bigger bodies get 413."""
    max_inflight_upload_mb: int = 128
    """Request bodies and audio_url downloads one API process holds at once (503 beyond)."""
    max_audio_seconds: int = 4 * 3600
    """Longest accepted recording."""
    result_retention_s: int = 7 * 24 * 3600
    """How long job records and transcripts are kept."""
    task_time_limit_s: int = 3600
    """Hard limit for one transcription: the worker process is killed and replaced."""
    task_soft_time_limit_s: int = 0
    """Soft limit: the job stops and is marked failed, the process lives on. 0: hard - 30 s."""
    job_lease_s: int = 15
    """A running job's lease; a job whose runner stopped renewing it for this long is recovered."""
    max_deliveries: int = 3
    """A job whose worker process died this many times while running it is marked failed."""
    worker_max_tasks_per_child: int = 0
    """Replace a worker process after this many jobs (0: never); reloads the model."""
    worker_max_memory_mb: int = 12288
    """Replace a worker process after a job leaves it above this resident memory (0: never)."""
    model_load_timeout_s: int = 600
    """How long a worker process may take to load and warm up its model."""
    queue_name: str = "asr"
    """Celery queue the API sends to and the workers consume."""
    api_keys: str = field(default="", repr=False)
    """Comma-separated API keys; when set, every endpoint but health requires one, and each key
    is a tenant that sees only its own jobs."""
    admin_api_keys: str = field(default="", repr=False)
    """Comma-separated admin keys: also valid API keys, and they see every tenant's jobs."""
    allow_anonymous: bool = False
    """Let the API listen beyond loopback without API_KEYS (logged loudly at start)."""
    redis_password: str = field(default="", repr=False)
    """Redis password, added to REDIS_URL (or REDIS_HOST/PORT) when the URL carries none; under
    Sentinel, the master's (and its replicas') password."""
    redis_sentinels: str = ""
    """host:port,host:port of Redis Sentinels; set, they name the master to use (REDIS_URL's
    host and port are then ignored) and every connection follows a failover."""
    redis_sentinel_master: str = "asr"
    """The master's name as the sentinels monitor it (`sentinel monitor <name> ...`)."""
    redis_sentinel_password: str = field(default="", repr=False)
    """The sentinels' own password (their `requirepass`), if they have one."""
    redis_min_replicas: int = 0
    """Replicas that must hold each job state change before it counts (Redis WAIT); 1 with a
    Sentinel set-up makes an acknowledged submit or result survive the loss of the master."""
    flower_basic_auth: str = field(default="", repr=False)
    """user:password for Flower; required when Flower listens beyond loopback."""
    rate_limit: str = ""
    """Per API key (or per client address) limit such as "60/minute;1000/hour"; empty: off."""
    log_dir: str = "logs"
    """Directory for rotating log files."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    api_host: str = "127.0.0.1"
    """Address gunicorn binds; beyond loopback it requires API_KEYS (or ALLOW_ANONYMOUS)."""
    api_port: int = 8000
    """Port gunicorn binds."""
    api_workers: int = 2
    """gunicorn worker processes (gevent: each serves many slow clients at once)."""
    flower_host: str = "127.0.0.1"
    """Address Flower binds; beyond loopback it requires FLOWER_BASIC_AUTH."""
    flower_port: int = 5555
    """Port Flower binds."""
    sync_timeout_s: int = 300
    """How long POST /v1/audio/transcriptions waits for its job; then 504 with the task id."""
    webhook_secret: str = field(default="", repr=False)
    """Standard Webhooks signing secret (whsec_ + base64); callback_url is refused without it."""
    webhook_retry_base_s: float = 10.0
    """First retry delay of a webhook; each next one doubles (with jitter)."""
    webhook_max_attempts: int = 14
    """Deliveries tried per webhook event before it is marked failed (14 x doubling ~ 1 day)."""
    webhook_timeout_s: float = 10.0
    """How long one webhook delivery (connect + answer) may take."""
    webhook_allow_private: bool = False
    """Let callback_url and audio_url reach loopback, private and link-local addresses."""
    webhook_include_result: bool = False
    """Put the transcript in job.succeeded webhooks (otherwise only links to it)."""
    audio_url_timeout_s: float = 30.0
    """How long fetching an audio_url may take in all."""
    public_url: str = ""
    """Base URL clients reach the API at (https://asr.example.com), for absolute links in
    webhooks; empty: the links are paths."""
    api_allowed_hosts: str = ""
    """Comma-separated Host names the API answers (others: 400; * any); empty: see
    allowed_hosts."""
    flower_unauthenticated_api: bool = False
    """Flower's own switch for a login-less API; refused (any web page could drive it)."""

    @property
    def redis_url_display(self) -> str:
        """Where Redis is, without a password, for logs and error messages."""
        if self.redis_sentinels:
            return f"sentinel://{self.redis_sentinels}/{self.redis_sentinel_master}"
        return _without_password(self.redis_url)

    @property
    def sentinel_nodes(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return _host_ports(self.redis_sentinels)

    @property
    def max_upload_bytes(self) -> int:
        """Upload limit in bytes."""
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_inflight_upload_bytes(self) -> int:
        """The per-process budget of request bodies in flight, in bytes."""
        return self.max_inflight_upload_mb * 1024 * 1024

    @property
    def allowed_hosts(self) -> list[str] | None:
        """Host names the API answers (None: any). Default: loopback names, API_HOST and
        PUBLIC_URL's host, so a DNS-rebinding page cannot reach a loopback API; a wildcard
        API_HOST (0.0.0.0) cannot know the names clients use, so it allows any."""
        if self.api_allowed_hosts:
            hosts = [h.strip() for h in self.api_allowed_hosts.split(",") if h.strip()]
            return None if "*" in hosts else hosts
        if self.api_host.strip("[]") in ("0.0.0.0", "::", ""):
            return None
        hosts = ["localhost", "127.0.0.1", self.api_host.strip("[]")]
        if public := urlsplit(self.public_url).hostname:
            hosts.append(public)
        # Werkzeug 3.1's matcher cuts an entry at its first ':', so an IPv6 literal in a Host
        # header never matches: loopback clients use 127.0.0.1 or localhost.
        return hosts

    def api_exposure_error(self) -> str | None:
        """Why the API must not start on API_HOST (beyond loopback without keys), if so."""
        if is_loopback(self.api_host) or self.api_key_set or self.allow_anonymous:
            return None
        return (f"refusing to serve the API on {self.api_host} without authentication: set "
                "API_KEYS (clients send 'Authorization: Bearer <key>'), or API_HOST=127.0.0.1, "
                "or ALLOW_ANONYMOUS=true if something in front of it authenticates")

    def flower_exposure_error(self) -> str | None:
        """Why Flower must not start on FLOWER_HOST (beyond loopback without a login), if so."""
        if self.flower_unauthenticated_api and not self.flower_basic_auth:
            # Flower 2.2 then sends Access-Control-Allow-Origin: * and skips its XSRF check:
            # any web page the operator opens could read its API and POST shutdowns/revokes.
            return ("refusing FLOWER_UNAUTHENTICATED_API=true: it opens Flower's API to every "
                    "web page the operator visits; set FLOWER_BASIC_AUTH=user:password and "
                    "call the API with that login")
        if is_loopback(self.flower_host) or self.flower_basic_auth:
            return None
        return (f"refusing to serve Flower on {self.flower_host} without a login: set "
                "FLOWER_BASIC_AUTH=user:password, or FLOWER_HOST=127.0.0.1")

    @property
    def max_stored_audio_bytes(self) -> int:
        """The stored-audio budget in bytes (0: none)."""
        return self.max_stored_audio_mb * 1024 * 1024

    @property
    def soft_time_limit_s(self) -> int | None:
        """Soft limit (None when it would not come before the hard one)."""
        soft = self.task_soft_time_limit_s or max(1, self.task_time_limit_s - 30)
        return soft if soft < self.task_time_limit_s else None

    @property
    def api_key_set(self) -> frozenset[str]:
        """The accepted API keys, admin keys included (empty: no authentication)."""
        return _key_set(self.api_keys) | self.admin_key_set

    @property
    def admin_key_set(self) -> frozenset[str]:
        """The keys that see every tenant's jobs (ADMIN_API_KEYS)."""
        return _key_set(self.admin_api_keys)

    @property
    def model_id(self) -> str:
        """The served model's name as clients pick it (OpenAI `model`): ASR_MODEL's last part."""
        return model_id(self.asr_model)

    @property
    def batching(self) -> bool:
        """Whether workers batch concurrent jobs (ASR_BATCH_WAIT_MS > 0)."""
        return self.asr_batch_wait_ms > 0

    @property
    def threads(self) -> int:
        """Threads each worker process gives the model."""
        if self.asr_threads:
            return self.asr_threads
        processes = 1 if self.batching else self.worker_count  # one engine process batches
        return max(1, (os.cpu_count() or 1) // processes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment, reporting every bad variable at once."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        errors: list[str] = []
        for f in fields(cls):
            name = f.name.upper()
            if name not in env or f.name == "redis_url":
                continue
            try:
                values[f.name] = _PARSERS.get(f.name, _parser_for(f.default))(env[name].strip())
            except ValueError as exc:
                errors.append(f"{name}={env[name]!r}: {exc}")
        try:
            values["redis_url"] = _redis_url(env)
        except ValueError as exc:
            errors.append(str(exc))
        errors += _combination_errors(cls(**values))
        if errors:
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(errors))
        return cls(**values)


def _combination_errors(s: Settings) -> list[str]:
    """Variables that are each valid but cannot work together."""
    errors = []
    if s.max_stored_audio_mb and \
            s.max_stored_audio_bytes < s.max_upload_bytes + JOB_OVERHEAD_BYTES:
        errors.append(
            f"MAX_STORED_AUDIO_MB={s.max_stored_audio_mb} is below MAX_UPLOAD_MB="
            f"{s.max_upload_mb} (+ {JOB_OVERHEAD_BYTES} bytes per job): an upload between the "
            "two would get a 503 'try again' that can never succeed; raise MAX_STORED_AUDIO_MB "
            f"to at least {s.max_upload_mb + 1}, lower MAX_UPLOAD_MB, or set it to 0 (no budget)")
    if 0 < s.max_queued_jobs < s.max_queued_jobs_per_key:
        errors.append(
            f"MAX_QUEUED_JOBS_PER_KEY={s.max_queued_jobs_per_key} is above MAX_QUEUED_JOBS="
            f"{s.max_queued_jobs}: one client could take the whole queue; lower it")
    if s.max_inflight_upload_mb < s.max_upload_mb:
        errors.append(
            f"MAX_INFLIGHT_UPLOAD_MB={s.max_inflight_upload_mb} is below MAX_UPLOAD_MB="
            f"{s.max_upload_mb}: an upload of the largest accepted size could never be taken")
    return errors


def model_id(reference: str) -> str:
    """A model's id for clients: a hub alias as is, a local directory by its name."""
    return reference.rstrip("/").rsplit("/", 1)[-1] or reference


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0-like wildcard: treat as reachable from outside


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # drops user and password


def _redis_url(env: Mapping[str, str]) -> str:
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
            raise ValueError(f"REDIS_URL={_without_password(url)!r}: must start with redis://, "
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


def _parser_for(default: object) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return _bool
    if isinstance(default, float):
        return _positive_float
    return _positive_int if isinstance(default, int) else _text


def _key_set(raw: str) -> frozenset[str]:
    return frozenset(k.strip() for k in raw.split(",") if k.strip())


def _host_ports(raw: str) -> list[tuple[str, int]]:
    nodes = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not (sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def _sentinels(raw: str) -> str:
    _host_ports(raw)
    return raw


_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_sentinels": _sentinels,
    "asr_use_gpu": _choice("auto", "true", "false"),
    "asr_engine": _choice("funasr", "faster-whisper"),
    "asr_compute_type": _choice("auto", "int8", "int8_float16", "int8_float32", "int16",
                                "float16", "bfloat16", "float32"),
    "asr_threads": _non_negative_int,
    "asr_batch_wait_ms": _non_negative_int,
    "task_soft_time_limit_s": _non_negative_int,
    "worker_max_tasks_per_child": _non_negative_int,
    "worker_max_memory_mb": _non_negative_int,
    "max_stored_audio_mb": _non_negative_int,
    "max_queued_jobs": _non_negative_int,
    "max_queued_jobs_per_key": _non_negative_int,
    # Empty is meaningful for these two: it turns the model off.
    "asr_vad_model": _optional_text,
    "asr_punc_model": _optional_text,
    "api_keys": _optional_text,
    "admin_api_keys": _optional_text,
    "allow_anonymous": _bool,
    "redis_password": _optional_text,
    "redis_sentinel_password": _optional_text,
    "redis_min_replicas": _non_negative_int,
    "flower_basic_auth": _optional_text,
    "webhook_secret": _webhook_secret,
    "public_url": _optional_text,
    "api_allowed_hosts": _optional_text,
    "rate_limit": _rate_limit,
    "log_level": lambda raw: _choice("debug", "info", "warning", "error")(raw).upper(),
    "api_port": _port,
    "flower_port": _port,
}
