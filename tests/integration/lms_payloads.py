"""Genuine-looking, correctly signed deliveries of each LMS, built from the shapes in shared/integrations.md §3-4,
and the source configuration that accepts them. Each builder can also forge, age or break its delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

SECRET = "lms-shared-secret-3f9a0c77b1d24e58"
WRONG = "an-attacker-guess-0000000000000000"
WHSEC = "whsec_" + base64.b64encode(hashlib.sha256(b"generic source key").digest()).decode()
WRONG_WHSEC = "whsec_" + base64.b64encode(b"\x01" * 32).decode()
CANVAS_KID = "canvas-2026-11"
PLATFORMS = ("moodle", "canvas", "teachable", "thinkific", "docebo", "openedx", "generic")


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""

    def url(self, source: str) -> str:
        return f"/webhooks/{source}{self.query}"


@dataclass
class Learner:
    id: str = "42"
    email: str | None = "ada@example.org"
    name: str | None = "Ada Lovelace"
    course: str = "C-101"
    score: float | None = None
    time_spent_minutes: float | None = None
    attendance_percent: float | None = None
    modules: tuple[str, ...] | None = None  # None: the field is left out of the payload (not reported)
    at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@cache
def canvas_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


def canvas_jwks() -> dict[str, Any]:
    """Previous, current and next keys, as Instructure publishes them."""
    keys = [canvas_key("canvas-2026-10"), canvas_key(CANVAS_KID), canvas_key("canvas-2026-12")]
    return {"keys": [k.as_dict(private=False) for k in keys]}


def source_body(platform: str, source_id: str, **extra_config: Any) -> dict[str, Any]:
    """POST /api/v1/lms/sources for a source that accepts this module's deliveries."""
    body: dict[str, Any] = {"id": source_id, "platform": platform, "secrets": [SECRET], "config": dict(extra_config)}
    if platform == "canvas":
        body["secrets"] = []
        body["config"]["jwks"] = canvas_jwks()
    if platform == "generic":
        body["secrets"] = [WHSEC]
    return body


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --------------------------------------------------------------------------------------------- the platforms


def moodle(who: Learner, *, secret: str = SECRET, raw: bytes | None = None) -> Delivery:
    data = {
        "eventname": "\\core\\event\\course_completed",
        "component": "core",
        "action": "completed",
        "target": "course",
        "objecttable": "course_completions",
        "objectid": "17",
        "crud": "u",
        "edulevel": 2,
        "contextid": "88",
        "contextlevel": 50,
        "contextinstanceid": who.course,
        "userid": "2",  # the admin/cron user that triggered it: never the learner
        "courseid": who.course,
        "relateduserid": who.id,
        "anonymous": 0,
        "other": None,
        "timecreated": int(who.at.timestamp()),
        "host": "moodle.example.edu",
        "token": secret,
        "extra": "",
    }
    return Delivery(raw if raw is not None else _json(data), {"Content-Type": "application/json"})


def canvas(who: Learner, *, key: RSAKey | None = None, raw: bytes | None = None) -> Delivery:
    event = {
        "metadata": {
            "event_name": "course_completed",
            "event_time": _iso(who.at),
            "producer": "canvas",
            "context_type": "Course",
            "context_id": f"2107000000000{who.course}",
            "context_role": "StudentEnrollment",
            "user_id": f"2107000000000{who.id}",
            "user_login": who.email or "",
            "user_sis_id": "456-T45",
            "root_account_id": "21070000000000001",
            "root_account_uuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs",
            "hostname": "oxana.instructure.com",
            "request_id": who.event_id,
        },
        "body": {
            "course": {"id": who.course, "name": "Computer Science I", "account_id": "79"},
            "progress": {
                "completed_at": _iso(who.at),
                "next_requirement_url": None,
                "requirement_completed_count": 6,
                "requirement_count": 6,
            },
            "user": {"id": who.id, "name": who.name, "email": who.email},
        },
    }
    signer = key or canvas_key(CANVAS_KID)
    header = {"alg": "RS256", "kid": signer.kid, "typ": "JWT"}
    token = raw if raw is not None else jwt.encode(header, event, signer).encode()
    return Delivery(token, {"Content-Type": "application/jwt"})


def teachable(who: Learner, *, secret: str = SECRET, raw: bytes | None = None) -> Delivery:
    data = [
        {
            "id": who.event_id,
            "type": "Enrollment.completed",
            "created": _iso(who.at),
            "object": {
                "id": 9911,
                "completed_at": _iso(who.at),
                "percent_complete": 100,
                "user": {"id": int(who.id), "email": who.email, "name": who.name},
                "course": {"id": who.course, "name": "Pottery for Beginners"},
            },
        }
    ]
    return Delivery(raw if raw is not None else _json(data), {"Content-Type": "application/json"}, f"?token={secret}")


