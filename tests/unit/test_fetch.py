"""HttpFetcher against a real HTTP server on 127.0.0.1, and its address policy (refused before any connection)."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.http_server import LocalServer
from verifier.errors import CannotCheck, FetchError
from verifier.fetch import HttpFetcher, offline_fetcher


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    with HttpFetcher(allow_http_loopback=True, timeout=3.0) as f:
        yield f


def _no_network() -> httpx.MockTransport:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the policy should have refused {request.url} before connecting")

    return httpx.MockTransport(refuse)


# -- policy: refused without connecting -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://127.1.2.3:8443/x",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        "https://[::1]/",
        "https://[::]/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://[ff02::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://[::ffff:169.254.169.254]/",
        "https://[64:ff9b::a00:1]/",
        "https://[2002:a00:1::]/",
        "https://localhost/",
        "https://2130706433/",  # 127.0.0.1 as one decimal number, resolved by the system resolver
    ],
)
def test_non_public_addresses_are_refused_before_connecting(url: str) -> None:
    with HttpFetcher(transport=_no_network()) as f, pytest.raises(FetchError) as info:
        f(url)
    assert info.value.code == "fetch_address"
    assert "non-public address" in info.value.detail


def test_loopback_is_refused_for_https_even_with_http_loopback_when_the_name_is_not_loopback() -> None:
    # allow_http_loopback lifts the policy only for URLs that *say* loopback, not for names resolving to it
    with HttpFetcher(transport=_no_network(), allow_http_loopback=True) as f, pytest.raises(FetchError) as info:
        f("https://2130706433/")
    assert info.value.code == "fetch_address"


def test_private_addresses_stay_refused_with_http_loopback() -> None:
    with HttpFetcher(transport=_no_network(), allow_http_loopback=True) as f, pytest.raises(FetchError) as info:
        f("https://10.1.2.3/")
    assert info.value.code == "fetch_address"


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://example.com/", False),
        ("http://example.com/", True),
        ("http://127.0.0.1:8000/", False),
        ("http://10.0.0.1/", True),
        ("ftp://example.com/file", True),
        ("file:///etc/passwd", True),
        ("gopher://127.0.0.1/", True),
    ],
)
def test_only_https_or_http_to_loopback(url: str, loopback: bool) -> None:
    with HttpFetcher(transport=_no_network(), allow_http_loopback=loopback) as f, pytest.raises(FetchError) as info:
        f(url)
    assert info.value.code in ("fetch_scheme", "fetch_url")


@pytest.mark.parametrize("url", ["https://user:pw@example.com/", "https:///path", "not a url", ""])
def test_malformed_urls_and_credentials_in_urls(url: str) -> None:
    with HttpFetcher(transport=_no_network()) as f, pytest.raises(FetchError):
        f(url)


def test_unresolvable_host_is_a_fetch_error() -> None:
    with HttpFetcher(transport=_no_network()) as f, pytest.raises(FetchError) as info:
        f("https://no-such-host.invalid/")
    assert info.value.code == "fetch_dns"


def test_fetch_error_is_could_not_check() -> None:
    assert issubclass(FetchError, CannotCheck)
    with pytest.raises(FetchError):
        offline_fetcher("https://example.com/")


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1.0}, {"max_bytes": 0}, {"max_redirects": -1}])
def test_constructor_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        HttpFetcher(**kwargs)


# -- real server -------------------------------------------------------------------------------------------


def test_fetches_body_with_accept_and_host_headers(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.json("/doc.json", b'{"ok": true}')
    assert fetcher(f"{server.base}/doc.json", accept="application/did+json") == b'{"ok": true}'
    path, headers = server.requests[-1]
    assert path == "/doc.json"
    assert headers["accept"] == "application/did+json"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["accept-encoding"] == "identity"


def test_http_loopback_needs_the_option(server: LocalServer) -> None:
    server.json("/a", b"{}")
    with HttpFetcher() as f, pytest.raises(FetchError) as info:
        f(f"{server.base}/a")
    assert info.value.code == "fetch_scheme"
    assert server.requests == []


@pytest.mark.parametrize("status", [404, 410, 500, 503])
def test_non_2xx_is_a_fetch_error(server: LocalServer, fetcher: HttpFetcher, status: int) -> None:
    server.json("/x", b"{}", status=status)
    with pytest.raises(FetchError) as info:
        fetcher(f"{server.base}/x")
    assert info.value.code == "fetch_status"
    assert str(status) in info.value.detail


def test_body_at_the_cap_is_fine_and_one_byte_more_is_refused(server: LocalServer) -> None:
    server.json("/ok", b"a" * 1000)
    server.json("/big", b"a" * 1001)
    with HttpFetcher(allow_http_loopback=True, max_bytes=1000) as f:
        assert len(f(f"{server.base}/ok")) == 1000
        with pytest.raises(FetchError) as info:
            f(f"{server.base}/big")
    assert info.value.code == "fetch_too_large"


def test_oversize_body_without_content_length_is_cut_off_while_streaming(server: LocalServer) -> None:
    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()  # HTTP/1.0, no Content-Length: the body runs until the connection closes
        for _ in range(1000):
            if server.stop.is_set():
                return
            h.wfile.write(b"x" * 65536)

    server.routes["/endless"] = endless
    with HttpFetcher(allow_http_loopback=True, max_bytes=100_000) as f, pytest.raises(FetchError) as info:
        f(f"{server.base}/endless")
    assert info.value.code == "fetch_too_large"


def _gzip_route(server: LocalServer, path: str, plain: bytes) -> None:
    body = gzip.compress(plain)

    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    server.routes[path] = send


def test_gzip_sent_anyway_is_decoded_and_bounded(server: LocalServer) -> None:
    _gzip_route(server, "/small", b'{"a": 1}')
    _gzip_route(server, "/bomb", b"\0" * 5_000_000)  # ~5 KB on the wire
    with HttpFetcher(allow_http_loopback=True, max_bytes=1_000_000) as f:
        assert f(f"{server.base}/small") == b'{"a": 1}'
        with pytest.raises(FetchError) as info:
            f(f"{server.base}/bomb")
    assert info.value.code == "fetch_too_large"


def test_truncated_gzip_is_refused(server: LocalServer, fetcher: HttpFetcher) -> None:
    body = gzip.compress(b'{"a": 1}' * 100)[:-12]

    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.end_headers()
        h.wfile.write(body)

    server.routes["/cut"] = send
    with pytest.raises(FetchError, match="truncated"):
        fetcher(f"{server.base}/cut")


def test_slow_response_times_out(server: LocalServer) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        server.stop.wait(5)

    server.routes["/slow"] = slow
    started = time.monotonic()
    with HttpFetcher(allow_http_loopback=True, timeout=0.3) as f, pytest.raises(FetchError) as info:
        f(f"{server.base}/slow")
    assert info.value.code == "fetch_timeout"
    assert time.monotonic() - started < 2


def test_trickling_body_hits_the_total_budget(server: LocalServer) -> None:
    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(100):
            if server.stop.wait(0.05):
                return
            h.wfile.write(b"x")
            h.wfile.flush()

    server.routes["/trickle"] = trickle
    started = time.monotonic()
    with HttpFetcher(allow_http_loopback=True, timeout=0.4) as f, pytest.raises(FetchError) as info:
        f(f"{server.base}/trickle")
    assert info.value.code == "fetch_timeout"
    assert time.monotonic() - started < 2


def test_connection_refused_is_a_fetch_error() -> None:
    with LocalServer() as closed:
        port = closed.port
    with HttpFetcher(allow_http_loopback=True, timeout=2) as f, pytest.raises(FetchError) as info:
        f(f"http://127.0.0.1:{port}/")
    assert info.value.code in ("fetch_connect", "fetch_failed")


# -- redirects ---------------------------------------------------------------------------------------------


def test_redirects_are_followed_and_rechecked(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.redirect("/old", "/hop")
    server.redirect("/hop", f"http://127.0.0.1:{server.port}/new", status=301)
    server.json("/new", b'"here"')
    assert fetcher(f"{server.base}/old") == b'"here"'
    assert [p for p, _ in server.requests] == ["/old", "/hop", "/new"]


@pytest.mark.parametrize(
    ("location", "code"),
    [
        ("https://10.0.0.7/internal", "fetch_address"),
        ("https://169.254.169.254/latest/meta-data/", "fetch_address"),
        ("https://[::ffff:192.168.0.1]/", "fetch_address"),
        ("http://example.com/", "fetch_scheme"),
        ("file:///etc/passwd", "fetch_scheme"),
    ],
)
def test_redirect_to_a_refused_target(server: LocalServer, fetcher: HttpFetcher, location: str, code: str) -> None:
    server.redirect("/r", location)
    with pytest.raises(FetchError) as info:
        fetcher(f"{server.base}/r")
    assert info.value.code == code
    assert [p for p, _ in server.requests] == ["/r"]


def test_redirect_limit(server: LocalServer) -> None:
    for i in range(4):
        server.redirect(f"/r{i}", f"/r{i + 1}")
    server.json("/r4", b"1")
    with HttpFetcher(allow_http_loopback=True, max_redirects=4) as f:
        assert f(f"{server.base}/r0") == b"1"
    with HttpFetcher(allow_http_loopback=True, max_redirects=3) as f, pytest.raises(FetchError) as info:
        f(f"{server.base}/r0")
    assert info.value.code == "fetch_redirect"


def test_redirect_loop_and_missing_location(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.redirect("/loop", "/loop")
    server.json("/noloc", b"", status=302)
    with pytest.raises(FetchError) as info:
        fetcher(f"{server.base}/loop")
    assert info.value.code == "fetch_redirect"
    with pytest.raises(FetchError) as info:
        fetcher(f"{server.base}/noloc")
    assert info.value.code == "fetch_redirect"


# -- TLS: connect to the checked IP, verify the certificate against the host name ---------------------------


def _certificate_chain(dns_name: str) -> tuple[bytes, bytes, bytes]:
    """(CA cert PEM, leaf cert PEM, leaf key PEM) for a leaf valid for `dns_name` and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", "test CA", ca_key, ca_key, ca=True)
    leaf = build(dns_name, "test CA", leaf_key, ca_key, ca=False)
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(serialization.Encoding.PEM), leaf.public_bytes(serialization.Encoding.PEM), key_pem


