"""Settings of access control, delivery to clients (webhooks, audio_url) and the processes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccessSettings:
    """Access"""

    api_keys: str = field(default="", repr=False)
    """Comma-separated API keys. When set, every endpoint but /api/v1/health (and the docs,
    /metrics and the dashboard page) needs `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    Each key is a tenant: it sees, downloads, retries and deletes only the jobs it submitted
    (another key's task ids answer 404). Without keys every client is one tenant."""
    admin_api_keys: str = field(default="", repr=False)
    """Comma-separated admin keys: valid API keys that see every tenant's jobs (history, queue
    status task ids, the dashboard's latest jobs), and the jobs stored before keys were set."""
    rate_limit: str = ""
    """Requests allowed per API key (or per client address without keys), across all endpoints,
    counted in Redis: e.g. 120/minute or 10/second;2000/hour. Empty: no limit."""
    allow_anonymous: bool = False
    """The API refuses to listen beyond loopback (API_HOST) without API_KEYS, like Redis's
    protected mode; true lets it (e.g. behind an authenticating proxy) and says so loudly in the
    log. Without keys every client is one tenant, and behind a proxy all of them come from the
    proxy's address: they share one RATE_LIMIT budget and one Idempotency-Key scope."""
    api_allowed_hosts: str = ""
    """Host names (the Host header) the API answers; any other gets 400, so a DNS-rebinding web
    page cannot reach a key-less loopback API. Comma-separated; .example.com also allows
    subdomains; * allows any. Empty: localhost, 127.0.0.1, API_HOST and PUBLIC_URL's host (any
    host when API_HOST is 0.0.0.0 or ::; set the names your clients use there). An IPv6 literal
    Host ([::1]:8000) never matches (Werkzeug 3.1): reach the API by a name or an IPv4
    address."""
    flower_basic_auth: str = field(default="", repr=False)
    """user:password for Flower's UI and API. Required when FLOWER_HOST is beyond loopback; on
    loopback without it, Flower's UI is open to this host only and its JSON API is closed.
    Leave it commented out rather than empty: Flower reads this variable itself and would take
    an empty one for a login."""
    flower_unauthenticated_api: bool = False
    """Flower's own switch for a JSON API without a login. Refused (Flower will not start):
    Flower 2.2 then answers any web page (Access-Control-Allow-Origin: *, no XSRF check), which
    could shut workers down. Use FLOWER_BASIC_AUTH and call the API with that login."""


@dataclass(frozen=True)
class DeliverySettings:
    """Clients that do not poll: OpenAI endpoint, webhooks, audio_url"""

    sync_timeout_s: int = 300
    """POST /v1/audio/transcriptions waits this long for its job, then answers 504 with the task
    id (fetch it later from /api/v1/asr/result/{task_id})."""
    webhook_secret: str = field(default="", repr=False)
    """Signing secret for webhooks (Standard Webhooks): whsec_ + base64 of 32 random bytes, e.g.
    `echo "whsec_$(openssl rand -base64 32)"`. Receivers verify each POST with it. Without it,
    submits with callback_url are refused (422)."""
    webhook_retry_base_s: float = 10.0
    """First retry delay of a failed delivery (non-2xx, timeout, refused connection); each next
    delay doubles (+-10% jitter)."""
    webhook_max_attempts: int = 14
    """Deliveries tried per webhook event (14 x doubling from 10 s span about a day); then the
    delivery is `failed`."""
    webhook_timeout_s: float = 10.0
    """Seconds one delivery may take (connect + answer, DNS lookup included). Redirects are
    never followed."""
    allow_private_urls: bool = False
    """callback_url and audio_url may not reach loopback, private, link-local or reserved
    addresses (SSRF guard, checked again at connect time); true allows them (a receiver on your
    own LAN). Deprecated alias: WEBHOOK_ALLOW_PRIVATE."""
    webhook_include_result: bool = False
    """true: job.succeeded webhooks carry the transcript; false: only the links to fetch it."""
    audio_url_timeout_s: float = 30.0
    """How long fetching an audio_url may take in all (its size is capped by MAX_UPLOAD_MB)."""
    public_url: str = ""
    """Base URL clients reach the API at (e.g. https://asr.example.com): webhooks then carry
    absolute links to the result. Empty: the links are paths (/api/v1/asr/result/...)."""


@dataclass(frozen=True)
class ProcessSettings:
    """Processes, ports and logs"""

    api_host: str = "127.0.0.1"
    """Address the API (gunicorn) binds: loopback by default; beyond it (0.0.0.0: all
    interfaces) it needs API_KEYS (or ALLOW_ANONYMOUS), or it refuses to start."""
    flower_host: str = "127.0.0.1"
    """Address Flower binds; beyond loopback it needs FLOWER_BASIC_AUTH, or it refuses to
    start."""
    api_port: int = 8000
    """Port gunicorn binds."""
    api_workers: int = 2
    """gunicorn worker processes for the API (gevent: each serves many slow clients at once)."""
    flower_port: int = 5555
    """Port Flower binds."""
    log_dir: str = "logs"
    """Directory of the rotating JSON-lines logs (api.log, worker.log) and the business log
    events.jsonl."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
