"""A fake Credly Web Service API v1 (the parts the mirror uses, as the integration notes describe them).

Basic auth whose decoded user part (before `:` or `|`) is the token, else 401. `POST …/badges` -> 201 pending
badge; a second badge of a template that forbids duplicates for the same email or `issuer_earner_id` -> 422
"User already has this badge" (unless `duplicate_behavior`); archived template -> 422; missing fields -> 422;
`GET …/badges?filter=` and `…/badge_templates` paged by 50 with an absolute `next_page_url`; `GET …/badges/{id}`;
`PUT …/revoke` -> 200 revoked (a reason is required; a replaced badge cannot be revoked); `POST …/replace` ->
201 new badge linked both ways; `DELETE`; thin events at `…/events/{id}`. Errors are `{"data": {"message"}}`.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from .base import FakeRequest, FakeResponse, FakeServer

PER_PAGE = 50
ORG = r"/v1/organizations/(?P<org>[^/]+)"
REQUIRED = ("recipient_email", "badge_template_id", "issued_at", "issued_to_first_name", "issued_to_last_name")


@dataclass
class Template:
    id: str
    name: str
    state: str = "active"
    allow_duplicate_badges: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": f"{self.name}, as a Credly badge",
            "state": self.state,
            "allow_duplicate_badges": self.allow_duplicate_badges,
            "image_url": f"https://images.example/{self.id}.png",
            "url": f"https://sandbox.credly.com/org/badge/{self.id}",
        }


def _time(value: Any) -> datetime:
    """Both forms Credly accepts: `2014-04-01 09:41:00 -0500` and ISO 8601."""
    if not isinstance(value, str):
        raise ValueError("not a time")
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeCredly(FakeServer):
    def __init__(self, token: str = "credly-secret-token") -> None:  # noqa: S107 (a fake's)
        super().__init__()
        self.token = token
        self.organization_id = str(uuid.uuid4())
        self.templates: dict[str, Template] = {}
        self.badges: dict[str, dict[str, Any]] = {}  # insertion order = issue order
        self.events: dict[str, dict[str, Any]] = {}
        self.template = self.add_template("Data Analysis").id
        self.add("POST", f"{ORG}/badges", self.issue)
        self.add("GET", f"{ORG}/badges", self.list_badges)
        self.add("GET", f"{ORG}/badges/(?P<badge>[^/]+)", self.read)
        self.add("PUT", f"{ORG}/badges/(?P<badge>[^/]+)/revoke", self.revoke)
        self.add("POST", f"{ORG}/badges/(?P<badge>[^/]+)/replace", self.replace)
        self.add("DELETE", f"{ORG}/badges/(?P<badge>[^/]+)", self.delete)
        self.add("GET", f"{ORG}/badge_templates", self.list_templates)
        self.add("GET", f"{ORG}/badge_templates/(?P<template>[^/]+)", self.read_template)
        self.add("GET", f"{ORG}/events/(?P<event>[^/]+)", self.read_event)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def add_template(self, name: str, **options: Any) -> Template:
        template = Template(str(uuid.uuid4()), name, **options)
        self.templates[template.id] = template
        return template

    def badges_for(self, earner_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.badges.values() if b["issuer_earner_id"] == earner_id]

    # ------------------------------------------------------------------------------------------- protocol

    def authorized(self, request: FakeRequest) -> FakeResponse | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                decoded = ""
            if decoded.replace("|", ":").split(":", 1)[0] == self.token:
                return None
        return self.error(401, "You are not authorized to perform this action.")

    def error(self, status: int, message: str = "") -> FakeResponse:
        return FakeResponse(status, {"data": {"message": message or f"HTTP {status}"}})

    def _org(self, org: str) -> FakeResponse | None:
        return None if org == self.organization_id else self.error(404, "Organization not found")

    def _event(self, kind: str, badge: dict[str, Any]) -> None:
        event_id = str(uuid.uuid4())
        self.events[event_id] = {
            "id": event_id,
            "organization_id": self.organization_id,
            "event_type": kind,
            "occurred_at": _iso(datetime.now(UTC)),
            "badge": dict(badge),
        }

    # ------------------------------------------------------------------------------------------- badges

    def issue(self, request: FakeRequest, org: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        data = request.json()
        if not isinstance(data, dict):
            return self.error(422, "The request body must be a JSON object")
        missing = [name for name in REQUIRED if not data.get(name)]
        if missing:
            return self.error(422, f"{', '.join(missing)} can't be blank")
        template = self.templates.get(str(data["badge_template_id"]))
        if template is None:
            return self.error(422, "Badge template not found")
        if template.state == "archived":
            return self.error(422, "An archived badge template cannot issue badges")
        try:
            issued_at = _time(data["issued_at"])
            expires = data.get("expires_at")
            expires_at = None if expires in (None, False) else _time(expires)
        except ValueError:
            return self.error(422, "issued_at or expires_at is not a valid time")
        behaviour = data.get("duplicate_behavior", "deny")
        existing = self._duplicate(template, str(data["recipient_email"]), data.get("issuer_earner_id"))
        if existing is not None and not template.allow_duplicate_badges and behaviour != "allow":
            if behaviour != "replace":
                return self.error(422, "User already has this badge")
            return self._replace(existing, data, template)
        badge = self._new_badge(data, template, issued_at, expires_at, str(data["recipient_email"]))
        return FakeResponse(201, {"data": badge})

    def _duplicate(self, template: Template, email: str, earner: Any) -> dict[str, Any] | None:
        for badge in self.badges.values():
            same = badge["recipient_email"].lower() == email.lower() or (
                earner is not None and badge["issuer_earner_id"] == earner
            )
            live = badge["state"] != "revoked" and badge["replacement_badge_id"] is None
            if badge["badge_template"]["id"] == template.id and same and live:
                return badge
        return None

    def _new_badge(
        self,
        data: dict[str, Any],
        template: Template,
        issued_at: datetime,
        expires_at: datetime | None,
        email: str,
        replaces: str | None = None,
    ) -> dict[str, Any]:
        badge_id = str(uuid.uuid4())
        now = _iso(datetime.now(UTC))
        first, last = data.get("issued_to_first_name", ""), data.get("issued_to_last_name", "")
        badge = {
            "id": badge_id,
            "state": "pending",
            "recipient_email": email,
            "issued_to": f"{first} {last}".strip(),
            "issued_to_first_name": first,
            "issued_to_middle_name": data.get("issued_to_middle_name"),
            "issued_to_last_name": last,
            "issuer_earner_id": data.get("issuer_earner_id"),
            "locale": data.get("locale", "en"),
            "public": False,
            "issued_at": _iso(issued_at),
            "issued_at_date": issued_at.astimezone(UTC).date().isoformat(),
            "expires_at": _iso(expires_at) if expires_at else None,
            "expires_at_date": expires_at.astimezone(UTC).date().isoformat() if expires_at else None,
            "created_at": now,
            "updated_at": now,
            "state_updated_at": now,
            "revocation_reason": None,
            "replacement_badge_id": None,
            "replaces_badge_id": replaces,
            "suppress_badge_notification_email": bool(data.get("suppress_badge_notification_email", False)),
            "accept_badge_url": f"https://sandbox.credly.com/earner/earned/badge/{badge_id}",
            "badge_url": f"https://sandbox.credly.com/badges/{badge_id}",
            "image_url": f"https://images.example/{template.id}.png",
            "evidence": [
                {"id": str(uuid.uuid4()), **{k: v for k, v in item.items()}} for item in data.get("evidence") or []
            ],
            "badge_template": template.json(),
            "issuer": {"summary": "issued by Example Institute", "entities": []},
            "user": None,
        }
        self.badges[badge_id] = badge
        self._event("badge.created", badge)
        return badge

    def list_badges(self, request: FakeRequest, org: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        filters = _filters(request.param("filter", "") or "")
        unknown = set(filters) - {"recipient_email", "badge_template_id", "state", "issuer_earner_id"}
        if unknown:
            return self.error(422, f"Unknown filter: {', '.join(sorted(unknown))}")

        def keep(badge: dict[str, Any]) -> bool:
            for key, values in filters.items():
                value = badge["badge_template"]["id"] if key == "badge_template_id" else badge.get(key)
                if key == "recipient_email":
                    if str(value).lower() not in [v.lower() for v in values]:
                        return False
                elif str(value) not in values:
                    return False
            return True

        found = [b for b in reversed(self.badges.values()) if keep(b)]  # sort=-issued_at: newest first
        return self._page(request, found)

    def _page(self, request: FakeRequest, items: list[dict[str, Any]]) -> FakeResponse:
        page = max(1, int(request.param("page", "1") or "1"))
        pages = max(1, -(-len(items) // PER_PAGE))
        chunk = items[(page - 1) * PER_PAGE : page * PER_PAGE]

        def link(number: int) -> str | None:
            if not 1 <= number <= pages:
                return None
            query = {k: v[0] for k, v in request.query.items() if k != "page"} | {"page": str(number)}
            return f"{self.origin}{request.path}?{urlencode(query)}"

        metadata = {
            "count": len(chunk),
            "current_page": page,
            "total_count": len(items),
            "total_pages": pages,
            "per": PER_PAGE,
            "previous_page_url": link(page - 1),
            "next_page_url": link(page + 1),
        }
        return FakeResponse(200, {"data": chunk, "metadata": metadata})

    def read(self, request: FakeRequest, org: str, badge: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        found = self.badges.get(badge)
        return FakeResponse(200, {"data": found}) if found else self.error(404, "Badge not found")

    def revoke(self, request: FakeRequest, org: str, badge: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        found = self.badges.get(badge)
        if found is None:
            return self.error(404, "Badge not found")
        data = request.json() or {}
        if not str(data.get("reason") or "").strip():
            return self.error(422, "reason can't be blank")
        if found["replacement_badge_id"]:
            return self.error(422, "A badge that has been replaced cannot be revoked")
        if found["state"] == "revoked":
            return self.error(422, "Badge is already revoked")
        found.update(state="revoked", revocation_reason=data["reason"], state_updated_at=_iso(datetime.now(UTC)))
        self._event("badge.state.changed", found)
        return FakeResponse(200, {"data": found})

    def replace(self, request: FakeRequest, org: str, badge: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        found = self.badges.get(badge)
        if found is None:
            return self.error(404, "Badge not found")
        if found["state"] == "revoked" or found["replacement_badge_id"]:
            return self.error(422, "Only a current, unrevoked badge can be replaced")
        data = request.json() or {}
        template = self.templates.get(str(data.get("badge_template_id") or found["badge_template"]["id"]))
        if template is None:
            return self.error(422, "Badge template not found")
        return self._replace(found, data, template)

    def _replace(self, old: dict[str, Any], data: dict[str, Any], template: Template) -> FakeResponse:
        try:
            issued_at = _time(data.get("issued_at") or old["issued_at"])
            expires = data.get("expires_at", old["expires_at"])
            expires_at = None if expires in (None, False) else _time(expires)
        except ValueError:
            return self.error(422, "issued_at or expires_at is not a valid time")
        merged = {
            "issued_to_first_name": old["issued_to_first_name"],
            "issued_to_last_name": old["issued_to_last_name"],
            "issuer_earner_id": old["issuer_earner_id"],
        } | {k: v for k, v in data.items() if v is not None}
        new = self._new_badge(merged, template, issued_at, expires_at, old["recipient_email"], replaces=old["id"])
        old["replacement_badge_id"] = new["id"]
        return FakeResponse(201, {"data": new})

    def delete(self, request: FakeRequest, org: str, badge: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        found = self.badges.pop(badge, None)
        if found is None:
            return self.error(404, "Badge not found")
        self._event("badge.deleted", found)
        return FakeResponse(204, b"")

    # ------------------------------------------------------------------------------------------- the rest

    def list_templates(self, request: FakeRequest, org: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        filters = _filters(request.param("filter", "") or "")
        items = [t.json() for t in self.templates.values() if t.state in filters.get("state", [t.state])]
        return self._page(request, sorted(items, key=lambda t: str(t["name"])))

    def read_template(self, request: FakeRequest, org: str, template: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        found = self.templates.get(template)
        return FakeResponse(200, {"data": found.json()}) if found else self.error(404, "Badge template not found")

    def read_event(self, request: FakeRequest, org: str, event: str) -> FakeResponse:
        if refused := self._org(org):
            return refused
        found = self.events.get(event)
        return FakeResponse(200, {"data": found}) if found else self.error(404, "Event not found")


def _filters(text: str) -> dict[str, list[str]]:
    """`key::value|key2::v1,v2` -> {key: [value], key2: [v1, v2]}."""
    found: dict[str, list[str]] = {}
    for part in filter(None, text.split("|")):
        key, separator, value = part.partition("::")
        if not separator:
            raise ValueError(f"filter part {part!r} has no '::'")
        found[key] = value.split(",")
    return found
