"""Any system that can sign like Standard Webhooks (or, by configuration, like Stripe): our own documented
completion payload, for LMSs without a native webhook and for relays (Zapier, a TalentLMS relay, scripts).

Standard Webhooks: `webhook-id`, `webhook-timestamp` (unix seconds, within +-5 min), `webhook-signature`
(space-separated `v1,<base64 HMAC-SHA256>` of `id.timestamp.body`, keyed with the base64-decoded secret after
`whsec_`). Stripe style (`scheme: stripe`): `Stripe-Signature: t=<unix>,v1=<hex>`, signed `t.body`, keyed with
the secret's UTF-8 bytes, only old timestamps refused. Both are verified on the exact bytes before parsing.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator

from ...errors import ValidationFailed
from ...validation import ShortText
from ..event import CompletionEvent
from . import (
    Inbound,
    NoEnrichment,
    Parsed,
    Source,
    Stale,
    Unauthenticated,
    any_matches,
    digest,
    hmac_b64,
    hmac_hex,
    parse_json,
    require_fresh,
    timestamp,
)

Id = Annotated[str, Field(min_length=1, max_length=255)]
COMPLETED = "course.completed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Learner(_Model):
    id: Id
    email: EmailStr | None = None
    name: ShortText | None = None


class Course(_Model):
    id: Id
    name: ShortText | None = None


class Completion(_Model):
    learner: Learner
    course: Course
    completed_at: AwareDatetime
    score: float | None = Field(None, ge=0, le=100)
    time_spent_minutes: float | None = Field(None, ge=0)
    attendance_percent: float | None = Field(None, ge=0, le=100)
    # Absent or null: not reported (rules needing it hold for review); []: reported, none completed.
    modules_completed: list[Id] | None = Field(None, max_length=500)

    @field_validator("learner", mode="before")
    @classmethod
    def _blank_email_is_none(cls, value: object) -> object:
        if isinstance(value, dict) and isinstance(value.get("email"), str) and not value["email"].strip():
            return {**value, "email": None}
        return value


class Envelope(_Model):
    type: str = Field(max_length=100)
    id: Id | None = None
    data: Completion | None = None


class Generic(NoEnrichment):
    platform = "generic"
    max_age = timedelta(minutes=5)  # the Standard Webhooks tolerance

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        delivery_id: str | None = None
        if source.config.get("scheme") == "stripe":
            self._verify_stripe(inbound, source, now)
        else:
            delivery_id = self._verify(inbound, source, now)
        raw = parse_json(inbound.body)
        if isinstance(raw, dict) and raw.get("type") != COMPLETED:
            return Parsed(ignored=f"type {raw.get('type')!r} is not {COMPLETED}")
        try:
            envelope = Envelope.model_validate(raw)
        except ValidationError as error:
            raise ValidationFailed(
                "the body is not a course.completed event",
                errors=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in error.errors()],
            ) from None
        data = envelope.data
        if data is None:
            raise ValidationFailed("data is missing", errors=[{"field": "data", "message": "required"}])
        external = envelope.id or delivery_id or digest(data.learner.id, data.course.id, data.completed_at.isoformat())
        return Parsed(
            (
                CompletionEvent(
                    source_id=source.id,
                    platform=self.platform,
                    external_id=external,
                    learner_id=data.learner.id,
                    course_id=data.course.id,
                    completed_at=data.completed_at,
                    email=str(data.learner.email) if data.learner.email else None,
                    name=data.learner.name or None,
                    score=data.score,
                    time_spent_minutes=data.time_spent_minutes,
                    attendance_percent=data.attendance_percent,
                    modules_completed=None if data.modules_completed is None else tuple(data.modules_completed),
                    extra={"course_name": data.course.name},
                ),
            )
        )

    def _verify(self, inbound: Inbound, source: Source, now: datetime) -> str:
        delivery_id = inbound.headers.get("webhook-id")
        sent = inbound.headers.get("webhook-timestamp")
        signatures = inbound.headers.get("webhook-signature")
        if not delivery_id or not sent or not signatures or not sent.strip().isdigit():
            raise Unauthenticated("webhook-id, webhook-timestamp and webhook-signature are required")
        signed = f"{delivery_id}.{sent.strip()}.".encode() + inbound.body
        expected = [hmac_b64(key, signed) for key in _standard_keys(source.secrets)]
        offered = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
        if not any(any_matches(o, expected) for o in offered):
            raise Unauthenticated("no webhook-signature matches")
        require_fresh(
            timestamp(sent.strip(), "webhook-timestamp"), now, source.max_age(self.max_age), "webhook-timestamp"
        )
        return delivery_id[:255]

    def _verify_stripe(self, inbound: Inbound, source: Source, now: datetime) -> None:
        header = inbound.headers.get("stripe-signature") or ""
        pairs = [p.strip().partition("=") for p in header.split(",")]
        sent = next((v for k, _, v in pairs if k == "t"), "")
        offered = [v for k, _, v in pairs if k == "v1"]
        if not sent.isdigit() or not offered:
            raise Unauthenticated("Stripe-Signature with t= and v1= is required")
        expected = [hmac_hex(s.encode(), f"{sent}.".encode() + inbound.body) for s in source.secrets]
        if not any(any_matches(o, expected) for o in offered):
            raise Unauthenticated("no Stripe-Signature v1 matches")
        moment = timestamp(sent, "t")
        assert moment is not None
        if moment < now - source.max_age(self.max_age):
            raise Stale("the Stripe-Signature timestamp is older than the replay window")


def _standard_keys(secrets: tuple[str, ...]) -> list[bytes]:
    keys = []
    for secret in secrets:
        try:
            keys.append(base64.b64decode(secret.removeprefix("whsec_"), validate=True))
        except (binascii.Error, ValueError):
            continue  # refused when the source was configured; never matches here
    return keys


ADAPTER = Generic()
