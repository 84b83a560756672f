"""Status lists: the signed BitstringStatusListCredential for one list, and revocation.

The list is derived from the credentials table (a revoked credential's bit is set), so there is no second copy
of the truth to keep in step. Its ETag is a digest of exactly what decides its content (the list, the set bits,
the signing key), so a conditional GET is answered without signing; a signed body is cached per ETag.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from verifier.status import encode_bitstring, set_bit
from verifier.suites import eddsa_rdfc_2022

from .. import audit
from ..db.tables import Credential, Issuer, StatusList, utcnow
from ..delivery import mirrors
from ..errors import NotFound
from ..issuance.credential import timestamp
from ..keyring import active_key, active_signers
from ..settings import Settings

TTL_MS = 300_000  # verifiers may cache a list for five minutes (BSL §2.2 `ttl`); Cache-Control says the same


@dataclass(frozen=True)
class SignedList:
    etag: str
    body: bytes


_SIGNED: OrderedDict[str, bytes] = OrderedDict()
_LOCK = threading.Lock()


def list_etag(session: Session, list_id: int) -> tuple[StatusList, Issuer, list[int], str]:
    status_list = session.get(StatusList, list_id)
    if status_list is None:
        raise NotFound(f"no status list {list_id}")
    issuer = session.get(Issuer, status_list.issuer_id)
    assert issuer is not None
    revoked = sorted(
        session.exec(
            select(Credential.status_index).where(
                Credential.status_list_id == list_id, col(Credential.revoked_at).is_not(None)
            )
        ).all()
    )
    key = active_key(session, issuer.id, "Ed25519")
    material = json.dumps([list_id, status_list.size, status_list.purpose, revoked, key.id if key else None])
    return status_list, issuer, revoked, '"' + hashlib.sha256(material.encode()).hexdigest()[:32] + '"'


def signed_status_list(session: Session, settings: Settings, master_key: bytes, list_id: int) -> SignedList:
    status_list, issuer, revoked, etag = list_etag(session, list_id)
    with _LOCK:
        cached = _SIGNED.get(etag)
    if cached is not None:
        return SignedList(etag, cached)
    bits = bytearray(status_list.size // 8)
    for index in revoked:
        set_bit(bits, index, True)
    url = f"{settings.base_url}/status/{list_id}"
    unsigned = {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "id": url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer.did,
        "validFrom": timestamp(status_list.created_at),
        "credentialSubject": {
            "id": f"{url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": status_list.purpose,
            "encodedList": encode_bitstring(bytes(bits)),
            "ttl": TTL_MS,
        },
    }
    signer = active_signers(session, issuer, master_key).ed25519
    body = json.dumps(eddsa_rdfc_2022.sign(unsigned, signer, created=status_list.created_at)).encode()
    with _LOCK:
        _SIGNED[etag] = body
        while len(_SIGNED) > 256:
            _SIGNED.popitem(last=False)
    return SignedList(etag, body)


def status_list_credential(session: Session, settings: Settings, master_key: bytes, list_id: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(signed_status_list(session, settings, master_key, list_id).body)
    return loaded


def revoke(session: Session, credential_id: str, *, reason: str, actor: str) -> tuple[Credential, bool]:
    """Set the credential's bit (by marking it revoked). Returns (credential, changed); revoking twice is a no-op."""
    row = session.get(Credential, credential_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no credential {credential_id!r}")
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    row.revocation_reason = reason
    row.updated_at = row.revoked_at
    session.add(row)
    audit.append(
        session,
        actor=actor,
        action="credential.revoked",
        subject=row.id,
        data={"reason": reason, "status_list": row.status_list_id, "status_index": row.status_index},
    )
    mirrors.enqueue(session, None, row, action="revoke")  # its mirrors are revoked too, with the reason
    return row, True
