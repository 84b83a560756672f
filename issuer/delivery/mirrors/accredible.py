"""Accredible API v1 (v2 for search): create, find, read, update and expire or delete credentials of one group.

Auth is the documented `Authorization: Token token=<key>`. Accredible has no idempotency key and no revoke: our
credential id travels in `meta_data` and `recipient.id`, found again by a v2 search on the recipient's email and
the group; a revocation expires the credential on the day (or deletes it, `ISSUER_ACCREDIBLE_REVOKE=delete`).
"""

from __future__ import annotations

from typing import Any

from .mapping import (
    AccredibleTarget,
    Remote,
    Subject,
    accredible_credential,
    accredible_expire_revoked,
    accredible_expiry,
    accredible_publish,
    accredible_search,
    is_accredible_duplicate,
    parse_accredible_credential,
)
from .transport import Duplicate, MirrorUnavailable, Reply, Transport

MAX_PAGES = 20


def authorization(api_key: str) -> str:
    return f"Token token={api_key}"


class AccredibleClient:
    service = "accredible"

    def __init__(self, transport: Transport, target: AccredibleTarget, *, revoke: str = "expire") -> None:
        self.transport = transport
        self.target = target
        self.revoke_by = revoke
        self.search_url = transport.base_url.removesuffix("/v1") + "/v2/credentials/search"

    def create(self, subject: Subject) -> Remote:
        reply = self.transport.request("POST", "/credentials", json_body=accredible_credential(self.target, subject))
        if is_accredible_duplicate(reply.status, reply.message):
            raise Duplicate(reply.message)
        if reply.status not in (200, 201):
            raise reply.rejected("create the credential")
        return _credential(reply)

    def get(self, credential_id: str) -> Remote | None:
        reply = self.transport.request("GET", f"/credentials/{credential_id}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise reply.rejected(f"read credential {credential_id}")
        return _credential(reply)

    def find(self, subject: Subject) -> Remote | None:
        """Our credential in the group (by the credential id in its meta data), via v2 search with a cursor."""
        cursor: str | None = None
        for _page in range(MAX_PAGES):
            reply = self.transport.request(
                "POST", self.search_url, json_body=accredible_search(subject, self.target, cursor)
            )
            if reply.status != 200:
                raise reply.rejected("search its credentials")
            body = reply.json()
            items = body.get("credentials") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise MirrorUnavailable("Accredible's search answer has no credentials array")
            for remote in map(parse_accredible_credential, items):
                if remote.earner_ref == subject.credential_id:
                    return remote
            meta: dict[str, Any] = body.get("meta") or {}
            cursor = meta.get("cursor") or None
            if cursor is None or len(items) < int(meta.get("size") or 50):
                return None
        return None

    def revoke(self, remote: Remote, subject: Subject) -> Remote | None:
        if self.revoke_by == "delete":
            reply = self.transport.request("DELETE", f"/credentials/{remote.id}")
            if reply.status not in (200, 204, 404):
                raise reply.rejected(f"delete credential {remote.id}")
            return None
        return self._update(remote, accredible_expire_revoked(subject), "expire")

    def set_expiry(self, remote: Remote, subject: Subject) -> Remote:
        return self._update(remote, accredible_expiry(subject), "update the expiry of")

    def publish(self, remote: Remote) -> Remote:
        return self._update(remote, accredible_publish(), "publish")

    def _update(self, remote: Remote, body: dict[str, Any], what: str) -> Remote:
        reply = self.transport.request("PUT", f"/credentials/{remote.id}", json_body=body)
        if reply.status != 200:
            raise reply.rejected(f"{what} credential {remote.id}")
        return _credential(reply)


def _credential(reply: Reply) -> Remote:
    body = reply.json()
    try:
        return parse_accredible_credential(body.get("credential") if isinstance(body, dict) else None)
    except ValueError as error:
        raise MirrorUnavailable(f"Accredible answered {reply.status} without a usable credential: {error}") from None
