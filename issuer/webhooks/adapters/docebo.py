"""Docebo `course.enrollment.completed`. Docebo documents no signing scheme, so a secret URL token (or Basic auth
when the webhook is set up with it) authenticates; `fired_at` bounds replays; `message_id` is the dedupe key.

Same-type events may arrive grouped (up to 25 in one message): `payload` (one) and `payloads` (several) are both
read. The payload has no name or e-mail: with `api_base` and an API token configured, the job fetches the user
from the Docebo API; without them the completion is held for review.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ...errors import ValidationFailed
from ..event import CompletionEvent
from . import (
    Inbound,
    Parsed,
    Source,
    fetch_json,
    ident,
    obj,
    parse_json,
    require_fresh,
    require_token,
    text,
    timestamp,
)

EVENT = "course.enrollment.completed"
MAX_GROUP = 25


class Docebo:
    platform = "docebo"
    max_age = timedelta(hours=24)  # retried with backoff "up to a limit" that Docebo does not publish

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        require_token(inbound, source)
        message = obj(parse_json(inbound.body), "body")
        window = source.max_age(self.max_age)
        if message.get("event") != EVENT:
            return Parsed(ignored=f"event {message.get('event')!r} is not {EVENT}")
        message_id = ident(message.get("message_id"), "message_id")
        payloads: Any = message.get("payloads") if "payloads" in message else [message.get("payload")]
        if not isinstance(payloads, list) or not 1 <= len(payloads) <= MAX_GROUP:
            raise ValidationFailed(
                f"payloads must be a list of 1 to {MAX_GROUP} objects",
                errors=[{"field": "payloads", "message": "wrong length"}],
            )
        events = []
        for number, raw in enumerate(payloads):
            where = f"payloads[{number}]" if "payloads" in message else "payload"
            item = obj(raw, where)
            require_fresh(timestamp(item.get("fired_at"), f"{where}.fired_at"), now, window, "fired_at")
            if item.get("status", "completed") != "completed":
                continue
            learner = ident(item.get("user_id"), f"{where}.user_id")
            course = ident(item.get("course_id"), f"{where}.course_id")
            completed = timestamp(item.get("completion_date"), f"{where}.completion_date") or now
            assert learner is not None and course is not None
            events.append(
                CompletionEvent(
                    source_id=source.id,
                    platform=self.platform,
                    external_id=f"{message_id}:{learner}:{course}"[-255:],
                    learner_id=learner,
                    course_id=course,
                    completed_at=completed,
                    extra={
                        "batch": bool(message.get("fired_by_batch_action")),
                        "domain": text(message.get("original_domain")),
                    },
                )
            )
        return Parsed(tuple(events), None if events else "no completed enrollments in the message")

    def enrich(self, event: CompletionEvent, source: Source) -> CompletionEvent:
        """Name and e-mail from `GET {api_base}/manage/v1/user/{id}` (Bearer token), when configured."""
        base = source.config.get("api_base")
        if not base or not source.api_token:
            return event
        answer = fetch_json(
            f"{str(base).rstrip('/')}/manage/v1/user/{event.learner_id}",
            headers={"Authorization": f"Bearer {source.api_token}", "Accept": "application/json"},
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        user = data.get("user_data", data) if isinstance(data, dict) else {}
        user = user if isinstance(user, dict) else {}
        name = " ".join(p for p in (text(user.get("first_name")), text(user.get("last_name"))) if p)
        return replace(event, email=text(user.get("email"), 320) or event.email, name=name or event.name)


ADAPTER = Docebo()
