"""What the service publishes for verifiers, computed from the database: DID documents and the JWKS.

`LocalFetcher` serves the same documents in-process, so the service verifies each credential it signs against
exactly what a verifier would fetch, without a network round trip to itself.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session, select

from verifier.errors import FetchError

from .db.tables import Credential, Issuer
from .keyring import did_document, jwks, published_keys
from .profiles import did_document_path
from .settings import Settings


def issuer_did_document(session: Session, issuer: Issuer) -> dict[str, Any]:
    return did_document(issuer.did, published_keys(session, issuer.id))


def installation_jwks(session: Session) -> dict[str, Any]:
    """Every issuer's published JWT keys: OB-impl "Key provenance" looks for them at the host's JWKS."""
    issuers = session.exec(select(Issuer)).all()
    return jwks([(issuer.did, published_keys(session, issuer.id)) for issuer in issuers])


class LocalFetcher:
    """A verifier `Fetcher` that answers for this installation's own URLs from the database and nothing else."""

    def __init__(
        self, session: Session, settings: Settings, master_key: bytes, *, preloaded: dict[str, bytes] | None = None
    ) -> None:
        """`preloaded` maps paths to bodies already computed from this session's rows (issuance builds the signing
        issuer's DID document from the key rows it read anyway), so they are not read and built twice."""
        self.session = session
        self.settings = settings
        self.master_key = master_key
        self.netloc = urlsplit(settings.base_url).netloc
        self.preloaded = preloaded or {}

    def __call__(self, url: str, *, accept: str = "application/json") -> bytes:
        parts = urlsplit(url)
        if parts.netloc != self.netloc:
            raise FetchError(f"{url} is not served by this installation")
        if parts.path in self.preloaded:
            return self.preloaded[parts.path]
        if parts.path == f"{self.settings.base_path}/.well-known/jwks.json" or parts.path == "/.well-known/jwks.json":
            return json.dumps(installation_jwks(self.session)).encode()
        credentials = f"{self.settings.base_path}/credentials/"
        if parts.path.startswith(credentials):
            row = self.session.get(Credential, parts.path[len(credentials) :])
            if row is not None:
                return json.dumps(row.document).encode()
        prefix = f"{self.settings.base_path}/status/"
        if parts.path.startswith(prefix) and parts.path[len(prefix) :].isdigit():
            from .status.service import signed_status_list

            return signed_status_list(self.session, self.settings, self.master_key, int(parts.path[len(prefix) :])).body
        for issuer in self.session.exec(select(Issuer)).all():
            if parts.path == did_document_path(self.settings, issuer):
                return json.dumps(issuer_did_document(self.session, issuer)).encode()
        raise FetchError(f"{url} is not a document this installation publishes")
