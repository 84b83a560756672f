"""Outbound fetching for the verifier: the `Fetcher` protocol and the one bounded HTTP implementation.

Every network read the verifier makes (did:web documents, JWKS, status lists, credentials by URL) goes through
a `Fetcher`, injected by the caller; the default refuses the network entirely (offline by default).

`HttpFetcher` exists because the URLs come from untrusted credentials: without an address policy a credential
could make the verifier probe the intranet or a cloud metadata endpoint (SSRF). It resolves the host itself,
checks every address, and connects to the checked address, so a second DNS answer cannot swap it (rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import zlib
from types import TracebackType
from typing import Protocol

import httpx

from .errors import FetchError

__all__ = [
    "FetchError",
    "Fetcher",
    "HttpFetcher",
    "is_loopback_address",
    "is_loopback_host",
    "is_public_address",
    "offline_fetcher",
]


class Fetcher(Protocol):
    def __call__(self, url: str, *, accept: str = "application/json") -> bytes:
        """Return the body of a successful GET of `url`, or raise `FetchError`."""
        ...


def offline_fetcher(url: str, *, accept: str = "application/json") -> bytes:
    """The default: no network at all."""
    raise FetchError(f"network access is disabled; cannot fetch {url}", code="offline")


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _embedded_ipv4(ip: IpAddress) -> IpAddress:
    """The IPv4 address an IPv6 address really reaches (mapped, 6to4, NAT64), else the address itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_public_address(ip: IpAddress) -> bool:
    """True only for globally routable unicast addresses (after unwrapping IPv4 embedded in IPv6)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64_LOCAL:
        return False
    real = _embedded_ipv4(ip)
    return real.is_global and not (real.is_multicast or real.is_reserved or real.is_unspecified)


def is_loopback_address(ip: IpAddress) -> bool:
    return _embedded_ipv4(ip).is_loopback


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback IP literal (brackets allowed): the only hosts plain http may reach."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return is_loopback_address(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return False


def _resolve(host: str, port: int) -> list[IpAddress]:
    """The host's addresses: the literal itself, or every distinct answer of the system resolver."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}", code="fetch_dns") from None
    addresses: list[IpAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise FetchError(f"host {host!r} has no addresses", code="fetch_dns")
    return addresses


class HttpFetcher:
    """A `Fetcher` over httpx with an address policy, a size cap, a total time budget and checked redirects.

    `timeout` is the budget for the whole fetch including redirects; it is checked between reads, so one
    stalled read can overrun it by at most `timeout` (DNS resolution itself is not bounded by it).
    Proxies from the environment are ignored (they would bypass the address check), and connections are not
    reused, because a pooled connection is keyed by IP and could carry a request for another host name.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_bytes: int = 2_000_000,
        allow_private: bool = False,
        allow_http_loopback: bool = False,
        max_redirects: int = 3,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "ob3-verifier",
    ) -> None:
        if timeout <= 0 or max_bytes <= 0 or max_redirects < 0:
            raise ValueError("timeout and max_bytes must be positive and max_redirects not negative")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self.allow_http_loopback = allow_http_loopback
        self.max_redirects = max_redirects
        self._user_agent = user_agent
        self._client = httpx.Client(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __call__(self, url: str, *, accept: str = "application/json") -> bytes:
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        deadline = time.monotonic() + self.timeout
        current = self._parse(url)
        for _ in range(self.max_redirects + 1):
            location = self._fetch_once(current, accept, deadline)
            if isinstance(location, bytes):
                return location
            current = self._parse_redirect(current, location)
        raise FetchError(f"more than {self.max_redirects} redirects fetching {url}", code="fetch_redirect")

    # -- policy ------------------------------------------------------------------------------------------

    def _parse(self, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise FetchError(f"malformed URL: {url!r}", code="fetch_url") from None
        if parsed.scheme not in _DEFAULT_PORTS:
            raise FetchError(f"refusing {parsed.scheme or 'scheme-less'} URL {url!r}", code="fetch_scheme")
        host = parsed.raw_host.decode("ascii", "replace")
        if not host:
            raise FetchError(f"URL has no host: {url!r}", code="fetch_url")
        if parsed.userinfo:
            raise FetchError(f"URLs with credentials are refused: {parsed.host}", code="fetch_url")
        if parsed.scheme == "https":
            return parsed
        if parsed.scheme == "http" and self.allow_http_loopback and is_loopback_host(host):
            return parsed
        allowed = "https (or http to loopback)" if self.allow_http_loopback else "https"
        raise FetchError(f"refusing {parsed.scheme}:// URL {url!r}: only {allowed} is fetched", code="fetch_scheme")

    def _parse_redirect(self, current: httpx.URL, location: str) -> httpx.URL:
        try:
            target = str(current.join(location))
        except (httpx.InvalidURL, ValueError, TypeError):
            raise FetchError(f"malformed redirect Location {location!r}", code="fetch_redirect") from None
        return self._parse(target)

    def _addresses(self, url: httpx.URL) -> list[IpAddress]:
        """Resolve the host and check every address: one bad answer refuses the whole host."""
        host = url.raw_host.decode("ascii")
        addresses = _resolve(host, url.port or _DEFAULT_PORTS[url.scheme])
        loopback_ok = self.allow_http_loopback and is_loopback_host(host)
        for ip in addresses:
            if is_public_address(ip) or self.allow_private or (loopback_ok and is_loopback_address(ip)):
                continue
            raise FetchError(
                f"refusing to fetch from {host!r}: it resolves to the non-public address {ip}",
                code="fetch_address",
            )
        return addresses

    # -- transfer ----------------------------------------------------------------------------------------

    def _fetch_once(self, url: httpx.URL, accept: str, deadline: float) -> bytes | str:
        """GET `url` (one hop). Returns the body, or the Location of a redirect."""
        host = url.raw_host.decode("ascii")
        host_header = f"[{host}]" if ":" in host else host
        if url.port is not None and url.port != _DEFAULT_PORTS[url.scheme]:
            host_header += f":{url.port}"
        headers = {
            "Host": host_header,
            "Accept": accept,
            "Accept-Encoding": "identity",
            "User-Agent": self._user_agent,
        }
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        addresses = self._addresses(url)
        for i, ip in enumerate(addresses):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                with self._client.stream(
                    "GET",
                    url.copy_with(host=str(ip)),
                    headers=headers,
                    extensions=extensions,
                    timeout=httpx.Timeout(remaining),
                ) as response:
                    return self._read(url, response, deadline)
            except httpx.ConnectError as exc:
                if i + 1 < len(addresses):
                    continue
                raise FetchError(f"cannot connect to {host}: {exc}", code="fetch_connect") from None
            except httpx.TimeoutException:
                break
            except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError) as exc:
                detail = str(exc) or type(exc).__name__
                raise FetchError(f"fetching {url} failed: {detail}", code="fetch_failed") from None
        raise FetchError(f"timed out after {self.timeout:g} s fetching {url}", code="fetch_timeout")

    def _read(self, url: httpx.URL, response: httpx.Response, deadline: float) -> bytes | str:
        status = response.status_code
        if status in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise FetchError(f"HTTP {status} redirect without Location from {url}", code="fetch_redirect")
            return str(location)
        if not 200 <= status < 300:
            raise FetchError(f"HTTP {status} {response.reason_phrase} from {url}", code="fetch_status")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large(url)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise FetchError(f"unsupported Content-Encoding {encoding!r} from {url}", code="fetch_failed")
        # zlib with max_length: a compressed body can never expand past the cap in memory
        decoder = zlib.decompressobj(47) if encoding not in ("", "identity") else None
        body = bytearray()
        wire = 0
        for chunk in response.iter_raw():
            wire += len(chunk)
            if wire > self.max_bytes:  # also bounds junk trailing a small compressed stream
                raise self._too_large(url)
            if decoder is not None:
                try:
                    chunk = decoder.decompress(chunk, self.max_bytes + 1 - len(body))
                except zlib.error:
                    raise FetchError(f"corrupt {encoding} body from {url}", code="fetch_failed") from None
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(url)
            if time.monotonic() > deadline:
                raise FetchError(f"timed out after {self.timeout:g} s fetching {url}", code="fetch_timeout")
        if decoder is not None and not decoder.eof:
            raise FetchError(f"truncated {encoding} body from {url}", code="fetch_failed")
        return bytes(body)

    def _too_large(self, url: httpx.URL) -> FetchError:
        return FetchError(f"response from {url} exceeds {self.max_bytes} bytes", code="fetch_too_large")
