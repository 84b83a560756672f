"""What an issuer publishes about its keys, pure: the did:web DID document and the host's JWK Set.

Only active and retired keys are published: retired keys keep old credentials verifiable, compromised keys
are withdrawn (and with them every credential they signed). The contexts are did/v1 + multikey/v1, the
only DID contexts pinned in `contexts/`; `JsonWebKey`/`publicKeyJwk` are not defined by them, which is
harmless because DID documents are read as plain JSON (so does `verifier.did`), not JSON-LD-expanded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from issuer.db.tables import SigningKey
from verifier.did import DID_CONTEXTS

PUBLISHED_STATUSES = frozenset({"active", "retired"})
JWT_ALGORITHMS = frozenset({"RS256", "ES256"})
# RFC 7518 §6: the public members per key type; anything else in a stored JWK is never published.
_PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x")}


def verification_method_id(issuer_did: str, key: SigningKey) -> str:
    """`<did>#<key id>`: the proof's verificationMethod and the VC-JWT `kid`."""
    return f"{issuer_did}#{key.id}"


def did_document(issuer_did: str, keys: Sequence[SigningKey]) -> dict[str, Any]:
    """Ed25519 keys as `Multikey`, RSA/P-256 keys as `JsonWebKey`; every key listed in `assertionMethod`."""
    methods: list[dict[str, Any]] = []
    for key in keys:
        if key.status not in PUBLISHED_STATUSES:
            continue
        vm_id = verification_method_id(issuer_did, key)
        if key.algorithm == "Ed25519":
            if not key.public_key_multibase:
                raise ValueError(f"Ed25519 key {key.id} has no publicKeyMultibase")
            methods.append(
                {
                    "id": vm_id,
                    "type": "Multikey",
                    "controller": issuer_did,
                    "publicKeyMultibase": key.public_key_multibase,
                }
            )
        else:
            methods.append(
                {"id": vm_id, "type": "JsonWebKey", "controller": issuer_did, "publicKeyJwk": public_jwk(key)}
            )
    return {
        "@context": list(DID_CONTEXTS),
        "id": issuer_did,
        "verificationMethod": methods,
        "assertionMethod": [method["id"] for method in methods],
    }


def jwks(issuers_and_keys: Iterable[tuple[str, Sequence[SigningKey]]]) -> dict[str, Any]:
    """The host's `/.well-known/jwks.json`: the VC-JWT keys of every issuer on it.

    `kid` is the same DID URL as in the JWT header, so JWKS-based verifiers match it exactly; `iss` (OB-impl
    "Key provenance") tells which issuer a key belongs to when several issuers share the host.
    """
    entries = []
    for issuer_did, keys in issuers_and_keys:
        for key in keys:
            if key.status in PUBLISHED_STATUSES and key.algorithm in JWT_ALGORITHMS:
                entries.append(
                    {
                        **public_jwk(key),
                        "kid": verification_method_id(issuer_did, key),
                        "alg": key.algorithm,
                        "use": "sig",
                        "iss": issuer_did,
                    }
                )
    return {"keys": entries}


def public_jwk(key: SigningKey) -> dict[str, Any]:
    """The stored JWK reduced to its public members, so no private member can ever be published."""
    members = _PUBLIC_MEMBERS.get(str(key.public_jwk.get("kty")))
    if members is None or any(name not in key.public_jwk for name in members):
        raise ValueError(f"key {key.id} has no usable public JWK")
    return {name: key.public_jwk[name] for name in members}
