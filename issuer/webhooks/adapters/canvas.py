"""Canvas Live Events over HTTPS with "Sign Payload": the body is an RS256 JWT whose claims carry the event.

The keys are the ones the administrator CONFIGURED (`jwks`: Instructure publishes previous, current and next
keys and rotates monthly); a key URL named by a delivery is never fetched. The JWT's header must name a known
`kid`. Unsigned (raw JSON) deliveries are refused. `course_completed` repeats when a module's completion time
changes, so the event id is (root account, user, course): repeats are duplicates, not new completions.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ...errors import ValidationFailed
from ..event import CompletionEvent
from . import (
    Inbound,
    NoEnrichment,
    Parsed,
    Source,
    Unauthenticated,
    ident,
    maybe_obj,
    number,
    obj,
    require_fresh,
    text,
    timestamp,
)


class Canvas(NoEnrichment):
    platform = "canvas"
    max_age = timedelta(hours=1)  # Canvas retries 3 times over ~10-20 minutes

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed:
        claims = verify_jwt(inbound.body, source)
        window = source.max_age(self.max_age)
        expires = timestamp(claims.get("exp"), "exp")
        if expires is not None and expires < now:
            raise Unauthenticated("the token has expired")
        require_fresh(timestamp(claims.get("iat"), "iat"), now, window, "iat")
        event = _event_of(claims)
        metadata, body = obj(event.get("metadata"), "metadata"), obj(event.get("body"), "body")
        require_fresh(timestamp(metadata.get("event_time"), "metadata.event_time"), now, window, "event_time")
        expected_account = source.config.get("root_account_uuid")
        if expected_account and metadata.get("root_account_uuid") != expected_account:
            raise Unauthenticated("the event belongs to another Canvas account")
        if metadata.get("event_name") != "course_completed":
            return Parsed(ignored=f"event {metadata.get('event_name')!r} is not course_completed")
        progress = maybe_obj(body.get("progress"))
        done, needed = number(progress.get("requirement_completed_count")), number(progress.get("requirement_count"))
        if done is not None and needed is not None and done < needed:
            return Parsed(ignored=f"{done:g} of {needed:g} module requirements completed")
        user, course = obj(body.get("user"), "body.user"), obj(body.get("course"), "body.course")
        learner = ident(user.get("id") or metadata.get("user_id"), "body.user.id")
        course_id = ident(course.get("id"), "body.course.id")
        assert learner is not None and course_id is not None
        completed = timestamp(progress.get("completed_at"), "progress.completed_at") or timestamp(
            metadata.get("event_time"), "metadata.event_time", required=True
        )
        assert completed is not None
        account = text(metadata.get("root_account_uuid")) or text(metadata.get("hostname")) or ""
        return Parsed(
            (
                CompletionEvent(
                    source_id=source.id,
                    platform=self.platform,
                    external_id=f"{account}:{learner}:{course_id}"[-255:],
                    learner_id=learner,
                    course_id=course_id,
                    completed_at=completed,
                    email=text(user.get("email"), 320),
                    name=text(user.get("name")),
                    extra={
                        "course_name": text(course.get("name")),
                        "sis_user_id": text(metadata.get("user_sis_id")),
                        "requirements": [done, needed],
                    },
                ),
            )
        )


def verify_jwt(body: bytes, source: Source) -> dict[str, Any]:
    """RS256 only, a `kid` from the configured key set, a valid signature: else 401."""
    token = body.strip()
    if not token.startswith(b"ey") or token.count(b".") != 2:
        raise Unauthenticated("Canvas deliveries must be signed JWTs (turn on Sign Payload); this one is not")
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(b".")[0] + b"=="))
    except (ValueError, UnicodeDecodeError):
        raise Unauthenticated("the token header is unreadable") from None
    keys = source.config.get("jwks")
    if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(keys, dict):
        raise Unauthenticated("the token must be RS256 and the source must have a configured key set")
    known = {k.get("kid") for k in keys.get("keys", []) if isinstance(k, dict)}
    if not header.get("kid") or header.get("kid") not in known:
        raise Unauthenticated("the token names no configured key (kid)")
    try:
        claims = jwt.decode(token, KeySet.import_key_set(keys), algorithms=["RS256"]).claims  # type: ignore[arg-type]
    except (JoseError, ValueError):
        raise Unauthenticated("the token's signature does not verify") from None
    return dict(claims)


def _event_of(claims: dict[str, Any]) -> dict[str, Any]:
    """The claim layout is undocumented: the event is the claim set, or the one claim holding metadata + body."""
    if "metadata" in claims:
        return claims
    wrapped = [v for v in claims.values() if isinstance(v, dict) and "metadata" in v]
    if len(wrapped) != 1:
        raise ValidationFailed(
            "the token's claims hold no Live Event", errors=[{"field": "metadata", "message": "required"}]
        )
    return wrapped[0]


ADAPTER = Canvas()
