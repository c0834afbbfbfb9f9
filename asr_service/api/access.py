"""Who may call the API: optional API keys, each a tenant that sees only its own jobs (admin
keys see all), and a per-key (or per-client) rate limit."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import abort

from asr_service import redis_conn
from asr_service.api.problems import problem
from asr_service.settings import Settings

# Load balancers probe health without a key; documentation holds no data.
OPEN_PATHS = ("/api/v1/health", "/openapi.json", "/docs", "/metrics", "/dashboard", "/live",
              "/static/")
KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""How a browser sends its key on a WebSocket (it cannot set headers there): as OpenAI's
browser clients do, a subprotocol `openai-insecure-api-key.<key>` beside `realtime`."""


def presented_key() -> str | None:
    """The key sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`, or on a WebSocket
    upgrade as the subprotocol KEY_SUBPROTOCOL + key."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if key := request.headers.get("X-API-Key", "").strip():
        return key
    for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if offered.strip().startswith(KEY_SUBPROTOCOL):
            return offered.strip()[len(KEY_SUBPROTOCOL):] or None
    return None


def client_id() -> str:
    """Whom a rate limit or an idempotency key belongs to: the authenticated key's digest, else
    the client address. An unchecked header never picks the bucket (a random key per request
    would otherwise get a fresh rate-limit budget each time)."""
    return _key_id(_settings().api_key_set) or "addr:" + (get_remote_address() or "unknown")


def owner_id() -> str:
    """The tenant a job submitted now belongs to: "key:" + the first 16 hex of sha256(key), or
    "" without API_KEYS (then every client is one tenant)."""
    keys = _settings().api_key_set
    if not keys:
        return ""
    owner = _key_id(keys)
    if owner is None:  # _check_key lets no data request through without a valid key
        abort(401, message="this endpoint needs an API key")
    return owner


def scope() -> str | None:
    """Whose jobs this request may see: its own tenant's, or None (all) for an admin key and
    for an API without keys (one tenant)."""
    settings = _settings()
    if not settings.api_key_set or _key_id(settings.admin_key_set) is not None:
        return None
    return owner_id()


def _settings() -> Settings:
    return current_app.extensions["asr"].settings


def _key_id(keys: frozenset[str]) -> str | None:
    """The presented key's tenant id when it is one of `keys`, else None."""
    key = presented_key()
    if key and _is_valid(key, keys):
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return None


def _is_valid(key: str, keys: frozenset[str]) -> bool:
    # Bytes, so a non-ASCII key is just a wrong key (compare_digest refuses non-ASCII str);
    # every key is compared in constant time: timing must not reveal a near match.
    presented = key.encode("utf-8", "surrogateescape")
    return any(hmac.compare_digest(presented, k.encode()) for k in keys)


def init_app(app: Flask, settings: Settings) -> None:
    """Install the key check and the rate limiter the settings ask for."""
    storage_uri, storage_options = redis_conn.limiter_storage(settings)
    limiter = Limiter(
        key_func=client_id,
        app=app,
        # One budget per client across all endpoints, not one per endpoint.
        application_limits=[settings.rate_limit] if settings.rate_limit else [],
        # Shared by every gunicorn worker and API host; a Redis outage must not block requests
        # (the endpoints themselves answer 503 then).
        storage_uri=storage_uri,
        storage_options=storage_options,
        swallow_errors=True,
        headers_enabled=True,
        strategy="moving-window",
        application_limits_exempt_when=lambda: request.path.startswith(OPEN_PATHS),
    )
    app.extensions["asr_limiter"] = limiter
    # After the limiter's own hook: a request with a missing or wrong key is counted too (by
    # client address), so key guessing and 401 floods meet RATE_LIMIT like anything else.
    if keys := settings.api_key_set:
        app.before_request(lambda: _check_key(keys))


def _check_key(keys: frozenset[str]) -> Response | None:
    if request.path.startswith(OPEN_PATHS) or request.method == "OPTIONS":
        return None
    key = presented_key()
    if key is not None and _is_valid(key, keys):
        return None
    detail = ("this endpoint needs an API key: send 'Authorization: Bearer <key>' or "
              "'X-API-Key: <key>'") if key is None else "the API key is not valid"
    return problem(401, "Unauthorized", detail, slug="unauthorized",
                   headers={"WWW-Authenticate": 'Bearer realm="asr_service"'})