def thinkific(who: Learner, *, secret: str = SECRET, raw: bytes | None = None) -> Delivery:
    first, _, last = (who.name or "").partition(" ")
    data = {
        "id": who.event_id,
        "resource": "enrollment",
        "action": "completed",
        "tenant_id": "59",
        "created_at": _iso(who.at),
        "payload": {
            "id": 3,
            "course_id": int(who.course) if who.course.isdigit() else who.course,
            "course": {"id": who.course, "name": "Intro to Thinkific"},
            "user": {"id": int(who.id), "email": who.email, "first_name": first, "last_name": last},
            "percentage_completed": "1.0",
            "activated_at": _iso(who.at - timedelta(days=3)),
            "started_at": _iso(who.at - timedelta(days=3)),
            "completed_at": _iso(who.at),
            "expiry_date": None,
            "free_trial": False,
            "created_at": _iso(who.at - timedelta(days=3)),
            "updated_at": _iso(who.at),
        },
    }
    body = raw if raw is not None else _json(data)
    headers = {
        "Content-Type": "application/json",
        "X-Thinkific-Hmac-Sha256": _hex(secret, body),
        "X-Thinkific-Topic": "enrollment.completed",
        "X-Thinkific-Subdomain": "acme",
    }
    return Delivery(body, headers)


def docebo(who: Learner, *, secret: str = SECRET, raw: bytes | None = None, group: int = 1) -> Delivery:
    stamp = who.at.strftime("%Y-%m-%d %H:%M:%S")
    payloads = [
        {
            "fired_at": stamp,
            "user_id": int(who.id) + n,
            "course_id": int(who.course) if who.course.isdigit() else who.course,
            "completion_date": stamp,
            "enrollment_date": "2026-10-01 09:00:00",
            "status": "completed",
            "level": "student",
            "subscribed_by_id": 12301,
            "enrollment_date_begin_validity": None,
            "enrollment_date_end_validity": None,
        }
        for n in range(group)
    ]
    data: dict[str, Any] = {
        "message_id": who.event_id,
        "webhook_id": 7,
        "original_domain": "acme.docebosaas.com",
        "event": "course.enrollment.completed",
        "fired_by_batch_action": group > 1,
    }
    data |= {"payloads": payloads} if group > 1 else {"payload": payloads[0]}
    return Delivery(raw if raw is not None else _json(data), {"Content-Type": "application/json"}, f"?token={secret}")


def openedx(who: Learner, *, secret: str = SECRET, raw: bytes | None = None, previous: bool = False) -> Delivery:
    data = {
        "openedx_events.learning.data.CoursePassingStatusData": {
            "is_passing": True,
            "course": {"course_key": who.course, "display_name": "Demo Course", "start": None, "end": None},
            "user": {
                "id": int(who.id),
                "is_active": True,
                "pii": {"username": "ada", "email": who.email, "name": who.name},
            },
        },
        "event_metadata": {
            "id": who.event_id,
            "event_type": "org.openedx.learning.course.passing.status.updated.v1",
            "minorversion": 0,
            "source": "openedx/lms/web",
            "sourcehost": "lms.example.edu",
            "time": who.at.isoformat(),
            "sourcelib": [1, 2, 0],
        },
    }
    body = raw if raw is not None else _json(data)
    signature = "sha256=" + _hex(secret, body)
    name = "X-OpenEdX-Webhook-Signature-Previous" if previous else "X-OpenEdX-Webhook-Signature"
    headers = {"Content-Type": "application/json", name: signature, "X-OpenEdX-Webhook-Correlation-Id": who.event_id}
    if previous:
        headers["X-OpenEdX-Webhook-Signature"] = "sha256=" + "0" * 64
    return Delivery(body, headers)


def generic(who: Learner, *, secret: str = WHSEC, raw: bytes | None = None) -> Delivery:
    data: dict[str, Any] = {
        "type": "course.completed",
        "data": {
            "learner": {"id": who.id, "email": who.email, "name": who.name},
            "course": {"id": who.course, "name": "Data Analysis"},
            "completed_at": who.at.isoformat(),
            "score": who.score,
            "time_spent_minutes": who.time_spent_minutes,
            "attendance_percent": who.attendance_percent,
        },
    }
    if who.modules is not None:
        data["data"]["modules_completed"] = list(who.modules)
    body = raw if raw is not None else _json(data)
    sent = str(int(who.at.timestamp()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signature = base64.b64encode(hmac.new(key, f"{who.event_id}.{sent}.".encode() + body, hashlib.sha256).digest())
    return Delivery(
        body,
        {
            "Content-Type": "application/json",
            "webhook-id": who.event_id,
            "webhook-timestamp": sent,
            "webhook-signature": f"v1a,ignored v1,{signature.decode()}",
        },
    )


def deliver(platform: str, who: Learner, **options: Any) -> Delivery:
    builders: dict[str, Callable[..., Delivery]] = {
        "moodle": moodle,
        "canvas": canvas,
        "teachable": teachable,
        "thinkific": thinkific,
        "docebo": docebo,
        "openedx": openedx,
        "generic": generic,
    }
    return builders[platform](who, **options)


def forged(platform: str, who: Learner) -> Delivery:
    """The same delivery signed (or tokened) with a secret the source does not know."""
    if platform == "canvas":
        return canvas(who, key=RSAKey.generate_key(2048, parameters={"kid": CANVAS_KID}))
    return deliver(platform, who, secret=WRONG_WHSEC if platform == "generic" else WRONG)


def malformed(platform: str, who: Learner) -> Delivery:
    """Correctly authenticated where the platform signs the body, but the body is not JSON."""
    if platform == "canvas":
        signer = canvas_key(CANVAS_KID)
        token = jwt.encode({"alg": "RS256", "kid": signer.kid}, {"unrelated": True}, signer).encode()
        return Delivery(token, {"Content-Type": "application/jwt"})
    return deliver(platform, who, raw=b'{"this is": not json')
