"""Status list credentials: the signed BitstringStatusListCredential for one list, built from the database."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from verifier.status import encode_bitstring, set_bit
from verifier.suites import eddsa_rdfc_2022

from ..db.tables import Credential, Issuer, StatusList
from ..errors import NotFound
from ..issuance.credential import timestamp
from ..keyring import active_signers
from ..settings import Settings

TTL_MS = 300_000  # verifiers may cache a list for five minutes (BSL §2.2 `ttl`)


def status_list_credential(session: Session, settings: Settings, master_key: bytes, list_id: int) -> dict[str, Any]:
    status_list = session.get(StatusList, list_id)
    if status_list is None:
        raise NotFound(f"no status list {list_id}")
    issuer = session.get(Issuer, status_list.issuer_id)
    assert issuer is not None
    bits = bytearray(status_list.size // 8)
    revoked = session.exec(
        select(Credential.status_index).where(
            Credential.status_list_id == list_id,
            Credential.revoked_at.is_not(None),  # type: ignore[union-attr]
        )
    ).all()
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
    return eddsa_rdfc_2022.sign(unsigned, signer, created=status_list.created_at)
