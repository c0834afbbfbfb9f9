"""urlguard: the SSRF guard on client URLs and the HTTP client for webhooks and audio_url."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3

from asr_service import urlguard
from asr_service.errors import FetchFailed, UrlRefused
from asr_service.urlguard import Answer, check_url, fetch, post

PUBLIC_IP = "93.184.216.34"
MB = 1024 * 1024
CLIP = bytes(range(256)) * 4096  # 1 MiB


class Handler(BaseHTTPRequestHandler):
    """Routes by path; every request is recorded on the server before it is answered."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers), body))  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding" if chunked else "Connection",
                         "chunked" if chunked else "close")
        self.end_headers()
        piece = b"x" * 65536
        try:
            for _ in range(1000):  # 64 MB at most, far beyond any max_bytes here
                frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                self.wfile.write(frame)
        except OSError:
            pass
        self.close_connection = True

    def _trickle(self, head: bool) -> None:
        if head:  # the status line, then one header byte at a time
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        self.close_connection = True

    def do_POST(self) -> None:
        self._record()
        self.do_ANY()

    def do_GET(self) -> None:
        self._record()
        self.do_ANY()

    def do_ANY(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/ok", "/hook"):
            self._send(200, b"thanks")
        elif path == "/fail":
            self._send(500, b"oops")
        elif path == "/redirect":
            self._send(302, Location="/landing")
        elif path == "/landing":
            self._send(200, CLIP)
        elif path == "/slow":
            time.sleep(3)
            self._send(200)
        elif path.startswith("/audio/"):
            self._send(200, CLIP, Content_Type="audio/wav")
        elif path == "/named":
            self._send(200, CLIP, Content_Disposition='attachment; filename="../../meeting.wav"')
        elif path == "/huge-declared":  # says 3 MB, then sends nothing for a while
            self.send_response(200)
            self.send_header("Content-Length", str(3 * MB))
            self.end_headers()
            time.sleep(3)
        elif path == "/endless-chunked":
            self._stream(chunked=True)
        elif path == "/endless-close":
            self._stream(chunked=False)
        elif path == "/odd-length":  # "²": str.isdigit() says yes, int() says no
            self.send_response(200)
            self.send_header("Content-Length", "\u00b2")
            self.end_headers()
            self.wfile.write(b"xx")
            self.close_connection = True
        elif path == "/trickle-body":
            self._trickle(head=False)
        elif path == "/trickle-head":
            self._trickle(head=True)
        else:
            self._send(404, b"no such thing")


class Server(ThreadingHTTPServer):
    """A local HTTP server on 127.0.0.1 that remembers what it was asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.port = self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.seen]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class FakeDNS:
    """Names this test made up, each with its successive answers (the last one repeats).
    A name in `stalled` answers only once `release` is set, as a resolver that times out."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self.stalled: set[str] = set()
        self.release = threading.Event()

    def __setitem__(self, name: str, answers: list[list[str]]) -> None:
        self.answers[name] = answers


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDNS]:
    """socket.getaddrinfo answers for made-up names; every other host is looked up for real."""
    dns = FakeDNS()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in dns.answers:
            return real(host, port, *args, **kwargs)
        dns.lookups.append(host)
        if host in dns.stalled:
            dns.release.wait(30)
        answers = dns.answers[host]
        ips = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port)) for ip in ips]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield dns
    dns.release.set()  # the abandoned lookup threads end


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- check_url ---------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address"),
    ("http://192.168.0.1/", "192.168.0.1 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared"),
    ("http://0.0.0.0/", "0.0.0.0 is the unspecified address"),
    ("http://[::]/", ":: is the unspecified address"),
    ("http://[::ffff:127.0.0.1]/", "loopback address (IPv4 127.0.0.1 inside IPv6)"),
    ("http://[::ffff:7f00:1]/", "loopback address (IPv4 127.0.0.1 inside IPv6)"),
    ("http://[::ffff:a01:203]/", "private address (IPv4 10.1.2.3 inside IPv6)"),
    ("http://[2002:7f00:1::]/", "loopback address (IPv4 127.0.0.1 inside IPv6)"),
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local address (IPv4 169.254.169.254 inside IPv6)"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fc00::1]/", "fc00::1 is a private address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("http://2130706433/", "2130706433 does not resolve to a public address"),
    ("http://0x7f.1/", "0x7f.1 does not resolve to a public address"),
    ("http://0177.0.0.1/", "0177.0.0.1 does not resolve to a public address"),
    ("http://localhost:8080/", "localhost does not resolve to a public address"),
    # ranges Python 3.11's ipaddress calls global: deprecated site-local, RFC 9637 docs, 6to4 relay
    ("http://[fec0::1]/", "fec0::1 is a site-local address (deprecated)"),
    ("http://[feff::1]/", "feff::1 is a site-local address (deprecated)"),
    ("http://[3fff::1]/", "3fff::1 is a documentation address"),
    ("http://192.88.99.1/", "192.88.99.1 is a 6to4 relay address (deprecated)"),
    ("http://[::ffff:192.88.99.1]/", "6to4 relay address (deprecated) (IPv4 192.88.99.1"),
])
def test_non_public_addresses_are_refused_with_the_reason_and_the_way_out(
        url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url(url, allow_private=False)

    assert reason in info.value.detail
    assert info.value.detail.endswith("set ALLOW_PRIVATE_URLS=true to allow private addresses")


@pytest.mark.parametrize(("url", "reason"), [
    ("file:///etc/passwd", "not file: URLs"),
    ("ftp://example.com/", "not ftp: URLs"),
    ("gopher://example.com/", "not gopher: URLs"),
    ("javascript:alert(1)", "not javascript: URLs"),
    ("data:audio/wav;base64,AAAA", "not data: URLs"),
    ("example.com/hook", "URLs without a scheme"),
    ("not a url", "spaces or control characters"),
    ("http://example.com/a\r\nX-Injected: 1", "spaces or control characters"),
    ("http:///hook", "has no host"),
    ("http://example.com:99999/", "port is not a number from 1 to 65535"),
    ("http://example.com:0/", "port is not a number from 1 to 65535"),
    ("http://name.invalid/", "name.invalid does not resolve"),
])
def test_urls_that_are_not_plain_http_to_a_host_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused, match=reason):
        check_url(url, allow_private=True)


