"""Thinkific `enrollment.completed`: `X-Thinkific-Hmac-Sha256` is the hex HMAC-SHA256 of the raw body, keyed with
the site's API key (or the OAuth app's client secret). There is no signed timestamp header; the envelope's
`created_at` (covered by the HMAC) bounds replays and its `id` is the dedupe key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..event import CompletionEvent
from . import (
    Inbound,
    NoEnrichment,
    Parsed,
    Source,
    Unauthenticated,
    any_matches,
    hmac_hex,
    ident,
    maybe_obj,
    obj,
    parse_json,
    require_fresh,
    text,
    timestamp,
)


class Thinkific(NoEnrichment):
    platform = "thinkific"
    max_age = timedelta(hours=24)  # retry schedule undocumented

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        sent = (inbound.headers.get("x-thinkific-hmac-sha256") or "").strip().lower()
        if not any_matches(sent, [hmac_hex(s.encode(), inbound.body) for s in source.secrets]):
            raise Unauthenticated("missing or wrong X-Thinkific-Hmac-Sha256")
        subdomain = source.config.get("subdomain")
        if subdomain and inbound.headers.get("x-thinkific-subdomain") != subdomain:
            raise Unauthenticated("the delivery comes from another Thinkific site")
        envelope = obj(parse_json(inbound.body), "body")
        sent_at = timestamp(envelope.get("created_at") or envelope.get("timestamp"), "created_at")
        require_fresh(sent_at, now, source.max_age(self.max_age), "created_at")
        topic = f"{envelope.get('resource')}.{envelope.get('action')}"
        if topic != "enrollment.completed":
            return Parsed(ignored=f"topic {topic!r} is not enrollment.completed")
        event_id = ident(envelope.get("id"), "id")
        payload = obj(envelope.get("payload"), "payload")
        user = obj(payload.get("user"), "payload.user")
        course = maybe_obj(payload.get("course"))
        learner = ident(user.get("id"), "payload.user.id")
        course_id = ident(payload.get("course_id") or course.get("id"), "payload.course_id")
        completed = timestamp(payload.get("completed_at"), "payload.completed_at") or sent_at or now
        assert event_id is not None and learner is not None and course_id is not None
        name = " ".join(p for p in (text(user.get("first_name")), text(user.get("last_name"))) if p)
        return Parsed(
            (
                CompletionEvent(
                    source_id=source.id,
                    platform=self.platform,
                    external_id=event_id,
                    learner_id=learner,
                    course_id=course_id,
                    completed_at=completed,
                    email=text(user.get("email"), 320),
                    name=name or text(user.get("full_name")),
                    # "percentage_completed" is a string whose scale differs between samples: the topic decides.
                    extra={
                        "course_name": text(course.get("name")),
                        "enrollment_id": ident(payload.get("id"), "payload.id", required=False),
                    },
                ),
            )
        )


ADAPTER = Thinkific()
