"""SSRF guard and the one HTTP client for URLs clients give us (callback_url, audio_url)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, SSLError

from asr_service.errors import FetchFailed, UrlRefused

WEBHOOK_USER_AGENT = "asr_service-webhooks/1"
FETCH_USER_AGENT = "asr_service-audio-url/1"
ANSWER_READ_LIMIT = 64 * 1024
CHUNK_BYTES = 64 * 1024
ALLOW_HINT = "set WEBHOOK_ALLOW_PRIVATE=true to allow private addresses"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, with every address its host resolved to then."""

    url: str
    scheme: str
    host: str
    port: int
    path_and_query: str
    addresses: list[str]

    @property
    def host_header(self) -> str:
        """The Host header: the name from the URL, with the port unless it is the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


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


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or value >> 32 in (0, 0xFFFF0000):  # NAT64, compatible, SIIT
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of address this is when it is not a public unicast one, else None."""
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_loopback or ip.is_unspecified):
        if (v4 := _embedded_v4(ip)) is not None:
            why = _refusal(v4)
            return None if why is None else f"{why} (IPv4 {v4} inside IPv6)"
    for hit, kind in ((ip.is_loopback, "a loopback address"),
                      (ip.is_unspecified, "the unspecified address"),
                      (ip.is_link_local, "a link-local address"),
                      (ip.is_multicast, "a multicast address"),
                      (ip.version == 4 and ip in _SHARED, "a shared (carrier-grade NAT) address"),
                      (ip.is_private, "a private address"),
                      (ip.is_reserved, "a reserved address"),
                      (not ip.is_global, "not a public address")):
        if hit:
            return kind
    return None


def _resolve(host: str, port: int) -> list[str]:
    """Every address (IPv4 and IPv6) the host resolves to, in resolver order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"the host {host} does not resolve ({exc})") from None
    ips = [str(i[4][0]) for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not ips:
        raise UrlRefused(f"the host {host} has no IPv4 or IPv6 address")
    return list(dict.fromkeys(ips))


def _same_address(host: str, address: str) -> bool:
    """True when the host was written as this very address (an IP literal)."""
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(address)
    except ValueError:
        return False


def check_url(url: str, allow_private: bool) -> Target:
    """Parse and resolve a client's URL; UrlRefused unless every address is public."""
    if any(c <= " " or c == "\x7f" for c in url):
        raise UrlRefused("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UrlRefused(f"the URL cannot be parsed ({exc})") from None
    try:
        port = parts.port
    except ValueError:
        raise UrlRefused("the URL's port is not a number from 1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        given = f"{scheme}: URLs" if scheme else "URLs without a scheme"
        raise UrlRefused(f"only http:// and https:// URLs are allowed, not {given}")
    if "@" in parts.netloc:
        raise UrlRefused("URLs with credentials (user:password@) are not allowed")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if port == 0:
        raise UrlRefused("the URL's port is not a number from 1 to 65535")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRefused("the host name is not a valid domain name") from None
    port = port or _DEFAULT_PORTS[scheme]
    addresses = _resolve(host, port)
    for address in [] if allow_private else addresses:
        if why := _refusal(ipaddress.ip_address(address)):
            where = f"{address} is" if _same_address(host, address) else (
                f"{host} resolves to {address},")
            raise UrlRefused(f"{where} {why}; {ALLOW_HINT}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, scheme, host, port, path, addresses)


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
    deadline = time.monotonic() + timeout_s
    target = check_url(url, allow_private)
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
    deadline = time.monotonic() + timeout_s
    target = check_url(url, allow_private)
    too_big = f"audio_url is larger than MAX_UPLOAD_MB ({max_bytes // (1024 * 1024)} MB)"
    with _Call(target, deadline) as call:
        try:
            resp = call.open("GET", None, {"User-Agent": FETCH_USER_AGENT,
                                           "Accept-Encoding": "identity"})
            if not 200 <= resp.status < 300:
                extra = "; redirects are not followed" if 300 <= resp.status < 400 else ""
                raise FetchFailed(f"audio_url answered HTTP {resp.status}{extra}")
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
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
