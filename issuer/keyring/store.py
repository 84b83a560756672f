"""Signing keys in the database: create, rotate, mark compromised, list what is published, load signers.

Functions take a `Session` and never commit: the caller's transaction (and its audit record) decides. The
partial unique index `one_active_key_per_issuer_and_algorithm` is what stops two active keys, also across
processes: a concurrent `ensure_keys`/`rotate` loses with IntegrityError at flush or commit, and retrying it
is harmless. Rotation retires the old key (still published, so what it signed keeps verifying).

Compromise is different: a compromised key is withdrawn from the DID document and the JWKS, so every
credential it signed stops verifying (COMPROMISE_WARNING says so to whoever asks); they must be re-issued.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from issuer.db.tables import Issuer, SigningKey, utcnow
from verifier.suites.eddsa_rdfc_2022 import Ed25519Signer

from .crypto import (
    ALGORITHMS,
    JwtKey,
    KeyringError,
    decrypt_private_key,
    encrypt_private_key,
    generate_key,
    import_ed25519_signer,
    import_jwt_key,
)
from .did import did_document, verification_method_id

COMPROMISE_WARNING = (
    "A compromised key is withdrawn from the issuer's DID document and JWKS: every credential it signed (Data "
    "Integrity proof or VC-JWT) will no longer verify, anywhere. If it was the active key, a new one replaces it; "
    "re-issue the affected credentials with it. Use `rotate` instead when the key was not exposed."
)
DEFAULT_ALGORITHMS = ("Ed25519", "RS256")
PUBLISHED = ("active", "retired")  # in the DID document and JWKS; compromised keys are withdrawn
JWT_PREFERENCE = ("RS256", "ES256")  # RS256 is OB 3.0's mandatory minimum; ES256 when an issuer has only that


class NoActiveKey(KeyringError):
    """The issuer has no active key of an algorithm it needs (run `issuer keys ensure`/`rotate`)."""


class UnknownKey(KeyringError, LookupError):
    """No signing key (or issuer) with that id."""


@dataclass(frozen=True)
class IssuerSigners:
    """What issuance needs to sign for one issuer: the Data Integrity signer and the VC-JWT key."""

    ed25519: Ed25519Signer
    jwt_key: JwtKey = field(repr=False)
    jwt_kid: str
    jwt_alg: str


# -- lifecycle ---------------------------------------------------------------------------------------------


def ensure_keys(
    session: Session, issuer: Issuer, master: bytes, algorithms: Sequence[str] = DEFAULT_ALGORITHMS
) -> list[SigningKey]:
    """Create an active key for each of `algorithms` the issuer lacks; return the keys created (idempotent)."""
    have = {key.algorithm for key in _active_keys(session, issuer.id)}
    created = [
        _new_key(issuer.id, algorithm, master) for algorithm in dict.fromkeys(algorithms) if algorithm not in have
    ]
    session.add_all(created)
    session.flush()
    return created


def rotate(session: Session, issuer_id: str, algorithm: str, master: bytes) -> SigningKey:
    """Retire the active `algorithm` key (it stays published) and create a new active one; return the new key."""
    if session.get(Issuer, issuer_id) is None:
        raise UnknownKey(f"no issuer {issuer_id!r}")
    new = _new_key(issuer_id, algorithm, master)  # before any change: an unknown algorithm changes nothing
    current = active_key(session, issuer_id, algorithm, for_update=True)
    if current is not None:
        current.status, current.retired_at = "retired", utcnow()
        session.add(current)
        session.flush()  # the old key stops being active before the new one exists: the partial index holds
        _forget(current.id)
    session.add(new)
    session.flush()
    return new


def mark_compromised(session: Session, key_id: str, master: bytes) -> SigningKey:
    """Withdraw a key from publication (see COMPROMISE_WARNING) and return it; an active key is replaced by a
    new one (`active_key` finds it). Marking a key twice changes nothing."""
    key = session.exec(select(SigningKey).where(SigningKey.id == key_id).with_for_update()).first()
    if key is None:
        raise UnknownKey(f"no signing key {key_id!r}")
    if key.status == "compromised":
        return key
    was_active = key.status == "active"
    key.status, key.compromised_at = "compromised", utcnow()
    session.add(key)
    session.flush()  # no longer active before its replacement exists: the partial index holds
    _forget(key.id)
    if was_active:
        session.add(_new_key(key.issuer_id, key.algorithm, master))
        session.flush()
    return key


def active_key(session: Session, issuer_id: str, algorithm: str, *, for_update: bool = False) -> SigningKey | None:
    """The issuer's active key of `algorithm`, if any (row-locked on PostgreSQL with `for_update`)."""
    query = select(SigningKey).where(
        SigningKey.issuer_id == issuer_id, SigningKey.algorithm == algorithm, SigningKey.status == "active"
    )
    return session.exec(query.with_for_update() if for_update else query).first()


