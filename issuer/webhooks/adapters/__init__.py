"""LMS adapters: each authenticates a delivery the way its platform does and normalizes it to `CompletionEvent`s.

An adapter is a value with `platform`, `max_age` (its default replay window) and `receive(inbound, source, now)`;
it may also `enrich(event, source)` from the platform's API, which runs in the background job, never in the
HTTP request. The helpers below are the shared, easy-to-get-wrong parts: constant-time comparison over every
configured secret (rotation), timestamp parsing, the replay window, JSON parsing of exact bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Protocol

import httpx

from ...errors import BadRequest, IssuerError, ValidationFailed
from ..event import CompletionEvent

PLATFORMS = ("moodle", "canvas", "teachable", "thinkific", "docebo", "openedx", "generic")
FUTURE_SKEW = timedelta(minutes=5)
API_TIMEOUT = 10.0
API_MAX_BYTES = 5_000_000


class Unauthenticated(IssuerError):
    """Forged, unsigned or wrongly signed: 401, and nothing is stored."""

    status, slug, title = 401, "webhook-unauthenticated", "The webhook delivery could not be authenticated"


class Stale(Unauthenticated):
    """A timestamp outside the replay window: treated as a replay."""

    slug, title = "webhook-stale", "The webhook delivery is outside the replay window"


class LmsApiError(Exception):
    """The LMS's own API did not answer usably (enrichment, polling): the job retries later."""


@dataclass(frozen=True)
class Inbound:
    """One delivery as received: the exact body bytes, lower-cased header names, the query string."""

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A configured source with its secrets decrypted (several during rotation). Never logged or returned."""

    id: str
    platform: str
    config: Mapping[str, Any]
    secrets: tuple[str, ...] = field(default=(), repr=False)
    signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    api_token: str | None = field(default=None, repr=False)

    def max_age(self, default: timedelta) -> timedelta:
        seconds = self.config.get("max_age_seconds")
        return timedelta(seconds=float(seconds)) if seconds else default


@dataclass(frozen=True)
class Parsed:
    """What a delivery carried: completions, or none and why (another event type, not passing, ...)."""

    events: tuple[CompletionEvent, ...] = ()
    ignored: str | None = None


class Adapter(Protocol):
    platform: str
    max_age: timedelta

    def receive(self, inbound: Inbound, source: Source, now: datetime) -> Parsed: ...

    def enrich(self, event: CompletionEvent, source: Source) -> CompletionEvent: ...


@cache
def registry() -> dict[str, Adapter]:
    """platform -> adapter (imported lazily: the adapters import the helpers of this module)."""
    from . import canvas, docebo, generic, moodle, openedx, teachable, thinkific

    adapters: list[Adapter] = [
        moodle.ADAPTER,
        canvas.ADAPTER,
        teachable.ADAPTER,
        thinkific.ADAPTER,
        docebo.ADAPTER,
        openedx.ADAPTER,
        generic.ADAPTER,
    ]
    return {a.platform: a for a in adapters}


def adapter_for(platform: str) -> Adapter:
    return registry()[platform]


class NoEnrichment:
    """Mixin for adapters whose payload carries everything the platform offers."""

    def enrich(self, event: CompletionEvent, source: Source) -> CompletionEvent:
        return event


# --------------------------------------------------------------------------------------------- authenticity


def any_matches(candidate: str | None, expected: Iterable[str]) -> bool:
    """Constant-time comparison against every expected value (no early exit reveals which one matched)."""
    if not candidate:
        return False
    found = False
    for value in expected:
        found |= hmac.compare_digest(candidate.encode(), value.encode())
    return found


def hmac_hex(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def hmac_b64(key: bytes, data: bytes) -> str:
    return base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()


def require_token(inbound: Inbound, source: Source) -> None:
    """The secret URL token (`?token=`) or, when the sender can only do Basic auth, the Basic password."""
    token = inbound.query.get("token")
    if token is None:
        token = basic_password(inbound.headers.get("authorization"), source.config.get("basic_user"))
    if not source.secrets:
        raise Unauthenticated("this source has no secret configured; set one before sending deliveries")
    if not any_matches(token, source.secrets):
        raise Unauthenticated("missing or wrong secret token")


def basic_password(header: str | None, user: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return password if user is None or hmac.compare_digest(name.encode(), str(user).encode()) else None


def require_fresh(moment: datetime | None, now: datetime, max_age: timedelta, what: str) -> None:
    """The replay window: refuse deliveries older than `max_age`, or further in the future than clock skew."""
    if moment is None:
        return
    if moment < now - max_age:
        raise Stale(f"{what} {moment.isoformat()} is older than the replay window ({int(max_age.total_seconds())} s)")
    if moment > now + FUTURE_SKEW:
        raise Stale(f"{what} {moment.isoformat()} is in the future")


# --------------------------------------------------------------------------------------------- payloads


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed(f"{where} must be a JSON object", errors=[{"field": where, "message": "not an object"}])
    return value


def maybe_obj(value: Any) -> dict[str, Any]:
    """An optional nested object: {} when absent or not an object."""
    return value if isinstance(value, dict) else {}


def ident(value: Any, where: str, *, required: bool = True) -> str | None:
    """An id the platform sends as a string or a number (Moodle mixes both)."""
    if isinstance(value, bool) or value is None or value == "":
        if required:
            raise ValidationFailed(f"{where} is missing", errors=[{"field": where, "message": "required"}])
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        if 0 < len(text) <= 255:
            return text
    raise ValidationFailed(f"{where} is not an id", errors=[{"field": where, "message": "not a string or integer id"}])


def text(value: Any, limit: int = 500) -> str | None:
    """Optional free text (names, emails): trimmed, None when empty or not a string."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value else None


def number(value: Any) -> float | None:
    """A number sent as a number or a numeric string ("24.0"); None when absent or not numeric."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and abs(result) != float("inf") else None


def timestamp(value: Any, where: str, *, required: bool = False) -> datetime | None:
    """ISO 8601 (`Z` or offset; naive = UTC), `YYYY-MM-DD HH:MM:SS` (UTC), or unix seconds (number or digits)."""
    if value is None or value == "":
        if required:
            raise ValidationFailed(f"{where} is missing", errors=[{"field": where, "message": "required"}])
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.isdigit():
                return datetime.fromtimestamp(int(stripped), UTC)
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValidationFailed(f"{where} is not a date-time", errors=[{"field": where, "message": "not a date-time"}])


def digest(*parts: str) -> str:
    """A stable event id for platforms that send none: learner, course and completion time, hashed."""
    return "sha256:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


# --------------------------------------------------------------------------------------------- platform APIs


def fetch_json(
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = API_TIMEOUT,
) -> Any:
    """GET a JSON document from an LMS API the administrator configured (so private addresses are allowed: many
    LMSs run on-premises), with a timeout and a byte cap. Raises `LmsApiError` with the status and no secrets."""
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url, params=params, headers=headers, auth=auth) as response,
        ):
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > API_MAX_BYTES:
                    raise LmsApiError(f"the LMS answer exceeds {API_MAX_BYTES} bytes")
                chunks.append(chunk)
            if response.status_code != 200:
                raise LmsApiError(f"the LMS API answered HTTP {response.status_code}")
    except httpx.HTTPError as error:
        raise LmsApiError(f"the LMS API could not be reached: {type(error).__name__}") from None
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LmsApiError("the LMS API answered something that is not JSON") from None