def test_credentials_in_the_url_are_refused_and_never_repeated() -> None:
    with pytest.raises(UrlRefused) as info:
        check_url("http://user:s3cret@example.com/", allow_private=False)

    assert "credentials" in info.value.detail
    assert "s3cret" not in info.value.detail and "user" not in info.value.detail.split("(")[0]


@pytest.mark.parametrize("url", ["http://93.184.216.34/", "http://[2606:4700::1111]/"])
def test_public_address_literals_pass_without_dns(url: str) -> None:
    assert check_url(url, allow_private=False).addresses[0] in url


def test_a_target_keeps_what_the_request_needs() -> None:
    target = check_url("https://[2606:4700::1111]:8443/hook/x?a=1&b=2#frag", allow_private=False)

    assert (target.scheme, target.host, target.port) == ("https", "2606:4700::1111", 8443)
    assert target.path_and_query == "/hook/x?a=1&b=2"
    assert target.host_header == "[2606:4700::1111]:8443"
    assert check_url("http://93.184.216.34/", allow_private=False).host_header == PUBLIC_IP


def test_a_name_is_refused_when_any_of_its_addresses_is_private(names: FakeDNS) -> None:
    names["mixed.example.test"] = [[PUBLIC_IP, "10.0.0.7"]]

    with pytest.raises(UrlRefused, match="mixed.example.test does not resolve to a public"):
        check_url("http://mixed.example.test/", allow_private=False)
    names["v6.example.test"] = [[PUBLIC_IP, "::ffff:169.254.169.254"]]
    with pytest.raises(UrlRefused, match="v6.example.test does not resolve to a public"):
        check_url("http://v6.example.test/", allow_private=False)