def published_keys(session: Session, issuer_id: str) -> list[SigningKey]:
    """Active and retired keys (never compromised), oldest first: the DID document's and JWKS's content."""
    return list(
        session.exec(
            select(SigningKey)
            .where(SigningKey.issuer_id == issuer_id, col(SigningKey.status).in_(PUBLISHED))
            # created_at has whole seconds: within one second a retired key predates its successor
            .order_by(
                col(SigningKey.created_at),
                col(SigningKey.retired_at).is_(None),
                col(SigningKey.retired_at),
                col(SigningKey.id),
            )
        ).all()
    )


def _active_keys(session: Session, issuer_id: str) -> list[SigningKey]:
    return list(
        session.exec(select(SigningKey).where(SigningKey.issuer_id == issuer_id, SigningKey.status == "active")).all()
    )


def _new_key(issuer_id: str, algorithm: str, master: bytes) -> SigningKey:
    generated = generate_key(algorithm)
    return SigningKey(
        id=generated.key_id,
        issuer_id=issuer_id,
        algorithm=generated.algorithm,
        status="active",
        public_jwk=generated.public_jwk,
        public_key_multibase=generated.public_key_multibase,
        encrypted_private_key=encrypt_private_key(master, generated.key_id, generated.private),
    )


# -- signers -----------------------------------------------------------------------------------------------


def active_signers(
    session: Session, issuer: Issuer, master: bytes, *, jwt_algorithms: Sequence[str] = JWT_PREFERENCE
) -> IssuerSigners:
    """The issuer's active Ed25519 signer and its first active VC-JWT key in `jwt_algorithms` order."""
    return signers_among(_active_keys(session, issuer.id), issuer, master, jwt_algorithms=jwt_algorithms)


def signers_among(
    keys: Sequence[SigningKey], issuer: Issuer, master: bytes, *, jwt_algorithms: Sequence[str] = JWT_PREFERENCE
) -> IssuerSigners:
    """`active_signers` over key rows already read (issuance reads the published keys once for signing and for
    the DID document it verifies against)."""
    active = {key.algorithm: key for key in keys if key.status == "active"}
    ed25519 = active.get("Ed25519")
    jwt = next((active[alg] for alg in jwt_algorithms if alg in active), None)
    if ed25519 is None or jwt is None:
        missing = "Ed25519" if ed25519 is None else " or ".join(jwt_algorithms)
        raise NoActiveKey(f"issuer {issuer.id!r} has no active {missing} key")
    signer = _cached(issuer.did, ed25519, master)
    jwt_key = _cached(issuer.did, jwt, master)
    assert isinstance(signer, Ed25519Signer) and not isinstance(jwt_key, Ed25519Signer)
    return IssuerSigners(signer, jwt_key, verification_method_id(issuer.did, jwt), jwt.algorithm)


@dataclass(frozen=True)
class SigningMaterial:
    """What issuing one credential needs from the keyring: the signers, and the DID document (as published, JSON)
    to verify the result against before it is stored."""

    signers: IssuerSigners
    did_document: bytes = field(repr=False)


