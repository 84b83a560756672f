"""Teachable `Enrollment.completed`. Teachable publishes no payload or signing documentation, so this adapter is
built for the shape third-party receivers report and trusts nothing it cannot check.

A secret URL token (`?token=`) is always required. When `signature_header` is configured, that header must also
carry the hex HMAC-SHA256 of the raw body under one of the signing secrets. The body may be the event object or
a one-element array of it (both have been seen).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ...errors import ValidationFailed
from ..event import CompletionEvent
from . import (
    Inbound,
    NoEnrichment,
    Parsed,
    Source,
    Unauthenticated,
    any_matches,
    digest,
    hmac_hex,
    ident,
    number,
    obj,
    parse_json,
    require_fresh,
    require_token,
    text,
    timestamp,
)


class Teachable(NoEnrichment):
    platform = "teachable"
    max_age = timedelta(hours=24)  # retry schedule undocumented

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        require_token(inbound, source)
        header = source.config.get("signature_header")
        if header:
            sent = (inbound.headers.get(str(header).lower()) or "").strip().lower().removeprefix("sha256=")
            expected = [hmac_hex(s.encode(), inbound.body) for s in source.signing_secrets]
            if not any_matches(sent, expected):
                raise Unauthenticated(f"missing or wrong {header} signature")
        data: Any = parse_json(inbound.body)
        if isinstance(data, list):
            if len(data) != 1:
                raise ValidationFailed(
                    "expected one event (or an array of one)", errors=[{"field": "body", "message": "length"}]
                )
            data = data[0]
        envelope = obj(data, "body")
        sent_at = timestamp(envelope.get("created_at") or envelope.get("created"), "created_at")
        require_fresh(sent_at, now, source.max_age(self.max_age), "created_at")
        if envelope.get("type") != "Enrollment.completed":
            return Parsed(ignored=f"event {envelope.get('type')!r} is not Enrollment.completed")
        enrollment = obj(envelope.get("object"), "object")
        user, course = obj(enrollment.get("user"), "object.user"), obj(enrollment.get("course"), "object.course")
        learner = ident(user.get("id") or enrollment.get("user_id") or user.get("email"), "object.user.id")
        course_id = ident(course.get("id") or enrollment.get("course_id"), "object.course.id")
        assert learner is not None and course_id is not None
        completed = timestamp(enrollment.get("completed_at"), "object.completed_at") or sent_at or now
        event_id = ident(envelope.get("id"), "id", required=False)
        return Parsed(
            (
                CompletionEvent(
                    source_id=source.id,
                    platform=self.platform,
                    external_id=event_id or digest(learner, course_id, completed.isoformat()),
                    learner_id=learner,
                    course_id=course_id,
                    completed_at=completed,
                    email=text(user.get("email"), 320),
                    name=text(user.get("name")),
                    extra={
                        "course_name": text(course.get("name")),
                        "percent_complete": number(enrollment.get("percent_complete")),
                    },
                ),
            )
        )


ADAPTER = Teachable()
