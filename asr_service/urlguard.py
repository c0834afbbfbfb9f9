"""SSRF guard and the one HTTP client for URLs clients give us (callback_url, audio_url)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import unquote

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, SSLError

from asr_service.errors import FetchFailed

# check_url is part of this module's interface (the guard and its client in one place to callers).
from asr_service.urlcheck import SlowName, Target, check_until
from asr_service.urlcheck import check_url as check_url

WEBHOOK_USER_AGENT = "asr_service-webhooks/1"
FETCH_USER_AGENT = "asr_service-audio-url/1"
ANSWER_READ_LIMIT = 64 * 1024
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """How a POST went: status None when no HTTP answer came, error None on a 2xx."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.error is None


@dataclass(frozen=True)
class Fetched:
    """A downloaded body with the file name and media type the server gave."""

    data: bytes
    filename: str | None
    content_type: str | None



class _Tracking:
    """Pool mixin that remembers its connections so a watchdog can shut them down."""

    opened: list[Any]

    def _new_conn(self) -> Any:
        conn = super()._new_conn()  # type: ignore[misc]
        self.opened.append(conn)
        return conn


class _HTTPPool(_Tracking, urllib3.HTTPConnectionPool):
    """HTTP pool with connection tracking."""


class _HTTPSPool(_Tracking, urllib3.HTTPSConnectionPool):
    """HTTPS pool with connection tracking."""


class _Call:
    """One request to a checked Target, cut off (sockets shut down) at the deadline."""

    def __init__(self, target: Target, deadline: float) -> None:
        remaining = max(deadline - time.monotonic(), 0.001)
        self.target, self.deadline = target, deadline
        # the pool dials the first checked address: no second DNS lookup to rebind
        kw: dict[str, Any] = {"timeout": urllib3.Timeout(connect=remaining, read=remaining),
                              "retries": False, "maxsize": 1}
        if target.scheme == "https":  # SNI and the certificate check use the URL's name
            kw.update(server_hostname=target.host, assert_hostname=target.host,
                      cert_reqs="CERT_REQUIRED")
        pool_class = _HTTPSPool if target.scheme == "https" else _HTTPPool
        self.pool = pool_class(target.addresses[0], target.port, **kw)
        self.pool.opened = []
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(remaining, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired.set()
            for conn in self.pool.opened:
                if conn.sock is not None:
                    try:
                        socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
                    except OSError:
                        pass

    def __enter__(self) -> _Call:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
        for conn in self.pool.opened:
            conn.close()
        self.pool.close()

    def open(self, method: str, body: bytes | None, headers: dict[str, str]) -> Any:
        """Send the request (Host is the URL's), never following redirects; the response."""
        merged = urllib3.HTTPHeaderDict(headers)
        merged["Host"] = self.target.host_header
        return self.pool.urlopen(method, self.target.path_and_query, body=body, headers=merged,
                                 redirect=False, retries=False, assert_same_host=False,
                                 preload_content=False, decode_content=False)

    def reason(self, exc: BaseException, timeout_s: float) -> str:
        """A short, credential-free reason for a network failure."""
        if self.expired.is_set() or time.monotonic() >= self.deadline or (
                isinstance(exc, urllib3.exceptions.TimeoutError)
                and not isinstance(exc, NewConnectionError)):  # a subclass, oddly
            return f"timed out after {timeout_s:g} s"
        if isinstance(exc, NewConnectionError):
            why = getattr(exc.__cause__, "strerror", None) or exc.__cause__ or exc
            return f"could not connect to {self.target.host_header}: {why}"
        label = ("TLS error" if isinstance(exc, SSLError) else
                 "connection broken" if isinstance(exc, ProtocolError) else "connection failed")
        return f"{label}: {' '.join(str(exc).split())[:200]}"


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool,
         timeout_s: float) -> Answer:
    """POST to a client's URL; network trouble is an Answer, UrlRefused is raised."""
    deadline = time.monotonic() + timeout_s  # the name lookup counts against it too
    try:
        target = check_until(url, allow_private, deadline)
    except SlowName:
        return Answer(None, f"timed out after {timeout_s:g} s (resolving the host)")
    with _Call(target, deadline) as call:
        try:
            resp = call.open("POST", body, {"User-Agent": WEBHOOK_USER_AGENT, **headers})
            if call.expired.is_set():  # the watchdog cut the answer's head short
                raise TimeoutError
        except (HTTPError, OSError) as exc:
            return Answer(None, call.reason(exc, timeout_s))
        try:  # read a little of the answer and drop it; the status is what counts
            left = ANSWER_READ_LIMIT
            while left > 0 and (chunk := resp.read1(left)):
                left -= len(chunk)
        except (HTTPError, OSError):
            pass
    status = resp.status
    return Answer(status, None if 200 <= status < 300 else f"HTTP {status}")


def _filename(disposition: str | None, path: str) -> str | None:
    """The file name from Content-Disposition, else the URL's last path segment."""
    name = None
    if disposition:
        msg = Message()
        msg["Content-Disposition"] = disposition
        name = msg.get_filename()
    if not name:
        name = unquote(path.split("?")[0].rsplit("/", 1)[-1])
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else None


def fetch(url: str, *, max_bytes: int, allow_private: bool, timeout_s: float) -> Fetched:
    """GET a client's URL within max_bytes and timeout_s; UrlRefused or FetchFailed."""
    deadline = time.monotonic() + timeout_s  # the name lookup counts against it too
    try:
        target = check_until(url, allow_private, deadline)
    except SlowName:
        raise FetchFailed(f"audio_url: timed out after {timeout_s:g} s (resolving the host)"
                          ) from None
    too_big = f"audio_url is larger than MAX_UPLOAD_MB ({max_bytes // (1024 * 1024)} MB)"
    with _Call(target, deadline) as call:
        try:
            resp = call.open("GET", None, {"User-Agent": FETCH_USER_AGENT,
                                           "Accept-Encoding": "identity"})
            if not 200 <= resp.status < 300:
                extra = "; redirects are not followed" if 300 <= resp.status < 400 else ""
                raise FetchFailed(f"audio_url answered HTTP {resp.status}{extra}")
            length = resp.headers.get("Content-Length", "")
            if length and not (length.isascii() and length.isdigit()):  # "²".isdigit() too
                raise FetchFailed("audio_url answered with an invalid Content-Length")
            if length and int(length) > max_bytes:
                raise FetchFailed(too_big)
            chunks: list[bytes] = []
            got = 0
            while chunk := resp.read1(CHUNK_BYTES):
                got += len(chunk)
                if got > max_bytes:
                    raise FetchFailed(too_big)
                if time.monotonic() >= deadline:
                    raise TimeoutError
                chunks.append(chunk)
            if call.expired.is_set():  # the watchdog cut the body short
                raise TimeoutError
        except (HTTPError, OSError) as exc:
            raise FetchFailed(f"audio_url: {call.reason(exc, timeout_s)}") from None
        return Fetched(b"".join(chunks), _filename(resp.headers.get("Content-Disposition"),
                                                   target.path_and_query),
                       resp.headers.get("Content-Type"))
