"""Realistic Open Badges 3.0 credentials for tests and benchmarks: distinct content, a handful of shapes."""

from __future__ import annotations

import hashlib
import random
from typing import Any

OB_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
# Defines 1EdTechJsonSchemaValidator2019: without it the credentialSchema type is undefined (safe mode fails).
EXTENSIONS_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/extensions.json"
SCHEMA = "https://purl.imsglobal.org/spec/ob/v3p0/schema/json/ob_v3p0_achievementcredential_schema.json"

_FIRST = ["Ada", "Grace", "Alan", "Zoë", "José", "Åsa", "Mei", "Ngozi", "Olúwaseun", "Saanvi", "李", "محمد"]
_LAST = ["Lovelace", "Hopper", "Turing", "O'Neil", "Núñez", "Øvergård", "Chen", "Okafor", "Ivanova", "王"]
_TOPICS = ["Data Analysis", "First Aid", "Welding Safety", "Python 101", "Project Management", "Spanish B1"]
_TYPES = ["Badge", "Certificate", "CertificateOfCompletion", "Course", "MicroCredential", "Competency"]


def make_credential(
    n: int, *, issuer_did: str = "did:web:badges.example.edu", variant: int | None = None
) -> dict[str, Any]:
    """Credential number `n`: every string differs between numbers; `variant` picks which optional parts appear."""
    rng = random.Random(n)
    variant = n % 4 if variant is None else variant
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    email = f"learner{n}@example.org"
    salt = hashlib.sha256(f"salt{n}".encode()).hexdigest()[:16]
    topic = rng.choice(_TOPICS)
    achievement_no = rng.randrange(1, 40)
    base = "https://badges.example.edu"
    achievement: dict[str, Any] = {
        "id": f"{base}/achievements/{achievement_no}",
        "type": ["Achievement"],
        "name": f"{topic} — level {achievement_no % 3 + 1}",
        "description": f"Awarded for completing {topic} (cohort {n % 17}) with a passing score.",
        "criteria": {"narrative": f"Complete all {rng.randrange(3, 12)} modules of {topic} and pass the final quiz."},
        "achievementType": rng.choice(_TYPES),
        "image": {"id": f"{base}/achievements/{achievement_no}/image.png", "type": "Image", "caption": topic},
        "creator": {"id": issuer_did, "type": ["Profile"], "name": "Example Institute of Technology"},
    }
    subject: dict[str, Any] = {
        "type": ["AchievementSubject"],
        "identifier": [
            {
                "type": "IdentityObject",
                "identityType": "emailAddress",
                "hashed": True,
                "identityHash": "sha256$" + hashlib.sha256((email + salt).encode()).hexdigest(),
                "salt": salt,
            }
        ],
        "achievement": achievement,
    }
    credential: dict[str, Any] = {
        "@context": [VC_CONTEXT, OB_CONTEXT, EXTENSIONS_CONTEXT],
        "id": f"{base}/credentials/{n:08d}-{rng.getrandbits(32):08x}",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {
            "id": issuer_did,
            "type": ["Profile"],
            "name": "Example Institute of Technology",
            "url": base,
            "email": "registrar@badges.example.edu",
        },
        "validFrom": f"2026-{rng.randrange(1, 12):02d}-{rng.randrange(1, 28):02d}T{rng.randrange(24):02d}:00:00Z",
        "name": achievement["name"],
        "credentialSubject": subject,
        "credentialSchema": [{"id": SCHEMA, "type": "1EdTechJsonSchemaValidator2019"}],
        "credentialStatus": {
            "id": f"{base}/status/1#{rng.randrange(131072)}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(rng.randrange(131072)),
            "statusListCredential": f"{base}/status/1",
        },
    }
    if variant in (1, 3):
        credential["validUntil"] = "2029-12-31T23:59:59Z"
        subject["result"] = [{"type": ["Result"], "value": f"{rng.randrange(60, 100)}%", "status": "Completed"}]
        achievement["resultDescription"] = [
            {
                "id": f"{base}/achievements/{achievement_no}/results/score",
                "type": ["ResultDescription"],
                "name": "Final score",
                "resultType": "Percent",
            }
        ]
    if variant in (2, 3):
        credential["evidence"] = [
            {
                "id": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
                "type": ["Evidence"],
                "name": "Capstone project",
                "narrative": f"{name} built a {topic.lower()} project.",
            }
        ]
        achievement["tag"] = [topic.split()[0].lower(), "online"]
        subject["activityEndDate"] = credential["validFrom"]
    return credential
