"""Credly Web Service API v1: issue, find, read, revoke and replace badges of one organization's template.

Auth is HTTP Basic with the organization's authorization token as the user name and an empty password. A badge
is found again by our credential id, sent as `issuer_earner_id` and searched with the recipient's email and the
template (Credly has no idempotency key). Paths are under `/organizations/{organization_id}/`.
"""

from __future__ import annotations

import base64
from typing import Any

from .mapping import (
    CredlyTarget,
    Remote,
    Subject,
    credly_badge,
    credly_filter,
    credly_replacement,
    credly_revocation,
    is_credly_duplicate,
    parse_credly_badge,
)
from .transport import Duplicate, MirrorUnavailable, Reply, Transport

MAX_PAGES = 20  # 50 badges a page: a learner holding 1,000 copies of one template is not ours to page through


def authorization(token: str) -> str:
    return "Basic " + base64.b64encode(f"{token}:".encode()).decode("ascii")


class CredlyClient:
    service = "credly"

    def __init__(self, transport: Transport, target: CredlyTarget) -> None:
        self.transport = transport
        self.target = target
        self.badges = f"/organizations/{target.organization_id}/badges"

    def create(self, subject: Subject) -> Remote:
        reply = self.transport.request("POST", self.badges, json_body=credly_badge(self.target, subject))
        if is_credly_duplicate(reply.status, reply.message):
            raise Duplicate(reply.message)
        if reply.status not in (200, 201):
            raise reply.rejected("issue the badge")
        return _badge(reply)

    def get(self, badge_id: str) -> Remote | None:
        reply = self.transport.request("GET", f"{self.badges}/{badge_id}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise reply.rejected(f"read badge {badge_id}")
        return _badge(reply)

    def find(self, subject: Subject) -> Remote | None:
        """Our badge for this credential (by `issuer_earner_id`), the newest of a replacement chain."""
        ours: list[Remote] = []
        path: str | None = self.badges
        params: dict[str, Any] | None = {"filter": credly_filter(subject, self.target), "sort": "-issued_at"}
        for _page in range(MAX_PAGES):
            if path is None:
                break
            reply = self.transport.request("GET", path, params=params)
            if reply.status != 200:
                raise reply.rejected("search its badges")
            body = reply.json()
            items = body.get("data") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise MirrorUnavailable("Credly's badge list has no data array")
            ours += [b for b in map(parse_credly_badge, items) if b.earner_ref == subject.credential_id]
            metadata = body.get("metadata") or {}
            path, params = metadata.get("next_page_url") or None, None  # absolute, with the filter in it
        current = [b for b in ours if b.replaced_by is None]
        best = current or ours
        return best[0] if best else None

    def revoke(self, remote: Remote, subject: Subject) -> Remote | None:
        reply = self.transport.request("PUT", f"{self.badges}/{remote.id}/revoke", json_body=credly_revocation(subject))
        if reply.status == 404:
            return None
        if reply.status not in (200, 201):
            current = self.get(remote.id)  # a retry after a lost answer: revoked already is done
            if current is not None and current.revoked:
                return current
            raise reply.rejected(f"revoke badge {remote.id}")
        return _badge(reply)

    def set_expiry(self, remote: Remote, subject: Subject) -> Remote:
        """Credly changes an issued badge only by replacing it: a new badge (new id) for the same award."""
        reply = self.transport.request(
            "POST", f"{self.badges}/{remote.id}/replace", json_body=credly_replacement(self.target, subject)
        )
        if reply.status not in (200, 201):
            raise reply.rejected(f"replace badge {remote.id}")
        return _badge(reply)

    def publish(self, remote: Remote) -> Remote:
        return remote  # Credly publishes at issue; accepting it is the earner's business


def _badge(reply: Reply) -> Remote:
    body = reply.json()
    try:
        return parse_credly_badge(body.get("data") if isinstance(body, dict) else None)
    except ValueError as error:
        raise MirrorUnavailable(f"Credly answered {reply.status} without a usable badge: {error}") from None
