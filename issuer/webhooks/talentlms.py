"""TalentLMS has no completion webhook: a scheduled job pages its timeline (`course_completion` events) and feeds
each completion through the same `accept` as a webhook, so dedupe, rules and issuance are shared.

API v2 as documented: `GET https://{domain}.talentlms.com/api/v2/timeline`, headers `X-API-Key` and
`X-API-Version`, pages of at most 100, 2,000 requests an hour. The row layout of the v2 timeline is not
documented: rows are read in the v1 layout client libraries type (`user_id`, `user_email`, `user_fullname`,
`object_id`, `unix_timestamp`, all strings) or with nested `user`/`course` objects.

The cursor (`LmsSource.cursor`) remembers where polling stopped: the `created_from` to ask for, and the page to
resume on when a poll ended early (page budget spent, rate limited), so nothing is skipped whichever order the
API returns rows in; rows seen twice are deduplicated like webhook re-deliveries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlmodel import Session

from ..db.engine import session_scope
from ..db.tables import LmsSource, utcnow
from ..delivery.jobs import JobContext, enqueue, register
from ..errors import ValidationFailed
from ..services import Services
from .adapters import LmsApiError, Source, digest, ident, maybe_obj, number, text, timestamp
from .event import CompletionEvent
from .service import accept, source_of

log = logging.getLogger("issuer.webhooks")

JOB_KIND = "poll_talentlms"
PAGE_SIZE = 100
MAX_PAGES = 20  # per poll: 20 x 12 polls an hour stays far below 2,000 requests an hour
DEFAULT_INTERVAL = 300.0
DEFAULT_API_VERSION = "2024-01-01"  # [?] the header is documented as YYYY-MM-DD; set `api_version` to yours
MAX_BYTES = 10_000_000
EVENT_TYPE = "course_completion"


@dataclass(frozen=True)
class PollResult:
    source_id: str
    pages: int
    rows: int
    accepted: int
    duplicates: int
    cursor: str | None
    complete: bool  # every page was read (False: rate limited or out of page budget; resumes next poll)
    retry_after: float | None = None


@dataclass(frozen=True)
class Cursor:
    since: str | None = None  # created_from for the next request (ISO 8601)
    page: int = 1  # where to resume within `since`
    high: str | None = None  # the newest completion seen while paging `since`

    def dump(self) -> str:
        return json.dumps({"from": self.since, "page": self.page, "high": self.high}, separators=(",", ":"))

    @classmethod
    def load(cls, raw: str | None) -> Cursor:
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {"from": raw}  # a bare timestamp set by hand
        return cls(data.get("from"), int(data.get("page") or 1), data.get("high"))


def poll(services: Services, source_id: str, *, max_pages: int = MAX_PAGES) -> PollResult:
    """Read new `course_completion` rows, store them as completion events, move the cursor."""
    with Session(services.engine) as session:
        row = session.get(LmsSource, source_id)
        if row is None or row.platform != "talentlms":
            raise LmsApiError(f"no TalentLMS source {source_id!r}")
        source, cursor = source_of(services.master_key, row), Cursor.load(row.cursor)
    url = _base(source) + "/api/v2/timeline"
    headers = {
        "X-API-Key": source.api_token or "",
        "X-API-Version": str(source.config.get("api_version") or DEFAULT_API_VERSION),
        "Accept": "application/json",
    }
    high, page, pages, rows, accepted, duplicates = cursor.high, cursor.page, 0, 0, 0, 0
    complete, retry_after = False, None
    with httpx.Client(timeout=15.0, follow_redirects=False) as client:
        while pages < max_pages:
            params = {"event_type": EVENT_TYPE, "page": str(page), "page_size": str(PAGE_SIZE)}
            if cursor.since:
                params["created_from"] = cursor.since
            answer = _get(client, url, params, headers)
            if isinstance(answer, float):
                retry_after = answer
                break
            pages += 1
            items = _items(answer)
            events = [e for e in (_event(source, item) for item in items) if e is not None]
            rows += len(items)
            if events:
                stored = accept(services, tuple(events))
                accepted += sum(1 for s in stored if not s.duplicate)
                duplicates += sum(1 for s in stored if s.duplicate)
                newest = max(e.completed_at for e in events).isoformat()
                high = newest if high is None or newest > high else high
            if len(items) < PAGE_SIZE:
                complete = True
                break
            page += 1
    # A finished pass starts the next one at the newest completion seen (inclusive: same-second rows are re-read
    # and deduplicated); an unfinished one resumes on the next page of the same pass.
    after = Cursor(high or cursor.since, 1, None) if complete else Cursor(cursor.since, page, high)
    with session_scope(services.engine) as session:
        stored_row = session.get(LmsSource, source_id)
        if stored_row is not None:
            stored_row.cursor = after.dump()
            session.add(stored_row)
    result = PollResult(source_id, pages, rows, accepted, duplicates, after.dump(), complete, retry_after)
    log.info("TalentLMS %s: %d page(s), %d row(s), %d new", source_id, pages, rows, accepted)
    return result


def _base(source: Source) -> str:
    base = source.config.get("base_url") or f"https://{source.config.get('domain')}.talentlms.com"
    return str(base).rstrip("/")


def _get(client: httpx.Client, url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
    """The JSON answer, or the seconds to wait (float) when rate limited. Errors raise LmsApiError."""
    try:
        response = client.get(url, params=params, headers=headers)
    except httpx.HTTPError as error:
        raise LmsApiError(f"TalentLMS could not be reached: {type(error).__name__}") from None
    if response.status_code == 429:
        wait = number(response.headers.get("retry-after"))
        return float(wait) if wait is not None and wait >= 0 else 60.0
    if response.status_code != 200:
        message = ""
        with contextlib.suppress(ValueError, AttributeError):
            message = str(response.json().get("message") or "")[:200]
        raise LmsApiError(f"TalentLMS answered HTTP {response.status_code} {message}".strip())
    if len(response.content) > MAX_BYTES:
        raise LmsApiError("the TalentLMS answer is too large")
    try:
        return response.json()
    except ValueError:
        raise LmsApiError("TalentLMS answered something that is not JSON") from None


def _items(answer: Any) -> list[dict[str, Any]]:
    items = answer.get("data", answer.get("items", [])) if isinstance(answer, dict) else answer
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _event(source: Source, item: dict[str, Any]) -> CompletionEvent | None:
    """One timeline row as a completion, or None when it is another event type or lacks learner or course."""
    kind = item.get("event_type") or item.get("type") or item.get("action")
    if kind is not None and kind != EVENT_TYPE:
        return None
    user, course = maybe_obj(item.get("user")), maybe_obj(item.get("course"))
    try:
        learner = ident(user.get("id") or item.get("user_id"), "user_id", required=False)
        course_id = ident(
            course.get("id") or item.get("course_id") or item.get("object_id"), "course_id", required=False
        )
        moment = timestamp(item.get("unix_timestamp"), "unix_timestamp") or timestamp(
            item.get("created_at") or item.get("timestamp"), "created_at"
        )
    except ValidationFailed:  # one bad row must not stop the rest; it is logged and skipped
        log.warning("TalentLMS %s: skipped an unreadable timeline row", source.id)
        return None
    if learner is None or course_id is None or moment is None:
        return None
    name = (
        text(user.get("name"))
        or text(item.get("user_fullname"))
        or " ".join(p for p in (text(user.get("first_name")), text(user.get("last_name"))) if p)
    )
    row_id = ident(item.get("id"), "id", required=False)
    return CompletionEvent(
        source_id=source.id,
        platform="talentlms",
        external_id=row_id or digest(learner, course_id, str(int(moment.timestamp()))),
        learner_id=learner,
        course_id=course_id,
        completed_at=moment.astimezone(UTC),
        email=text(user.get("email"), 320) or text(item.get("user_email"), 320),
        name=name or None,
        extra={"course_name": text(course.get("name")) or text(item.get("object_name"))},
    )


# --------------------------------------------------------------------------------------------- schedule


def interval_of(source: Source | LmsSource) -> float:
    value = number(source.config.get("poll_interval_seconds"))
    return max(60.0, value) if value is not None else DEFAULT_INTERVAL


def schedule(session: Session, source_id: str, interval: float, *, slot: int | None = None) -> None:
    """Enqueue the poll for `slot` (default: the current one). The dedupe key is the slot, so schedules made by a
    retried job, two workers or repeated admin edits collapse into one chain of polls."""
    now = utcnow()
    current = math.floor(now.timestamp() / interval)
    slot = current if slot is None else max(slot, current)
    run_after = datetime.fromtimestamp(slot * interval, UTC)
    enqueue(
        session,
        kind=JOB_KIND,
        subject=source_id,
        dedupe_key=f"poll:{source_id}:{int(interval)}:{slot}",
        payload={"source_id": source_id, "slot": slot},
        run_after=max(run_after, now - timedelta(seconds=1)),
        max_attempts=5,
    )


@register(JOB_KIND)
def _run(context: JobContext) -> dict[str, Any]:
    source_id = str(context.job.payload["source_id"])
    with session_scope(context.services.engine) as session:
        row = session.get(LmsSource, source_id)
        if row is None or not row.enabled:
            return {"skipped": "the source is gone or disabled"}
        # The next poll first: a failing poll retries on its own and the chain goes on.
        schedule(session, source_id, interval_of(row), slot=int(context.job.payload.get("slot", 0)) + 1)
    result = poll(context.services, source_id)
    return {"pages": result.pages, "accepted": result.accepted, "complete": result.complete}
