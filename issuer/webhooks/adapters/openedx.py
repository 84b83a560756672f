"""Open edX through the webhook relay plugin: openedx-events data serialized as JSON, signed
`X-OpenEdX-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>` (and `...-Previous` while the secret
rotates: either may match). No timestamp header: `event_metadata.time` (covered by the HMAC) bounds replays and
`event_metadata.id` is the dedupe key. Passing-status events issue only when `is_passing` is true; a created
certificate carries the grade (a fraction, "0.85") as the score.
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
    number,
    obj,
    parse_json,
    require_fresh,
    text,
    timestamp,
)

PASSING = ("openedx_events.learning.data.CoursePassingStatusData", "course_passing_status")
CERTIFICATE = ("openedx_events.learning.data.CertificateData", "certificate")


class OpenEdx(NoEnrichment):
    platform = "openedx"
    max_age = timedelta(hours=1)  # the relay retries 5 times, backing off from 30 s

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        expected = ["sha256=" + hmac_hex(s.encode(), inbound.body) for s in source.secrets]
        current = inbound.headers.get("x-openedx-webhook-signature")
        previous = inbound.headers.get("x-openedx-webhook-signature-previous")
        if not (any_matches(current, expected) or any_matches(previous, expected)):
            raise Unauthenticated("missing or wrong X-OpenEdX-Webhook-Signature")
        body = obj(parse_json(inbound.body), "body")
        metadata = obj(body.get("event_metadata"), "event_metadata")
        sent_at = timestamp(metadata.get("time"), "event_metadata.time", required=True)
        require_fresh(sent_at, now, source.max_age(self.max_age), "event_metadata.time")
        event_id = ident(metadata.get("id"), "event_metadata.id")
        passing = next((body[k] for k in PASSING if k in body), None)
        certificate = next((body[k] for k in CERTIFICATE if k in body), None)
        score: float | None = None
        if passing is not None:
            data = obj(passing, "CoursePassingStatusData")
            if data.get("is_passing") is not True:
                return Parsed(ignored="the learner is not passing")
        elif certificate is not None:
            data = obj(certificate, "CertificateData")
            if data.get("current_status", "downloadable") != "downloadable":
                return Parsed(ignored=f"certificate status {data.get('current_status')!r}")
            grade = number(data.get("grade"))
            score = None if grade is None else round(grade * 100 if grade <= 1 else grade, 2)
        else:
            return Parsed(ignored=f"event {metadata.get('event_type')!r} is not a passing status or certificate")
        user, course = obj(data.get("user"), "user"), obj(data.get("course"), "course")
        pii = maybe_obj(user.get("pii"))
        learner = ident(user.get("id"), "user.id")
        course_key = ident(course.get("course_key"), "course.course_key")
        assert event_id is not None and learner is not None and course_key is not None and sent_at is not None
        return Parsed(
            (
                CompletionEvent(
                    source_id=source.id,
                    platform=self.platform,
                    external_id=event_id,
                    learner_id=learner,
                    course_id=course_key,
                    completed_at=sent_at,
                    email=text(pii.get("email"), 320),
                    name=text(pii.get("name")),  # never the username: it is not a person's name
                    score=score,
                    extra={
                        "course_name": text(course.get("display_name")),
                        "event_type": text(metadata.get("event_type")),
                        "username": text(pii.get("username")),
                    },
                ),
            )
        )


ADAPTER = OpenEdx()
