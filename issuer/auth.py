"""Admin API keys: `ob3_<id>_<secret>`, stored as a SHA-256 hash (the secret is 256 random bits, so a slow
password hash adds nothing), with scopes. admin implies issue implies read."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import Engine, bindparam, select
from sqlmodel import Session, col

from .blocking import run_blocking
from .db.engine import reader
from .db.tables import ApiKey, utcnow
from .errors import Forbidden, Unauthorized

SCOPES = ("admin", "issue", "read")
_IMPLIES = {"admin": {"admin", "issue", "read"}, "issue": {"issue", "read"}, "read": {"read"}}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_key(session: Session, *, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """A new key row and its token. The token is shown once; only its hash is kept."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    token = f"ob3_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(id=key_id, name=name, secret_hash=_hash(token), scopes=sorted(set(scopes)))
    session.add(row)
    return row, token


_API_KEY = select(  # built once: constructing a statement costs more than running this one
    *(col(getattr(ApiKey, name)) for name in ("id", "name", "secret_hash", "scopes", "revoked_at"))
).where(col(ApiKey.id) == bindparam("key_id"))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an authenticated request comes from (a plain object: building an ApiKey model cost ~40 us a request)."""

    id: str
    name: str
    scopes: list[str]


def authenticate(engine: Engine, authorization: str | None) -> Caller:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("send an API key as 'Authorization: Bearer ob3_…'")
    token = authorization.removeprefix("Bearer ").strip()
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "ob3":
        raise Unauthorized("the API key is malformed")
    # Every authenticated request asks: a plain Core query, no ORM session (revocation takes effect at once,
    # in every process, so nothing is cached).
    with reader(engine).connect() as connection:
        found = connection.execute(_API_KEY, {"key_id": parts[1]}).first()
    if found is None or found.revoked_at is not None or not hmac.compare_digest(found.secret_hash, _hash(token)):
        raise Unauthorized("the API key is unknown or revoked")
    return Caller(found.id, found.name, list(found.scopes))


def require(scope: str) -> Any:
    """A Litestar guard: the request's API key must carry `scope` (or a scope that implies it)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        # Async on purpose: Litestar runs a sync guard on a thread, a hop that cost more than the key lookup.
        engine = connection.app.state.engine
        key = await run_blocking(engine, authenticate, engine, connection.headers.get("authorization"))
        granted = set().union(*(_IMPLIES.get(s, set()) for s in key.scopes))
        if scope not in granted:
            raise Forbidden(f"this needs the '{scope}' scope; the key has {', '.join(key.scopes)}")
        connection.scope["state"]["api_key"] = key

    return guard


def revoke_api_key(session: Session, key_id: str) -> ApiKey | None:
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
