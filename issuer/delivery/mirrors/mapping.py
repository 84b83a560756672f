"""Pure parts of mirroring: the per-achievement mapping, what we send to Credly and Accredible, and how we read
their answers. No I/O here (the clients in credly.py and accredible.py do the talking).

The facts about both APIs are in the project's integrations notes (sections 1 and 2); the comments below name the
choices made where the vendors' documentation leaves room.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SERVICES = ("credly", "accredible")
LABELS = {"credly": "Credly", "accredible": "Accredible"}
MAX_MESSAGE_CHARS = 300

# --------------------------------------------------------------------------------------------------- the mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredlyTarget(_Strict):
    """Where a credential goes on Credly: the organization (UUID) and its badge template (UUID)."""

    organization_id: UUID
    badge_template_id: UUID


class AccredibleTarget(_Strict):
    """Where a credential goes on Accredible: the group (Accredible's numeric id)."""

    group_id: int = Field(gt=0, lt=2**53)


class MirrorMapping(_Strict):
    """`PUT /api/v1/achievements/{id}/mirror`: either, both or neither (null or absent = not mirrored there)."""

    credly: CredlyTarget | None = None
    accredible: AccredibleTarget | None = None

    def to_json(self) -> dict[str, Any] | None:
        stored = self.model_dump(mode="json", exclude_none=True)
        return stored or None


Target = CredlyTarget | AccredibleTarget


def targets(stored: dict[str, Any] | None) -> dict[str, Target]:
    """The services an achievement's stored mapping names; raises ValueError when the stored JSON is malformed."""
    if not stored:
        return {}
    try:
        mapping = MirrorMapping.model_validate(stored)
    except ValidationError as error:
        raise ValueError(f"the stored mirror mapping is malformed: {error.error_count()} error(s)") from None
    found: dict[str, Target] = {}
    if mapping.credly is not None:
        found["credly"] = mapping.credly
    if mapping.accredible is not None:
        found["accredible"] = mapping.accredible
    return found


def target_json(target: Target) -> dict[str, Any]:
    return target.model_dump(mode="json")


def target_from_json(service: str, data: dict[str, Any]) -> Target:
    return CredlyTarget.model_validate(data) if service == "credly" else AccredibleTarget.model_validate(data)


# --------------------------------------------------------------------------------------------------- our side


@dataclass(frozen=True)
class Subject:
    """What a mirror needs to know about one of our credentials (a snapshot taken when a job runs)."""

    credential_id: str
    page_url: str  # the verification page: the mirror links back to the source of truth
    email: str | None
    name: str | None
    awarded_at: datetime
    valid_until: datetime | None
    revoked_at: datetime | None
    revocation_reason: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def expires_on(self) -> date | None:
        return self.valid_until.astimezone(UTC).date() if self.valid_until else None


@dataclass(frozen=True)
class Remote:
    """A mirror's record as the service reports it, normalized. Expiry is compared by day: Accredible keeps only
    dates, and comparing Credly's by day too means a re-issue never replaces a badge over a rounding."""

    id: str
    revoked: bool = False
    expires_on: date | None = None
    published: bool = True
    replaced_by: str | None = None  # Credly: the badge that replaced this one
    earner_ref: str | None = None  # our credential id, as the service keeps it


def split_name(name: str | None, email: str | None) -> tuple[str, str]:
    """Credly wants a first and a last name. The last word is the last name; a one-word name is sent as both
    (Credly requires both and refuses blanks); no name at all falls back to the email's local part."""
    words = (name or "").split() or [(email or "").partition("@")[0] or "Recipient"]
    if len(words) == 1:
        return words[0], words[0]
    return " ".join(words[:-1]), words[-1]


def display_name(name: str | None, email: str | None) -> str:
    return " ".join((name or "").split()) or (email or "").partition("@")[0] or "Recipient"


# --------------------------------------------------------------------------------------------------- Credly


def credly_time(moment: datetime) -> str:
    """The form every Credly example uses: `2014-04-01 09:41:00 -0500` (always UTC here)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S %z")


def credly_badge(target: CredlyTarget, subject: Subject) -> dict[str, Any]:
    """`POST /organizations/{org}/badges`. `issuer_earner_id` is our credential id: it makes the badge findable
    again (exactly once) and tells Credly's duplicate check which award it is. `expires_at: false` = never (our
    credential decides, not the template's default)."""
    first, last = split_name(subject.name, subject.email)
    return {
        "recipient_email": subject.email,
        "badge_template_id": str(target.badge_template_id),
        "issued_at": credly_time(subject.awarded_at),
        "issued_to_first_name": first,
        "issued_to_last_name": last,
        "issuer_earner_id": subject.credential_id,
        "expires_at": credly_time(subject.valid_until) if subject.valid_until else False,
        "evidence": [_credly_evidence(subject)],
    }


def credly_replacement(target: CredlyTarget, subject: Subject) -> dict[str, Any]:
    """`POST /organizations/{org}/badges/{id}/replace`: the same award with our current expiry."""
    body = credly_badge(target, subject)
    del body["recipient_email"]  # the recipient stays; Credly lets it change only while a badge is pending
    return body


def credly_revocation(subject: Subject) -> dict[str, Any]:
    reason = " ".join((subject.revocation_reason or "").split()) or "Revoked by the issuer."
    return {"reason": reason, "suppress_revoke_notification_email": False}


def _credly_evidence(subject: Subject) -> dict[str, Any]:
    return {
        "type": "UrlEvidence",
        "name": "Open Badges 3.0 credential",
        "value": subject.page_url,
        "description": "The signed credential this badge mirrors, with its live verification.",
    }


def credly_filter(subject: Subject, target: CredlyTarget) -> str:
    """`filter=recipient_email::<e>|badge_template_id::<t>` (the separators cannot be escaped, so an address
    holding them is searched by template alone and matched on our id)."""
    email = subject.email or ""
    if email and "|" not in email and "::" not in email:
        return f"recipient_email::{email}|badge_template_id::{target.badge_template_id}"
    return f"badge_template_id::{target.badge_template_id}"


def parse_credly_badge(data: Any) -> Remote:
    if not isinstance(data, dict) or not data.get("id"):
        raise ValueError("the badge in Credly's answer has no id")
    return Remote(
        id=str(data["id"]),
        revoked=data.get("state") == "revoked",
        expires_on=_day(data.get("expires_at")),
        replaced_by=str(data["replacement_badge_id"]) if data.get("replacement_badge_id") else None,
        earner_ref=str(data["issuer_earner_id"]) if data.get("issuer_earner_id") else None,
    )


def is_credly_duplicate(status: int, message: str) -> bool:
    return status == 422 and "already has this badge" in message.lower()


# --------------------------------------------------------------------------------------------------- Accredible


def accredible_credential(target: AccredibleTarget, subject: Subject) -> dict[str, Any]:
    """`POST /v1/credentials`. Accredible has no idempotency key: our credential id goes in `meta_data` and
    `recipient.id`, which a search by recipient email and group finds again."""
    return {
        "credential": {
            "recipient": {
                "name": display_name(subject.name, subject.email),
                "email": subject.email,
                "id": subject.credential_id,
            },
            "group_id": target.group_id,
            "issued_on": subject.awarded_at.astimezone(UTC).date().isoformat(),
            "expired_on": subject.expires_on.isoformat() if subject.expires_on else None,
            "approve": True,
            "meta_data": _accredible_meta(subject),
            "evidence_items": [
                {"description": "Open Badges 3.0 credential", "category": "url", "url": subject.page_url}
            ],
        }
    }


def accredible_expiry(subject: Subject) -> dict[str, Any]:
    return {"credential": {"expired_on": subject.expires_on.isoformat() if subject.expires_on else None}}


def accredible_publish() -> dict[str, Any]:
    return {"credential": {"approve": True}}


def accredible_expire_revoked(subject: Subject) -> dict[str, Any]:
    """Accredible has no revoke: the credential expires on the day we revoked it and says why in its meta data."""
    assert subject.revoked_at is not None
    meta = _accredible_meta(subject) | {"ob3_revoked": True, "ob3_revocation_reason": subject.revocation_reason or ""}
    return {"credential": {"expired_on": subject.revoked_at.astimezone(UTC).date().isoformat(), "meta_data": meta}}


def _accredible_meta(subject: Subject) -> dict[str, Any]:
    return {"ob3_credential_id": subject.credential_id, "ob3_credential_url": subject.page_url}


def accredible_search(subject: Subject, target: AccredibleTarget, cursor: str | None) -> dict[str, Any]:
    """`POST /v2/credentials/search` for the recipient's credentials in the group (cursor paging)."""
    page: dict[str, Any] = {"size": 50, "cursor": cursor} if cursor else {"size": 50, "from": 0}
    return {"query": {"recipient_email": subject.email, "group.id": target.group_id}, "page": page}


def parse_accredible_credential(data: Any) -> Remote:
    if not isinstance(data, dict) or data.get("id") in (None, ""):
        raise ValueError("the credential in Accredible's answer has no id")
    meta: dict[str, Any] = data["meta_data"] if isinstance(data.get("meta_data"), dict) else {}
    recipient: dict[str, Any] = data["recipient"] if isinstance(data.get("recipient"), dict) else {}
    ours = meta.get("ob3_credential_id") or recipient.get("id")
    return Remote(
        id=str(data["id"]),  # a string in some examples, a number in others
        revoked=meta.get("ob3_revoked") is True,
        expires_on=_day(data.get("expired_on")),
        published=data.get("approve") is not False,
        earner_ref=str(ours) if ours else None,
    )


def is_accredible_duplicate(status: int, message: str) -> bool:
    lowered = message.lower()
    return status == 422 and ("already been taken" in lowered or "duplicate" in lowered)


# --------------------------------------------------------------------------------------------------- answers


def error_message(body: bytes) -> str:
    """The human part of an error body, read leniently: Credly's `data.message`, Accredible's `errors` (a string
    or an object of field -> messages), `message`, `error`, `data`, or plain text. One line, bounded."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    message = _message_of(parsed) if parsed is not None else text
    return " ".join(message.split())[:MAX_MESSAGE_CHARS] or "(no message)"


def _message_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(filter(None, (_message_of(item) for item in value)))
    if not isinstance(value, dict):
        return json.dumps(value)
    for key in ("message", "errors", "error", "data", "detail"):
        if key in value and value[key] not in (None, "", {}, []):
            inner = value[key]
            if key == "errors" and isinstance(inner, dict):
                return "; ".join(f"{field}: {_message_of(problem)}" for field, problem in inner.items())
            return _message_of(inner)
    return json.dumps(value)[:MAX_MESSAGE_CHARS]


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d{1,9}", value):
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def _day(value: Any) -> date | None:
    """A day from `2014-04-01T14:41:00.000Z`, `2014-04-01 09:41:00 -0500` or `2014-04-01` (None when absent)."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            raise ValueError(f"unreadable date {text[:40]!r}") from None
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
