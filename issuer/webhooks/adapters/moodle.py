"""Moodle, through the local_webhooks plugin: `\\core\\event\\course_completed` as JSON with a `token` field.

The plugin sends no signature and no timestamp header and never retries, so the body's `token` (a per-service
secret typed by the administrator) is compared in constant time, and `timecreated` bounds replays. The event has
no name, e-mail or grade: with web services configured (`site_url` + an API token) the job confirms the
completion and fetches the learner's name and e-mail; without them the completion is held for review.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ..event import CompletionEvent
from . import (
    Inbound,
    LmsApiError,
    Parsed,
    Source,
    Unauthenticated,
    any_matches,
    digest,
    fetch_json,
    ident,
    obj,
    parse_json,
    require_fresh,
    text,
    timestamp,
)

EVENT = "\\core\\event\\course_completed"


class Moodle:
    platform = "moodle"
    max_age = timedelta(hours=1)  # sent when the event fires, never retried

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        data = obj(parse_json(inbound.body), "body")
        token = data.get("token")
        if not source.secrets or not any_matches(token if isinstance(token, str) else None, source.secrets):
            raise Unauthenticated("missing or wrong token")
        expected_host = source.config.get("host")
        if expected_host and data.get("host") != expected_host:
            raise Unauthenticated("the delivery names another Moodle site")
        created = timestamp(data.get("timecreated"), "timecreated", required=True)
        require_fresh(created, now, source.max_age(self.max_age), "timecreated")
        if data.get("eventname") != EVENT:
            return Parsed(ignored=f"event {data.get('eventname')!r} is not a course completion")
        # `relateduserid` is the learner; `userid` is whoever triggered it (often cron or an admin).
        learner = ident(data.get("relateduserid"), "relateduserid")
        course = ident(data.get("courseid") or data.get("contextinstanceid"), "courseid")
        assert learner is not None and course is not None and created is not None
        event = CompletionEvent(
            source_id=source.id,
            platform=self.platform,
            external_id=digest(str(data.get("host") or ""), learner, course, str(int(created.timestamp()))),
            learner_id=learner,
            course_id=course,
            completed_at=created,
            extra={
                "moodle_host": text(data.get("host")),
                "objectid": ident(data.get("objectid"), "objectid", required=False),
            },
        )
        return Parsed((event,))

    def enrich(self, event: CompletionEvent, source: Source) -> CompletionEvent:
        """Confirm the completion and fetch name and e-mail through Moodle web services, when configured."""
        site = source.config.get("site_url")
        if not site or not source.api_token:
            return event
        url = f"{str(site).rstrip('/')}/webservice/rest/server.php"
        base = {"wstoken": source.api_token, "moodlewsrestformat": "json"}
        status = fetch_json(
            url,
            params=base
            | {
                "wsfunction": "core_completion_get_course_completion_status",
                "courseid": event.course_id,
                "userid": event.learner_id,
            },
        )
        _raise_on_exception(status)
        completed = isinstance(status, dict) and bool((status.get("completionstatus") or {}).get("completed"))
        users = fetch_json(
            url,
            params=base | {"wsfunction": "core_user_get_users_by_field", "field": "id", "values[0]": event.learner_id},
        )
        _raise_on_exception(users)
        user: dict[str, Any] = users[0] if isinstance(users, list) and users and isinstance(users[0], dict) else {}
        name = text(user.get("fullname")) or " ".join(
            p for p in (text(user.get("firstname")), text(user.get("lastname"))) if p
        )
        return replace(
            event,
            email=text(user.get("email"), 320) or event.email,
            name=name or event.name,
            extra={**event.extra, "confirmed": completed},
        )


def _raise_on_exception(answer: Any) -> None:
    """Moodle answers errors with HTTP 200 and `{"exception": ..., "errorcode": ...}`."""
    if isinstance(answer, dict) and "exception" in answer:
        raise LmsApiError(f"Moodle web services refused: {answer.get('errorcode') or answer.get('exception')}")


ADAPTER = Moodle()
