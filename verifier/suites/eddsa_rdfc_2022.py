"""Data Integrity `eddsa-rdfc-2022` (VC-DI-EdDSA 1.0 §3.2): create and verify, sharing one transform.

Also verifies the two older forms many issued credentials carry, which hash and sign the same way:
`DataIntegrityProof` with cryptosuite `eddsa-2022` (the suite's draft name) and `Ed25519Signature2020`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..canonical import canonicalize
from ..errors import InvalidCredential
from ..loader import DocumentLoader, default_loader
from ..multikey import encode_ed25519_public, multibase_decode, multibase_encode

CRYPTOSUITE = "eddsa-rdfc-2022"
LEGACY_CRYPTOSUITES = frozenset({"eddsa-2022"})
ED25519_SIGNATURE_2020 = "Ed25519Signature2020"
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class Ed25519Signer:
    """An Ed25519 private key and the verification method (a DID URL) that publishes its public half."""

    seed: bytes = field(repr=False)
    verification_method: str
    _key: SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        object.__setattr__(self, "_key", SigningKey(self.seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    @property
    def public_key_multibase(self) -> str:
        return encode_ed25519_public(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature


def is_supported(proof: Any) -> bool:
    """Whether this module can verify `proof` (a proof object from a credential)."""
    if not isinstance(proof, dict):
        return False
    if proof.get("type") == "DataIntegrityProof":
        return proof.get("cryptosuite") in LEGACY_CRYPTOSUITES | {CRYPTOSUITE}
    return proof.get("type") == ED25519_SIGNATURE_2020


def hash_data(document: dict[str, Any], proof_options: dict[str, Any], loader: DocumentLoader | None = None) -> bytes:
    """The 64 bytes that are signed: SHA-256(canonical proof config) || SHA-256(canonical document).

    `document` must not carry `proof`; `proof_options` must not carry `proofValue` (VC-DI-EdDSA §3.2.3-3.2.5).
    """
    loader = loader or default_loader()
    config = dict(proof_options)
    config["@context"] = document.get("@context")
    proof_hash = hashlib.sha256(canonicalize(config, loader).encode("utf-8")).digest()
    doc_hash = hashlib.sha256(canonicalize(document, loader).encode("utf-8")).digest()
    return proof_hash + doc_hash


def create_proof(
    document: dict[str, Any],
    signer: Ed25519Signer,
    *,
    created: datetime | None = None,
    proof_purpose: str = "assertionMethod",
    loader: DocumentLoader | None = None,
) -> dict[str, Any]:
    """A new `eddsa-rdfc-2022` proof over `document` (any existing `proof` is left out of the signed data)."""
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    options: dict[str, Any] = {
        "type": "DataIntegrityProof",
        "cryptosuite": CRYPTOSUITE,
        "created": _xsd_datetime(created or datetime.now(UTC)),
        "verificationMethod": signer.verification_method,
        "proofPurpose": proof_purpose,
    }
    signature = signer.sign(hash_data(unsecured, options, loader))
    return {**options, "proofValue": multibase_encode(signature)}


def sign(
    document: dict[str, Any],
    signer: Ed25519Signer,
    *,
    created: datetime | None = None,
    loader: DocumentLoader | None = None,
) -> dict[str, Any]:
    """`document` with a new proof appended to its `proof` array (OB 3.0 emits proofs as an array)."""
    proof = create_proof(document, signer, created=created, loader=loader)
    existing = document.get("proof")
    proofs = [] if existing is None else (list(existing) if isinstance(existing, list) else [existing])
    return {**document, "proof": [*proofs, proof]}


def verify_proof(
    document: dict[str, Any],
    proof: dict[str, Any],
    public_key: bytes,
    *,
    expected_purpose: str = "assertionMethod",
    now: datetime | None = None,
    loader: DocumentLoader | None = None,
) -> None:
    """Check one proof of `document` against a raw Ed25519 public key; raise InvalidCredential if it fails."""
    check_proof_options(proof, expected_purpose=expected_purpose, now=now)
    value = proof.get("proofValue")
    if not isinstance(value, str):
        raise InvalidCredential("proof has no proofValue", code="proof_malformed")
    signature = multibase_decode(value)
    if len(signature) != 64:
        raise InvalidCredential("proofValue is not a 64-byte Ed25519 signature", code="proof_malformed")
    context = proof.get("@context")
    if context is not None and context != document.get("@context"):
        raise InvalidCredential("the proof's @context differs from the document's", code="proof_malformed")
    options = {k: v for k, v in proof.items() if k not in ("proofValue", "@context")}
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    data = hash_data(unsecured, options, loader)
    try:
        VerifyKey(public_key).verify(data, signature)
    except (BadSignatureError, ValueError):
        raise InvalidCredential(
            "the signature does not match the credential: it was altered after signing or signed by another key",
            code="invalid_signature",
        ) from None


def check_proof_options(
    proof: dict[str, Any], *, expected_purpose: str = "assertionMethod", now: datetime | None = None
) -> None:
    """VC-DI §4.4 steps that need no cryptography: type, cryptosuite, purpose, method, dates."""
    if not is_supported(proof):
        raise InvalidCredential(
            f"unsupported proof type {proof.get('type')!r} / cryptosuite {proof.get('cryptosuite')!r}",
            code="unsupported_cryptosuite",
        )
    if not isinstance(proof.get("verificationMethod"), str):
        raise InvalidCredential("proof has no verificationMethod", code="proof_malformed")
    if proof.get("proofPurpose") != expected_purpose:
        raise InvalidCredential(
            f"proof purpose is {proof.get('proofPurpose')!r}, expected {expected_purpose!r}",
            code="wrong_proof_purpose",
        )
    for name in ("created", "expires"):
        if name in proof and not (isinstance(proof[name], str) and _DATETIME.match(proof[name])):
            raise InvalidCredential(f"proof {name} is not an XML Schema dateTime", code="proof_malformed")
    if "expires" in proof:
        expires = datetime.fromisoformat(proof["expires"].replace("Z", "+00:00"))
        if expires.tzinfo is not None and expires < (now or datetime.now(UTC)):
            raise InvalidCredential(f"the proof expired at {proof['expires']}", code="proof_expired")


def _xsd_datetime(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
