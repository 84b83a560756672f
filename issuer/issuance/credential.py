"""The pure OB 3.0 credential builder: inputs in, an unsigned OpenBadgeCredential (VCDM 2.0) out.

Shape decisions (research/spec.md (a)): arrays for `type`, `credentialSchema`, `proof`; the issuer embedded as a
`Profile`; the recipient as identity objects (a salted SHA-256 email hash, and the name in plain text so that the
credential says whom it was issued to) plus `credentialSubject.id` when the learner gave a DID; one
`BitstringStatusListEntry`. The OB extensions context is included because it defines the credentialSchema type
`1EdTechJsonSchemaValidator2019`; without it that type is undefined and JSON-LD safe mode rejects the credential.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONTEXTS = [
    "https://www.w3.org/ns/credentials/v2",
    "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
    "https://purl.imsglobal.org/spec/ob/v3p0/extensions.json",
]
SCHEMA = {
    "id": "https://purl.imsglobal.org/spec/ob/v3p0/schema/json/ob_v3p0_achievementcredential_schema.json",
    "type": "1EdTechJsonSchemaValidator2019",
}


@dataclass(frozen=True)
class Recipient:
    """Who earned it: an email (hashed in the credential), a DID, or both; the name is shown as given."""

    name: str | None = None
    email: str | None = None
    did: str | None = None


def timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with `Z`, whole seconds (DESIGN.md conventions)."""
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def identity_hash(value: str, salt: str) -> str:
    """OB 3.0 IdentityHash: "sha256$" + hex(SHA-256(value + salt))."""
    return "sha256$" + hashlib.sha256((value + salt).encode("utf-8")).hexdigest()


def normalize_email(email: str) -> str:
    """Hash the address as people type it, case-folded: mailbox names are case-insensitive in practice."""
    return email.strip().lower()


def issuer_profile(
    did: str,
    name: str,
    *,
    url: str | None = None,
    email: str | None = None,
    description: str | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    profile: dict[str, Any] = {"id": did, "type": ["Profile"], "name": name}
    if url:
        profile["url"] = url
    if email:
        profile["email"] = email
    if description:
        profile["description"] = description
    if image:
        profile["image"] = {"id": image, "type": "Image"}
    return profile


def build_credential(
    *,
    credential_id: str,
    issuer: dict[str, Any],
    achievement: dict[str, Any],
    recipient: Recipient,
    salt: str,
    valid_from: datetime,
    status_entry: dict[str, Any],
    valid_until: datetime | None = None,
    awarded: datetime | None = None,
    results: list[dict[str, Any]] | None = None,
    evidence: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An unsigned credential. `achievement` is a complete OB3 Achievement (id, type, name, ...)."""
    if not (recipient.email or recipient.did):
        raise ValueError("a recipient needs an email or a DID")
    identifiers: list[dict[str, Any]] = []
    if recipient.email:
        identifiers.append(
            {
                "type": "IdentityObject",
                "identityType": "emailAddress",
                "hashed": True,
                "identityHash": identity_hash(normalize_email(recipient.email), salt),
                "salt": salt,
            }
        )
    if recipient.name:
        identifiers.append(
            {"type": "IdentityObject", "identityType": "name", "hashed": False, "identityHash": recipient.name}
        )
    subject: dict[str, Any] = {"type": ["AchievementSubject"]}
    if recipient.did:
        subject["id"] = recipient.did
    if identifiers:
        subject["identifier"] = identifiers
    subject["achievement"] = achievement
    if results:
        subject["result"] = [{"type": ["Result"], **r} for r in results]
    credential: dict[str, Any] = {
        "@context": list(CONTEXTS),
        "id": credential_id,
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": issuer,
        "validFrom": timestamp(valid_from),
        "name": achievement["name"],
        "credentialSubject": subject,
        "credentialSchema": [dict(SCHEMA)],
        "credentialStatus": status_entry,
    }
    if awarded is not None and timestamp(awarded) != credential["validFrom"]:
        credential["awardedDate"] = timestamp(awarded)
    if valid_until is not None:
        credential["validUntil"] = timestamp(valid_until)
    if evidence:
        credential["evidence"] = [{"type": ["Evidence"], **e} for e in evidence]
    return credential


def status_entry(list_url: str, index: int) -> dict[str, Any]:
    return {
        "id": f"{list_url}#{index}",
        "type": "BitstringStatusListEntry",
        "statusPurpose": "revocation",
        "statusListIndex": str(index),
        "statusListCredential": list_url,
    }
