"""Whether a client's URL may be reached: parse it, resolve its host within a deadline, refuse
any non-public address (the SSRF guard's check; urlguard dials only what passed it)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from asr_service.addresses import refusal
from asr_service.errors import UrlRefused

ALLOW_HINT = "set ALLOW_PRIVATE_URLS=true to allow private addresses"
_DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_S = 10.0  # a name lookup outside any request deadline (check_url at submit)


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



class SlowName(TimeoutError):
    """The host name did not resolve before the deadline."""


def _getaddrinfo(host: str, port: int, deadline: float) -> list[Any]:
    """socket.getaddrinfo bounded by the deadline. It cannot be interrupted, so it runs in a
    daemon thread that is abandoned (it ends with the resolver's own timeout) when too slow."""
    try:  # an address literal needs no resolver, nor a thread
        ipaddress.ip_address(host)
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError:
        pass
    answer: list[Any] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the caller below
            answer.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="urlguard-dns", daemon=True).start()
    if not done.wait(max(deadline - time.monotonic(), 0.0)):
        raise SlowName(f"the host {host} did not resolve in time")
    if isinstance(answer[0], BaseException):
        raise answer[0]
    return answer[0]


def _resolve(host: str, port: int, deadline: float) -> list[str]:
    """Every address (IPv4 and IPv6) the host resolves to by the deadline, in resolver order."""
    try:
        infos = _getaddrinfo(host, port, deadline)
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


def check_url(url: str, allow_private: bool, timeout_s: float = RESOLVE_TIMEOUT_S) -> Target:
    """Parse and resolve a client's URL; UrlRefused unless every address is public (or when
    the name does not resolve within timeout_s)."""
    try:
        return check_until(url, allow_private, time.monotonic() + timeout_s)
    except SlowName as exc:
        raise UrlRefused(f"{exc} ({timeout_s:g} s)") from None


def check_until(url: str, allow_private: bool, deadline: float) -> Target:
    """check_url with the name lookup bounded by a deadline (SlowName past it)."""
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
    addresses = _resolve(host, port, deadline)
    for address in [] if allow_private else addresses:
        if why := refusal(ipaddress.ip_address(address)):
            # A name's addresses are never told: that would map internal DNS for anyone.
            where = f"{address} is {why}" if _same_address(host, address) else (
                f"{host} does not resolve to a public address")
            raise UrlRefused(f"{where}; {ALLOW_HINT}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, scheme, host, port, path, addresses)

