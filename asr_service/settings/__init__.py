"""Typed settings read from the environment; the only reader of os.environ."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from asr_service.settings.access import AccessSettings, DeliverySettings, ProcessSettings
from asr_service.settings.engine import EngineSettings
from asr_service.settings.live import LiveSettings
from asr_service.settings.parsers import (
    PARSERS,
    host_ports,
    key_set,
    parser_for,
    redis_url,
    without_password,
)
from asr_service.settings.store import RedisSettings
from asr_service.settings.workers import LimitSettings, WorkerSettings

JOB_OVERHEAD_BYTES = 3 * 1024
"""What one active job costs Redis besides its recording (record, indexes, Celery message):
measured ~2.7 KB (tests/integration/test_redis_full.py reports it); counted against
MAX_STORED_AUDIO_MB with each recording."""


class SettingsError(ValueError):
    """One or more environment variables are invalid; the message lists all of them."""


GROUPS = (RedisSettings, EngineSettings, WorkerSettings, LimitSettings, LiveSettings,
          AccessSettings, DeliverySettings, ProcessSettings)
"""The settings by concern, in the order config/.env.example and docs/configuration.md list
them (both generated from these classes: python -m asr_service.settings.docs)."""

ALIASES = {"ASR_BATCH_SIZE": "ASR_BATCH_AUDIO_S", "WEBHOOK_ALLOW_PRIVATE": "ALLOW_PRIVATE_URLS"}
"""Deprecated variable names, still read, and the names that replaced them (which win)."""


@dataclass(frozen=True)
class Settings(ProcessSettings, DeliverySettings, AccessSettings, LiveSettings, LimitSettings,
               WorkerSettings, EngineSettings, RedisSettings):  # fields: reverse order = GROUPS
    """Service configuration: one flat object whose fields are declared by concern in the
    classes of GROUPS. Every field has a matching variable in config/.env.example."""

    @property
    def redis_url_display(self) -> str:
        """Where Redis is, without a password, for logs and error messages."""
        if self.redis_sentinels:
            return f"sentinel://{self.redis_sentinels}/{self.redis_sentinel_master}"
        return without_password(self.redis_url)

    @property
    def sentinel_nodes(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return host_ports(self.redis_sentinels)

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
        return key_set(self.api_keys) | self.admin_key_set

    @property
    def admin_key_set(self) -> frozenset[str]:
        """The keys that see every tenant's jobs (ADMIN_API_KEYS)."""
        return key_set(self.admin_api_keys)

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
            name = _variable(f.name, env)
            if name not in env or f.name == "redis_url":
                continue
            try:
                values[f.name] = PARSERS.get(f.name, parser_for(f.default))(env[name].strip())
            except ValueError as exc:
                errors.append(f"{name}={env[name]!r}: {exc}")
        try:
            values["redis_url"] = redis_url(env)
        except ValueError as exc:
            errors.append(str(exc))
        errors += _combination_errors(cls(**values))
        if errors:
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(errors))
        return cls(**values)


def _variable(field_name: str, env: Mapping[str, str]) -> str:
    """The variable a field is read from: its own name, or a deprecated alias set instead."""
    name = field_name.upper()
    old = _DEPRECATED.get(name)
    return old if old and name not in env and old in env else name


_DEPRECATED = {new: old for old, new in ALIASES.items()}


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


