"""A minimal did:web issuer for verifier tests: DID document, JWKS and a signed status list on a local server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from tests.factories import make_credential
from tests.http_server import LocalServer
from verifier.status import MIN_BITS, encode_bitstring, set_bit
from verifier.suites import eddsa_rdfc_2022 as di
from verifier.suites import vc_jwt

CREATED = datetime(2026, 3, 1, tzinfo=UTC)
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # one per test run: RSA keygen is slow


class TestIssuer:
    """Publishes everything a verifier fetches on `site`; signs credentials whose status lives there too."""

    __test__ = False  # not a pytest class

    def __init__(self, site: LocalServer, seed: bytes = bytes(range(1, 33))) -> None:
        self.site = site
        self.did = site.did
        self.signer = di.Ed25519Signer(seed, f"{self.did}#key-1")
        self.rsa = RSAKey.import_key(_RSA)
        self.bits = bytearray(MIN_BITS // 8)
        self.list_url = f"{site.base}/status/1"
        public_jwk = {**self.rsa.as_dict(private=False), "kid": f"{self.did}#rsa-1"}
        did_document = {
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": self.did,
            "verificationMethod": [
                {
                    "id": f"{self.did}#key-1",
                    "type": "Multikey",
                    "controller": self.did,
                    "publicKeyMultibase": self.signer.public_key_multibase,
                },
                {
                    "id": f"{self.did}#rsa-1",
                    "type": "JsonWebKey",
                    "controller": self.did,
                    "publicKeyJwk": {k: v for k, v in public_jwk.items() if k != "kid"},
                },
            ],
            "assertionMethod": [f"{self.did}#key-1", f"{self.did}#rsa-1"],
        }
        site.json("/.well-known/did.json", json.dumps(did_document).encode(), content_type="application/did+json")
        site.json(
            "/.well-known/jwks.json",
            json.dumps({"keys": [public_jwk]}).encode(),
            content_type="application/jwk-set+json",
        )
        self.publish_status_list()

    def credential(self, n: int = 1, index: int = 7, **changes: Any) -> dict[str, Any]:
        """An unsigned credential from this issuer whose status entry points at our list."""
        credential = make_credential(n, issuer_did=self.did)
        credential["credentialStatus"] = {
            "id": f"{self.list_url}#{index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(index),
            "statusListCredential": self.list_url,
        }
        credential["validFrom"] = "2026-01-01T00:00:00Z"
        credential.update(changes)
        return credential

    def sign(self, credential: dict[str, Any]) -> dict[str, Any]:
        return di.sign(credential, self.signer, created=CREATED)

    def sign_jwt(self, credential: dict[str, Any]) -> str:
        return vc_jwt.sign_jwt(credential, self.rsa, kid=f"{self.did}#rsa-1")

    def revoke(self, index: int) -> None:
        set_bit(self.bits, index, True)
        self.publish_status_list()

    def publish_status_list(self) -> None:
        status_list = {
            "@context": ["https://www.w3.org/ns/credentials/v2"],
            "id": self.list_url,
            "type": ["VerifiableCredential", "BitstringStatusListCredential"],
            "issuer": self.did,
            "validFrom": "2026-01-01T00:00:00Z",
            "credentialSubject": {
                "id": f"{self.list_url}#list",
                "type": "BitstringStatusList",
                "statusPurpose": "revocation",
                "encodedList": encode_bitstring(bytes(self.bits)),
            },
        }
        signed = di.sign(status_list, self.signer, created=CREATED)
        self.status_list_body = json.dumps(signed).encode()
        self.site.json("/status/1", self.status_list_body, content_type="application/vc+ld+json")
