"""Issuer profiles: each has its own did:web under the service's host; one is the default.

The default issuer is `did:web:<host>` (its DID document at /.well-known/did.json); any other is path-based,
`did:web:<host>:issuers:<slug>` at /issuers/<slug>/did.json (did:web spec §"Read").
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from .db.tables import Issuer
from .errors import NotFound
from .issuance.credential import issuer_profile
from .settings import Settings


def did_for(settings: Settings, slug: str, *, default: bool) -> str:
    segments = [s for s in settings.base_path.split("/") if s]
    if not default:
        segments += ["issuers", slug]
    return ":".join(["did:web", settings.host, *segments])


def did_document_path(settings: Settings, issuer: Issuer) -> str:
    """The path (under the host) where the issuer's DID document must be served."""
    if issuer.is_default:
        return f"{settings.base_path}/did.json" if settings.base_path else "/.well-known/did.json"
    return f"{settings.base_path}/issuers/{issuer.id}/did.json"


def ensure_default_issuer(session: Session, settings: Settings) -> Issuer:
    existing = session.exec(select(Issuer).where(Issuer.is_default == True)).first()  # noqa: E712
    if existing is not None:
        return existing
    issuer = Issuer(
        id="default",
        did=did_for(settings, "default", default=True),
        name=settings.name,
        url=settings.base_url,
        is_default=True,
    )
    session.add(issuer)
    session.flush()
    return issuer


def get_issuer(session: Session, issuer_id: str | None) -> Issuer:
    if issuer_id is None:
        found = session.exec(select(Issuer).where(Issuer.is_default == True)).first()  # noqa: E712
        if found is None:
            raise NotFound("no default issuer: run `issuer init`")
        return found
    issuer = session.get(Issuer, issuer_id)
    if issuer is None:
        raise NotFound(f"no issuer {issuer_id!r}")
    return issuer


def profile_of(issuer: Issuer) -> dict[str, Any]:
    return issuer_profile(
        issuer.did, issuer.name, url=issuer.url, email=issuer.email, description=issuer.description, image=issuer.image
    )