def test_a_refused_name_never_tells_the_address_it_resolves_to(names: FakeDNS) -> None:
    names["redis.internal.test"] = [["10.20.30.40"]]
    names["metadata.internal.test"] = [["::ffff:169.254.169.254"]]

    for name in ("redis.internal.test", "metadata.internal.test"):
        with pytest.raises(UrlRefused) as info:
            check_url(f"http://{name}:6379/", allow_private=False)
        detail = info.value.detail
        assert detail.startswith(f"{name} does not resolve to a public address;"), detail
        said = detail.split(";")[0]  # then only the ALLOW_PRIVATE_URLS hint
        assert not any(leak in said for leak in ("10.20", "169.254", "private", "link-local"))


def test_allow_private_lets_local_addresses_through() -> None:
    target = check_url("http://127.0.0.1:9/x", allow_private=True)

    assert target.addresses == ["127.0.0.1"]


# --- connect-time check (DNS rebinding) ---------------------------------------------------

def test_post_connects_to_the_address_it_checked_and_does_not_look_the_name_up_again(
        names: FakeDNS, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # first lookup: public; any later lookup would say 127.0.0.1, where our server listens
    names["rebind.example.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    dialed: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        dialed.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)

    answer = post(server.url("/hook", host="rebind.example.test"), b"{}", {},
                  allow_private=False, timeout_s=2)

    assert dialed == [(PUBLIC_IP, server.port)]
    assert names.lookups == ["rebind.example.test"]
    assert server.seen == []
    assert answer.status is None and "Connection refused" in answer.error


def test_a_name_that_rebinds_to_loopback_after_submission_is_refused_at_delivery(
        names: FakeDNS, server: Server) -> None:
    names["rebind.example.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    url = server.url("/hook", host="rebind.example.test")
    check_url(url, allow_private=False)  # what the API does when the job is submitted

    with pytest.raises(UrlRefused, match="rebind.example.test does not resolve to a public"):
        post(url, b"{}", {}, allow_private=False, timeout_s=2)
    with pytest.raises(UrlRefused, match="does not resolve to a public"):
        fetch(url, max_bytes=MB, allow_private=False, timeout_s=2)
    assert server.seen == []


def test_the_local_server_is_refused_without_allow_private(server: Server) -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        post(server.url("/ok"), b"{}", {}, allow_private=False, timeout_s=2)
    with pytest.raises(UrlRefused, match="loopback"):
        fetch(server.url("/audio/clip.wav"), max_bytes=MB, allow_private=False, timeout_s=2)
    assert server.seen == []


# --- post ---------------------------------------------------------------------------------

def test_post_delivers_body_and_headers_with_the_original_host(
        names: FakeDNS, server: Server) -> None:
    names["hooks.example.test"] = [["127.0.0.1"]]
    body = b'{"type": "job.succeeded", "id": "\xc3\xa9"}'

    answer = post(server.url("/hook?via=test", host="hooks.example.test"), body,
                  {"Content-Type": "application/json", "webhook-id": "msg_1"},
                  allow_private=True, timeout_s=5)

    assert answer == Answer(200, None) and answer.ok
    [(method, path, headers, received)] = server.seen
    assert (method, path, received) == ("POST", "/hook?via=test", body)
    assert headers["Host"] == f"hooks.example.test:{server.port}"
    assert headers["webhook-id"] == "msg_1"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "asr_service-webhooks/1"


def test_post_reports_a_server_error_as_its_status(server: Server) -> None:
    answer = post(server.url("/fail"), b"{}", {}, allow_private=True, timeout_s=5)

    assert answer == Answer(500, "HTTP 500") and not answer.ok


def test_post_does_not_follow_redirects(server: Server) -> None:
    answer = post(server.url("/redirect"), b"{}", {}, allow_private=True, timeout_s=5)

    assert answer == Answer(302, "HTTP 302")
    assert server.paths() == ["/redirect"]


@pytest.mark.parametrize("path", ["/slow", "/trickle-head"])
def test_post_gives_up_at_its_timeout(server: Server, path: str) -> None:
    started = time.monotonic()
    answer = post(server.url(path), b"{}", {}, allow_private=True, timeout_s=1)

    assert time.monotonic() - started < 2
    assert answer.status is None and "timed out" in answer.error


def test_post_to_a_closed_port_is_an_answer_not_an_exception() -> None:
    port = free_port()

    answer = post(f"http://127.0.0.1:{port}/hook", b"{}", {}, allow_private=True, timeout_s=2)

    assert answer.status is None and "refused" in answer.error.lower()


def test_a_slow_name_lookup_counts_against_the_deadline(names: FakeDNS, server: Server) -> None:
    names["slow.example.test"] = [["127.0.0.1"]]
    names.stalled.add("slow.example.test")
    url = server.url("/hook", host="slow.example.test")

    started = time.monotonic()
    answer = post(url, b"{}", {}, allow_private=True, timeout_s=1)
    took_post = time.monotonic() - started
    with pytest.raises(FetchFailed, match="timed out after 1 s .resolving the host."):
        fetch(url, max_bytes=MB, allow_private=True, timeout_s=1)
    with pytest.raises(UrlRefused, match="slow.example.test did not resolve in time .1 s."):
        check_url(url, allow_private=True, timeout_s=1)
    took = time.monotonic() - started

    print(f"\nslow DNS: post gave up after {took_post:.2f} s, all three after {took:.2f} s")
    assert answer == Answer(None, "timed out after 1 s (resolving the host)")
    assert took < 3 * 5, "each gave up at its 1 s deadline, not with the resolver"
    assert server.seen == [], "nothing was sent after the deadline"


# --- fetch --------------------------------------------------------------------------------

def test_a_non_ascii_digit_content_length_is_a_fetch_failure(server: Server) -> None:
    with pytest.raises(FetchFailed, match="invalid Content-Length"):
        fetch(server.url("/odd-length"), max_bytes=MB, allow_private=True, timeout_s=5)


def test_fetch_returns_the_body_with_the_file_name_from_the_path(server: Server) -> None:
    got = fetch(server.url("/audio/my%20talk.wav?sig=abc"), max_bytes=2 * MB,
                allow_private=True, timeout_s=5)

    assert got.data == CLIP
    assert got.filename == "my talk.wav"
    assert got.content_type == "audio/wav"
    assert server.seen[0][2]["User-Agent"] == "asr_service-audio-url/1"


def test_content_disposition_names_the_file_without_its_directories(server: Server) -> None:
    got = fetch(server.url("/named"), max_bytes=2 * MB, allow_private=True, timeout_s=5)

    assert got.filename == "meeting.wav" and got.data == CLIP


def test_a_declared_length_over_max_bytes_fails_before_reading(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="larger than MAX_UPLOAD_MB"):
        fetch(server.url("/huge-declared"), max_bytes=2 * MB, allow_private=True, timeout_s=10)

    assert time.monotonic() - started < 1  # the body never came: the header was enough


@pytest.mark.parametrize("path", ["/endless-chunked", "/endless-close"])
def test_an_undeclared_body_stops_just_past_max_bytes(
        server: Server, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    read = 0
    real_read1 = urllib3.response.HTTPResponse.read1

    def counting_read1(self: Any, *args: Any, **kwargs: Any) -> bytes:
        nonlocal read
        data = real_read1(self, *args, **kwargs)
        read += len(data)
        return data

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read1", counting_read1)

    with pytest.raises(FetchFailed, match="larger than MAX_UPLOAD_MB"):
        fetch(server.url(path), max_bytes=2 * MB, allow_private=True, timeout_s=10)

    assert 2 * MB < read <= 2 * MB + urlguard.CHUNK_BYTES


def test_a_trickling_server_cannot_hold_fetch_past_its_deadline(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out after 1 s"):
        fetch(server.url("/trickle-body"), max_bytes=2 * MB, allow_private=True, timeout_s=1)

    assert time.monotonic() - started < 2


def test_fetch_reports_the_status_of_a_missing_file(server: Server) -> None:
    with pytest.raises(FetchFailed, match="HTTP 404"):
        fetch(server.url("/missing.wav"), max_bytes=MB, allow_private=True, timeout_s=5)


def test_fetch_does_not_follow_redirects(server: Server) -> None:
    with pytest.raises(FetchFailed, match="HTTP 302; redirects are not followed"):
        fetch(server.url("/redirect"), max_bytes=2 * MB, allow_private=True, timeout_s=5)

    assert server.paths() == ["/redirect"]


def test_fetch_from_a_closed_port_fails_with_the_reason() -> None:
    with pytest.raises(FetchFailed, match="(?i)refused"):
        fetch(f"http://127.0.0.1:{free_port()}/a.wav", max_bytes=MB, allow_private=True,
              timeout_s=2)


# --- TLS: the request goes to the checked IP, SNI and the certificate check use the name ---

def make_cert(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `name` (no IP in it) signed by that CA."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", ca_key, "test CA", ca_key, ca=True)
    cert = build(name, key, "test CA", ca_key, ca=False)
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_server(server: Server, tmp_path: Path, request: pytest.FixtureRequest) -> Server:
    """The local server behind TLS with a certificate for the name the test gives."""
    ca, cert, key = make_cert(tmp_path, request.param)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.sni: list[str | None] = []  # type: ignore[misc]
    context.sni_callback = lambda _sock, name, _ctx: server.sni.append(name)  # type: ignore[attr-defined]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.ca = ca  # type: ignore[attr-defined]
    return server


@pytest.mark.parametrize("tls_server", ["hooks.example.test"], indirect=True)
def test_https_verifies_the_certificate_against_the_url_name(
        tls_server: Server, names: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    names["hooks.example.test"] = [["127.0.0.1"]]
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))  # type: ignore[attr-defined]

    answer = post(tls_server.url("/hook", host="hooks.example.test", scheme="https"), b"{}",
                  {}, allow_private=True, timeout_s=5)

    assert answer == Answer(200, None)
    assert tls_server.sni == ["hooks.example.test"]  # type: ignore[attr-defined]
    assert tls_server.seen[0][2]["Host"] == f"hooks.example.test:{tls_server.port}"


@pytest.mark.parametrize("tls_server", ["other.example.test"], indirect=True)
def test_https_refuses_a_certificate_for_another_name(
        tls_server: Server, names: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    names["hooks.example.test"] = [["127.0.0.1"]]
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca))  # type: ignore[attr-defined]

    answer = post(tls_server.url("/hook", host="hooks.example.test", scheme="https"), b"{}",
                  {}, allow_private=True, timeout_s=5)

    assert answer.status is None and answer.error.startswith("TLS error")
    assert "hooks.example.test" in answer.error
    assert tls_server.seen == []


@pytest.mark.parametrize("tls_server", ["hooks.example.test"], indirect=True)
def test_https_refuses_an_untrusted_certificate(tls_server: Server, names: FakeDNS) -> None:
    names["hooks.example.test"] = [["127.0.0.1"]]

    with pytest.raises(FetchFailed, match="TLS error.*certificate verify failed"):
        fetch(tls_server.url("/audio/a.wav", host="hooks.example.test", scheme="https"),
              max_bytes=2 * MB, allow_private=True, timeout_s=5)
    assert tls_server.seen == []
