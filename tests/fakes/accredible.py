"""A fake Accredible API (v1, and v2 search), as the integration notes describe it.

All three Authorization forms (`Token token=K`, `Token K`, `Bearer K`), else 401 plain text. `POST
/v1/credentials` -> 200 `{"credential"}` with a string id (unpublished, `approve: false`, while `no_credits`);
missing recipient -> 422 `{"errors": "Can not create credential without recipient data"}`; unknown group -> 422
`{"errors": "Invalid Group"}`; bad dates -> 422 `{"errors": {field: [..]}}`; a second credential for an email in
a group without duplicates -> 422 `{"errors": {"recipient.email": [...]}}`. GET/PUT/PATCH/DELETE one credential
(404 `{"errors": "Doesn't exist"}`); `POST /v2/credentials/search` with `from` or `cursor` paging (400
`invalid_search_query` for unknown keys); groups (`GET /v1/issuer/groups/{id}`, 404 `{"success": false, ...}`;
`POST /v1/issuer/groups/search` with `meta`); 500 `{"errors": "Internal server error"}`; 429 after `budget`
requests until `new_window()` (the 30-second period rolling over).
"""

from __future__ import annotations

import base64
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .base import FakeRequest, FakeResponse, FakeServer

SEARCH_KEYS = {"recipient_email", "group.id", "recipient_id", "license_id", "uuid", "issued_on[gte]", "issued_on[lte]"}
DUPLICATE = (
    "has already been taken. Your group settings do not allow duplicates of this credential to be sent to the "
    "same email."
)


@dataclass
class Group:
    id: int
    name: str
    course_name: str
    allow_duplicate_credentials: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "course_name": self.course_name,
            "course_description": f"{self.course_name}, on Accredible",
            "allow_duplicate_credentials": self.allow_duplicate_credentials,
            "achievement_type": "Certificate",
            "meta_data": {},
        }