def _tls_server(dns_name: str, tmp_path: Any, seen_sni: list[str | None]) -> tuple[LocalServer, ssl.SSLContext]:
    ca_pem, leaf_pem, key_pem = _certificate_chain(dns_name)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")
    server_ctx.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
    return LocalServer(tls=server_ctx), client_ctx


def _localhost_is_only_127_0_0_1() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return {info[4][0] for info in infos} == {"127.0.0.1"}


@pytest.mark.skipif(not _localhost_is_only_127_0_0_1(), reason="tests talk to 127.0.0.1 only")
def test_https_by_name_sends_sni_and_checks_the_certificate_for_the_name(tmp_path: Any) -> None:
    seen_sni: list[str | None] = []
    server, client_ctx = _tls_server("localhost", tmp_path, seen_sni)
    with server:
        server.json("/did.json", b'{"id": "x"}')
        transport = httpx.HTTPTransport(verify=client_ctx)
        with HttpFetcher(allow_http_loopback=True, transport=transport) as f:
            assert f(f"https://localhost:{server.port}/did.json") == b'{"id": "x"}'
    assert seen_sni == ["localhost"]
    assert server.requests[0][1]["host"] == f"localhost:{server.port}"


def test_https_certificate_for_another_name_is_refused(tmp_path: Any) -> None:
    seen_sni: list[str | None] = []
    server, client_ctx = _tls_server("other.example", tmp_path, seen_sni)
    with server:
        server.json("/x", b"{}")
        with HttpFetcher(allow_http_loopback=True, transport=httpx.HTTPTransport(verify=client_ctx)) as f:
            assert f(f"https://127.0.0.1:{server.port}/x") == b"{}"  # the leaf also covers IP 127.0.0.1
        if _localhost_is_only_127_0_0_1():
            with HttpFetcher(allow_http_loopback=True, transport=httpx.HTTPTransport(verify=client_ctx)) as f:
                with pytest.raises(FetchError) as info:
                    f(f"https://localhost:{server.port}/x")  # connects to 127.0.0.1, but the name must match
                assert "certificate" in info.value.detail.lower() or "hostname" in info.value.detail.lower()