def signing_material(
    session: Session, issuer: Issuer, master: bytes, *, listing: Iterable[Sequence[str]] | None = None
) -> SigningMaterial:
    """The issuer's `SigningMaterial`, from one small query on the hot path (none when the caller read `listing`,
    the published keys' (id, status) pairs, along with the issuer: `key_listing_column`).

    A key row's material never changes after it is created (rotation and compromise make new rows and change only
    `status`), so the published set's ids and statuses determine everything built from it: that listing is read
    every time (a change in any process shows at once) and what it determines is reused."""
    if listing is None:
        listing = session.connection().execute(_LISTING, {"issuer": issuer.id})
    listing = tuple(sorted((str(key_id), str(status)) for key_id, status in listing))
    cache_key = (issuer.did, listing, master)
    with _cache_lock:
        hit = _material.get(cache_key)
        if hit is not None:
            _material.move_to_end(cache_key)
            return hit
    keys = published_keys(session, issuer.id)
    material = SigningMaterial(signers_among(keys, issuer, master), json.dumps(did_document(issuer.did, keys)).encode())
    with _cache_lock:
        _material[cache_key] = material
        while len(_material) > _CACHE_SIZE:
            _material.popitem(last=False)
    return material


# Built once: constructing a statement costs more than running this one.
_LISTING = sa_select(col(SigningKey.id), col(SigningKey.status)).where(
    col(SigningKey.issuer_id) == bindparam("issuer"), col(SigningKey.status).in_(PUBLISHED)
)


def key_listing_column(dialect: str) -> Any:
    """A column for a query that selects the `Issuer`: its published keys' (id, status) pairs as one JSON array
    (read it with `key_listing_of`), so issuing reads the issuer and its listing in one round trip."""
    pair, collect = (
        (func.json_build_array, func.json_agg) if dialect == "postgresql" else (func.json_array, func.json_group_array)
    )
    published = sa_select(collect(pair(col(SigningKey.id), col(SigningKey.status)))).where(
        col(SigningKey.issuer_id) == col(Issuer.id), col(SigningKey.status).in_(PUBLISHED)
    )
    return published.scalar_subquery().label("key_listing")


def key_listing_of(value: Any) -> list[list[str]]:
    """The pairs from a `key_listing_column` value (PostgreSQL's driver parses JSON, SQLite's gives text; no keys
    is NULL on PostgreSQL)."""
    if value is None:
        return []
    return list(json.loads(value) if isinstance(value, str | bytes) else value)


# Issuance asks for the signers of every credential. Decrypt + import takes ~0.03 ms (RSA validation is skipped,
# see import_jwt_key), but a freshly loaded 3072-bit key's first signature costs ~1.2 ms against ~0.7 ms warm,
# and a validated load would cost ~90 ms. Entries are keyed by the sealed blob too, so a hit can only return
# the private key that this very row holds; rotation and compromise produce new key ids anyway.
_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, str, bytes], Ed25519Signer | JwtKey] = OrderedDict()
_cache_lock = threading.Lock()
_material: OrderedDict[tuple[str, tuple[tuple[str, str], ...], bytes], SigningMaterial] = OrderedDict()


def clear_signer_cache() -> None:
    """Drop every decrypted key held in this process."""
    with _cache_lock:
        _cache.clear()
        _material.clear()


def _cached(issuer_did: str, key: SigningKey, master: bytes) -> Ed25519Signer | JwtKey:
    cache_key = (issuer_did, key.id, bytes(key.encrypted_private_key))
    with _cache_lock:
        hit = _cache.get(cache_key)
        if hit is not None:
            _cache.move_to_end(cache_key)
            return hit
    loaded = _load(issuer_did, key, master)
    with _cache_lock:
        _cache[cache_key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded


def _load(issuer_did: str, key: SigningKey, master: bytes) -> Ed25519Signer | JwtKey:
    if key.algorithm not in ALGORITHMS:
        raise KeyringError(f"key {key.id} has unknown algorithm {key.algorithm!r}")
    private = decrypt_private_key(master, key.id, key.encrypted_private_key)
    if key.algorithm == "Ed25519":
        return import_ed25519_signer(private, verification_method_id(issuer_did, key), key.public_key_multibase)
    return import_jwt_key(key.algorithm, private, key.public_jwk)


def _forget(key_id: str) -> None:
    """Drop a key that no longer signs from memory (hygiene only: active_signers never picks it again)."""
    with _cache_lock:
        for cache_key in [k for k in _cache if k[1] == key_id]:
            del _cache[cache_key]