def _day(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("is invalid")
    return date.fromisoformat(value).isoformat()


class FakeAccredible(FakeServer):
    def __init__(self, api_key: str = "accredible-secret-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.groups: dict[int, Group] = {}
        self.credentials: dict[str, dict[str, Any]] = {}
        self.no_credits = False
        self.budget: int | None = None  # requests allowed per window
        self.used = 0
        self._ids = itertools.count(10_000_001)
        self.group = self.add_group("Data Analysis").id
        self.add("POST", "/v1/credentials", self.create)
        self.add("GET", r"/v1/credentials/(?P<cid>[^/]+)", self.read)
        self.add("PUT", r"/v1/credentials/(?P<cid>[^/]+)", self.update)
        self.add("PATCH", r"/v1/credentials/(?P<cid>[^/]+)", self.update)
        self.add("DELETE", r"/v1/credentials/(?P<cid>[^/]+)", self.delete)
        self.add("POST", "/v2/credentials/search", self.search)
        self.add("GET", r"/v1/issuer/groups/(?P<gid>[^/]+)", self.read_group)
        self.add("POST", "/v1/issuer/groups/search", self.search_groups)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def add_group(self, name: str, **options: Any) -> Group:
        group = Group(len(self.groups) + 501, name, name, **options)
        self.groups[group.id] = group
        return group

    def new_window(self) -> None:
        with self.lock:
            self.used = 0

    def credentials_for(self, credential_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.credentials.values() if c["meta_data"].get("ob3_credential_id") == credential_id]

    # ------------------------------------------------------------------------------------------- protocol

    def before(self, request: FakeRequest) -> FakeResponse | None:
        with self.lock:
            self.used += 1
            if self.budget is not None and self.used > self.budget:
                limited = self.error(429, "Rate limit exceeded")
                limited.headers["Retry-After"] = "30"
                return limited
        return None

    def authorized(self, request: FakeRequest) -> FakeResponse | None:
        header = request.headers.get("authorization", "")
        for prefix in ("Token token=", "Token ", "Bearer "):
            if header.startswith(prefix) and header[len(prefix) :] == self.api_key:
                return None
        return FakeResponse(401, b"HTTP Token: Access denied.\n", content_type="text/plain")

    def error(self, status: int, message: str = "") -> FakeResponse:
        if status >= 500:
            return FakeResponse(status, {"errors": "Internal server error"})
        return FakeResponse(status, {"errors": message or f"HTTP {status}"})

    # ------------------------------------------------------------------------------------------- credentials

    def create(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        data = body.get("credential") if isinstance(body, dict) else None
        recipient = data.get("recipient") if isinstance(data, dict) else None
        if not isinstance(recipient, dict) or not recipient.get("name") or not recipient.get("email"):
            return self.error(422, "Can not create credential without recipient data")
        assert isinstance(data, dict)
        group = self.groups.get(int(data.get("group_id") or 0))
        if group is None:
            return self.error(422, "Invalid Group")
        problems: dict[str, list[str]] = {}
        for field in ("issued_on", "expired_on"):
            try:
                _day(data.get(field))
            except ValueError:
                problems[field] = ["is invalid"]
        if problems:
            return FakeResponse(422, {"errors": problems})
        email = str(recipient["email"]).lower()
        if not group.allow_duplicate_credentials and any(
            c["group_id"] == group.id and c["recipient"]["email"].lower() == email for c in self.credentials.values()
        ):
            return FakeResponse(422, {"errors": {"recipient.email": [DUPLICATE]}})
        credential_id = str(next(self._ids))
        credential = {
            "id": credential_id,
            "name": data.get("name") or group.course_name,
            "description": data.get("description") or group.json()["course_description"],
            "approve": bool(data.get("approve", True)) and not self.no_credits,
            "complete": bool(data.get("complete", True)),
            "private": bool(data.get("private", False)),
            "grade": data.get("grade"),
            "issued_on": _day(data.get("issued_on")) or datetime.now(UTC).date().isoformat(),
            "expired_on": _day(data.get("expired_on")),
            "course_link": None,
            "custom_attributes": data.get("custom_attributes") or {},
            "group_name": group.name,
            "group_id": group.id,
            "url": f"https://www.credential.net/{credential_id}",
            "encoded_id": base64.b64encode(credential_id.encode()).decode(),
            "certificate": {"image": {"preview": f"https://images.example/c/{credential_id}.png"}},
            "badge": {"image": {"preview": f"https://images.example/b/{credential_id}.png"}},
            "evidence_items": data.get("evidence_items") or [],
            "references": data.get("references") or [],
            "recipient": {
                "name": recipient["name"],
                "email": recipient["email"],
                "phone_number": recipient.get("phone_number"),
                "id": recipient.get("id"),
                "meta_data": recipient.get("meta_data") or {},
            },
            "issuer": {"name": "Example Institute", "description": None, "url": None, "id": 77},
            "meta_data": data.get("meta_data") or {},
        }
        self.credentials[credential_id] = credential
        return FakeResponse(200, {"credential": credential})

    def read(self, request: FakeRequest, cid: str) -> FakeResponse:
        found = self.credentials.get(cid)
        return FakeResponse(200, {"credential": found}) if found else self.error(404, "Doesn't exist")

    def update(self, request: FakeRequest, cid: str) -> FakeResponse:
        found = self.credentials.get(cid)
        if found is None:
            return self.error(404, "Doesn't exist")
        body = request.json()
        changes = body.get("credential") if isinstance(body, dict) else None
        if not isinstance(changes, dict):
            return self.error(422, "credential is required")
        try:
            for field in ("issued_on", "expired_on"):
                if field in changes:
                    changes[field] = _day(changes[field])
        except ValueError:
            return FakeResponse(422, {"errors": {field: ["is invalid"]}})
        if "approve" in changes:
            changes["approve"] = bool(changes["approve"]) and not self.no_credits
        allowed = {"name", "description", "approve", "issued_on", "expired_on", "meta_data", "private", "grade"}
        found.update({k: v for k, v in changes.items() if k in allowed})
        return FakeResponse(200, {"credential": found})

    def delete(self, request: FakeRequest, cid: str) -> FakeResponse:
        found = self.credentials.pop(cid, None)
        return FakeResponse(200, {"credential": found}) if found else self.error(404, "Doesn't exist")

    def search(self, request: FakeRequest) -> FakeResponse:
        body = request.json() or {}
        query = body.get("query") or {}
        unknown = set(query) - SEARCH_KEYS
        if unknown:
            return FakeResponse(
                400,
                {
                    "code": 400,
                    "message": f"unknown query keys: {', '.join(sorted(unknown))}",
                    "status": "invalid_search_query",
                    "errors": {},
                },
            )

        def keep(credential: dict[str, Any]) -> bool:
            email = query.get("recipient_email")
            if email is not None and credential["recipient"]["email"].lower() != str(email).lower():
                return False
            group = query.get("group.id")
            if group is not None and credential["group_id"] != int(group):
                return False
            recipient = query.get("recipient_id")
            return recipient is None or credential["recipient"]["id"] == recipient

        found = [c for c in self.credentials.values() if keep(c)]
        page = body.get("page") or {}
        size = min(100, int(page.get("size") or 50))
        cursor = page.get("cursor")
        start = int(base64.b64decode(cursor).decode()) if cursor else int(page.get("from") or 0)
        chunk = found[start : start + size]
        following = start + size
        next_cursor = base64.b64encode(str(following).encode()).decode() if following < len(found) else None
        meta = {"count": len(found), "from": start, "size": size, "cursor": next_cursor}
        return FakeResponse(200, {"credentials": chunk, "meta": meta})

    # ------------------------------------------------------------------------------------------- groups

    def read_group(self, request: FakeRequest, gid: str) -> FakeResponse:
        group = self.groups.get(int(gid)) if gid.isdigit() else None
        if group is None:
            return FakeResponse(404, {"success": False, "data": "Group does not exist"})
        return FakeResponse(200, {"group": group.json()})

    def search_groups(self, request: FakeRequest) -> FakeResponse:
        body = request.json() or {}
        name = str(body.get("course_name") or body.get("name") or "").lower()
        ids = body.get("ids")
        found = [g.json() for g in self.groups.values() if name in g.course_name.lower() and (not ids or g.id in ids)]
        page, size = int(body.get("page") or 1), int(body.get("page_size") or 50)
        pages = max(1, -(-len(found) // size))
        meta = {
            "current_page": page,
            "next_page": page + 1 if page < pages else None,
            "prev_page": page - 1 if page > 1 else None,
            "total_pages": pages,
            "total_count": len(found),
        }
        return FakeResponse(200, {"groups": found[(page - 1) * size : page * size], "meta": meta})
