"""Verification for people and programs: our stored credentials, and anything submitted (JSON, JWT, file, URL).

Stored credentials are checked by the real verifier against what this installation publishes (in-process, no
network round trip). Submitted credentials may come from any issuer: their did:web documents and status lists are
fetched through the bounded fetcher, which refuses private and loopback addresses unless configured.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session

from verifier import FetchError, HttpFetcher, VerificationReport, VerifyOptions, verify_credential

from ..db.tables import Credential
from ..errors import BadRequest, NotFound
from ..publication import LocalFetcher
from ..services import Services

MAX_SUBMITTED_BYTES = 2_000_000


@dataclass(frozen=True)
class StoredVerification:
    credential: Credential
    report: VerificationReport


def verify_stored(services: Services, credential_id: str) -> StoredVerification:
    with Session(services.engine) as session:
        row = session.get(Credential, credential_id)
        if row is None:
            raise NotFound(f"no credential {credential_id!r}")
        options = VerifyOptions(
            fetcher=LocalFetcher(session, services.settings, services.master_key),
            allow_http_loopback=True,
            strict_keys=True,
        )
        report = verify_credential(row.document, options)
    return StoredVerification(row, report)


def outside_fetcher(services: Services) -> HttpFetcher:
    """The bounded fetcher for submitted credentials (did:web, JWKS, status lists, URLs), one per policy and
    process: building an HTTP client loads the CA bundle (~14 ms), and the verifier caches DID documents per
    fetcher."""
    settings = services.settings
    policy = (settings.verify_fetch_timeout, settings.verify_allow_private)
    with _FETCHERS_LOCK:
        fetcher = _FETCHERS.get(policy)
        if fetcher is None:
            fetcher = _FETCHERS[policy] = HttpFetcher(
                timeout=settings.verify_fetch_timeout,
                max_bytes=MAX_SUBMITTED_BYTES,
                allow_private=settings.verify_allow_private,
                allow_http_loopback=settings.verify_allow_private,
            )
    return fetcher


_FETCHERS: dict[tuple[float, bool], HttpFetcher] = {}
_FETCHERS_LOCK = threading.Lock()


class _OursOrOutside:
    """This installation's own documents from the database; everything else through the bounded fetcher."""

    def __init__(self, local: LocalFetcher, outside: HttpFetcher) -> None:
        self.local, self.outside = local, outside

    def __call__(self, url: str, *, accept: str = "application/json") -> bytes:
        if urlsplit(url).netloc == self.local.netloc:
            return self.local(url, accept=accept)
        return self.outside(url, accept=accept)


def verify_submitted(services: Services, source: dict[str, Any] | str | bytes) -> VerificationReport:
    """Verify a credential given as parsed JSON, text (JSON or compact JWT) or file bytes (JSON, JWT, PNG, SVG)."""
    if isinstance(source, str | bytes) and len(source) > MAX_SUBMITTED_BYTES:
        raise BadRequest(f"the credential is larger than {MAX_SUBMITTED_BYTES} bytes")
    outside = outside_fetcher(services)
    with Session(services.engine) as session:
        fetcher = _OursOrOutside(LocalFetcher(session, services.settings, services.master_key), outside)
        options = VerifyOptions(fetcher=fetcher, allow_http_loopback=True)
        return verify_credential(source, options)


def verify_url(services: Services, url: str) -> VerificationReport:
    """Fetch a credential (bounded, address-checked) and verify it; a failed fetch is a 400 that says why."""
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise BadRequest("url must be an http(s) URL")
    outside = outside_fetcher(services)
    with Session(services.engine) as session:
        fetcher = _OursOrOutside(LocalFetcher(session, services.settings, services.master_key), outside)
        try:
            body = fetcher(url, accept="application/vc+ld+json, application/json;q=0.9, text/plain;q=0.5, */*;q=0.1")
        except FetchError as error:
            raise BadRequest(f"could not fetch {url}: {error.detail}") from None
        return verify_credential(body, VerifyOptions(fetcher=fetcher, allow_http_loopback=True))
