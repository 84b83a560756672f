"""Completion events: stored on arrival, then decided and issued by a background job, exactly once.

`accept` runs inside the webhook request: it stores each normalized completion and its `process_completion` job
in one transaction and returns at once (the platform gets its 202 within milliseconds). A re-delivery hits the
unique (source, external id) constraint and gets the first event's id back.

`handle` is the job (run at once in the receiving process by `inline.py` where it may, the job then being the
safety net): map the course to an achievement (no mapping: the event waits as `unmapped` until
`requeue_unmapped`), enrich from the LMS API where the adapter can, decide with the pure rules, then issue, hold
for review or decline, and audit the decision. It may run twice (a retried job, two workers, the inline attempt
and its job), so every step is idempotent: the credential's idempotency key is the event id, the learner
key (one active credential per learner and achievement) is a unique index, and the event's decision is written
only while it is still `received`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, null, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from .. import audit
from ..db.engine import reader, session_scope
from ..db.rows import models_of, select_models, snapshot
from ..db.tables import Achievement, CourseMapping, Credential, Job, LmsSource, Review, utcnow
from ..db.tables import CompletionEvent as EventRow
from ..delivery import declines
from ..delivery.jobs import JobContext, enqueue, register
from ..errors import Conflict, NotFound
from ..issuance.credential import timestamp
from ..issuance.rules import AchievementRules, Hold, Issue, decide
from ..issuance.schemas import IssueRequest
from ..issuance.service import Issued
from ..keyring import decrypt_private_key, encrypt_private_key
from ..services import Services
from .adapters import Source, registry
from .event import CompletionEvent

log = logging.getLogger("issuer.webhooks")

JOB_KIND = "process_completion"


@dataclass(frozen=True)
class Accepted:
    event_id: str
    duplicate: bool
    row: EventRow | None = None  # a fresh event's row as stored: deciding it at once needs no re-read


# --------------------------------------------------------------------------------------------- secrets at rest


def secret_key_id(source_id: str) -> str:
    """The AAD of a source's sealed secrets: a blob copied to another source does not open."""
    return f"webhook:{source_id}"


def seal_secrets(master: bytes, source_id: str, values: dict[str, Any]) -> bytes:
    return encrypt_private_key(master, secret_key_id(source_id), json.dumps(values).encode())


def open_secrets(master: bytes, row: LmsSource) -> dict[str, Any]:
    if row.encrypted_secret is None:
        return {}
    opened: dict[str, Any] = json.loads(decrypt_private_key(master, secret_key_id(row.id), row.encrypted_secret))
    return opened


def source_of(master: bytes, row: LmsSource) -> Source:
    values = open_secrets(master, row)
    return Source(
        id=row.id,
        platform=row.platform,
        config=dict(row.config),
        secrets=tuple(values.get("secrets") or ()),
        signing_secrets=tuple(values.get("signing_secrets") or ()),
        api_token=values.get("api_token"),
    )


# --------------------------------------------------------------------------------------------- intake


def accept(
    services: Services, events: tuple[CompletionEvent, ...], *, defer: timedelta | None = None
) -> list[Accepted]:
    """Store each event with its job, in one transaction; a known (source, external id) answers its first id.
    `defer`: the job becomes due that much later (the event is being decided inline; the job is the safety net)."""
    results: list[Accepted] = []
    with session_scope(services.engine) as session:
        store = _STORE_EVENT[session.get_bind().dialect.name]
        for event in events:
            event_id = str(uuid.uuid4())
            # One statement: a known (source, external id) inserts nothing (PostgreSQL first waits for a twin
            # still being committed), and the delivery is answered with the first one's id.
            values: dict[str, Any] = {
                "id": event_id,
                "source_id": event.source_id,
                "external_id": event.external_id,
                "event": event.to_json(),
                "state": "received",
                "received_at": utcnow(),
            }
            stored = session.connection().execute(store, values).first()
            if stored is None:
                first = _existing(session, event)
                if first is None:  # cannot happen: the conflicting row is committed and visible
                    raise RuntimeError(f"event {event.external_id!r} conflicted but is not stored")
                results.append(Accepted(first, duplicate=True))
                continue
            enqueue(
                session,
                kind=JOB_KIND,
                subject=event_id,
                dedupe_key=f"completion:{event_id}",
                payload={"event_id": event_id},
                run_after=None if defer is None else utcnow() + defer,
            )
            results.append(Accepted(event_id, duplicate=False, row=snapshot(EventRow, values)))
    return results


_STORE_EVENT = {  # per dialect, built once: constructing the statement costs about as much as running it
    dialect.dialect.name: dialect.insert(EventRow)
    .values({name: bindparam(name) for name in ("id", "source_id", "external_id", "event", "state", "received_at")})
    .on_conflict_do_nothing(index_elements=["source_id", "external_id"])
    .returning(col(EventRow.id))
    for dialect in (postgresql, sqlite)
}


def _existing(session: Session, event: CompletionEvent) -> str | None:
    return session.exec(
        select(EventRow.id).where(EventRow.source_id == event.source_id, EventRow.external_id == event.external_id)
    ).first()


# --------------------------------------------------------------------------------------------- deciding


def idempotency_key(event_id: str) -> str:
    """Every path that issues for an event (the job, a re-run, a review's approval) uses this key: one credential."""
    return f"lms-event:{event_id}"


def learner_key(source_id: str, learner_id: str) -> str:
    """One learner as one LMS knows them; the key of "one active credential per learner and achievement"."""
    return hashlib.sha256(f"{source_id}\x1f{learner_id}".encode()).hexdigest()


@register(JOB_KIND)
def _run(context: JobContext) -> dict[str, Any]:
    return {"state": handle(context.services, str(context.job.payload["event_id"]))}


_EVENT_AND_SOURCE = (  # built once: constructing a statement costs about as much as running it
    select_models(EventRow, LmsSource)
    .join(LmsSource, col(LmsSource.id) == col(EventRow.source_id))
    .where(col(EventRow.id) == bindparam("b_event"))
)
_MAPPING_AND_RULES = (  # the mapping, and the rules of its achievement (no achievement: it was deleted since)
    select_models(CourseMapping)
    .add_columns(col(Achievement.id).label("achievement_found"), col(Achievement.rules))
    .outerjoin(Achievement, col(Achievement.id) == col(CourseMapping.achievement_id))
    .where(col(CourseMapping.source_id) == bindparam("b_source"), col(CourseMapping.course_id) == bindparam("b_course"))
)


def handle(services: Services, event_id: str, *, fresh: tuple[EventRow, Source] | None = None) -> str:
    """Decide one stored event and act on it; returns its final state. Safe to call again, or concurrently.

    `fresh`: the event's row as just stored and its source, from the request that stored it (`inline.py`): the
    same values a read would return, so it is not read back."""
    row: EventRow
    source: Source
    with reader(services.engine).connect() as connection:  # read-only snapshots, no ORM session (hot path)
        if fresh is None:
            found = connection.execute(_EVENT_AND_SOURCE, {"b_event": event_id}).first()
            if found is None:
                raise NotFound(f"no completion event {event_id!r}")
            row, source_row = models_of(found, EventRow, LmsSource)
            if row.state != "received":
                return row.state
            source = source_of(services.master_key, source_row)
        else:
            row, source = fresh
        mapped = connection.execute(
            _MAPPING_AND_RULES, {"b_source": row.source_id, "b_course": str(row.event["course_id"])}
        ).first()
    event = CompletionEvent.from_json(row.event)
    if mapped is None:  # parked, not lost: creating the mapping re-queues it (`requeue_unmapped`)
        reason = (
            f"course {event.course_id!r} is not mapped to an achievement on source {row.source_id!r}; "
            "the event waits and is decided when the mapping is created"
        )
        decision = {"outcome": "unmapped", "reason": reason, "course_id": event.course_id}
        state = conclude(services, row, None, "unmapped", decision, unless_mapped=event.course_id)
        return handle(services, event_id) if state == "received" else state  # mapped meanwhile: decide now
    mapping: CourseMapping = models_of(mapped, CourseMapping)[0]
    rules = AchievementRules.model_validate(mapped.rules or {}) if mapped.achievement_found is not None else None
    adapter = registry().get(source.platform)  # pollers (TalentLMS) have no adapter: their rows are complete
    enriched = adapter.enrich(event, source) if adapter is not None else event  # LmsApiError: the job retries
    if enriched != event:
        event = replace(enriched, extra={**enriched.extra, "enriched": True})
    return decide_and_act(services, row, event, mapping.achievement_id, rules=rules)


_RULES = sa_select(col(Achievement.rules)).where(col(Achievement.id) == bindparam("b_achievement"))  # built once


def decide_and_act(
    services: Services,
    row: EventRow,
    event: CompletionEvent,
    achievement_id: str,
    *,
    rules: AchievementRules | None = None,
) -> str:
    """`rules`: the achievement's, when the caller read them with the mapping (None: read them here; no such
    achievement any more: the event is ignored)."""
    key = learner_key(event.source_id, event.learner_id)
    with Session(reader(services.engine)) as session:
        if rules is None:
            stored_rules = session.connection().execute(_RULES, {"b_achievement": achievement_id}).first()
            if stored_rules is None:
                reason = f"the mapped achievement {achievement_id!r} no longer exists"
                return conclude(services, row, event, "ignored", {"outcome": "ignored", "reason": reason})
            rules = AchievementRules.model_validate(stored_rules[0] or {})
        held, own, known = _learner_credentials(session, key, event, row.id, [achievement_id, *rules.prerequisites])
        already = held.get(achievement_id)
        if not rules.allow_repeat and already is not None and already != own:
            reason = "the learner already holds an active credential for this achievement; no second one is issued"
            duplicate = {"outcome": "duplicate", "reason": reason, "achievement": achievement_id}
            return conclude(services, row, event, "ignored", duplicate, credential_id=already)
        names: dict[str, str] = {}
        if rules.prerequisites:
            wanted = select(Achievement.id, Achievement.name).where(col(Achievement.id).in_(rules.prerequisites))
            names = dict(session.exec(wanted).all())
    decision = decide(
        event,
        rules,
        held_achievements=set(held),
        now=services.issuance.clock(),
        known_emails=known,
        names=names,
    )
    summary = decision.to_json() | {"achievement": achievement_id}
    if isinstance(decision, Issue):

        def record(session: Session, credential: Credential) -> None:
            """The decision, written in the credential's own transaction: both commit, or neither."""
            state = record_decision(session, services, row, event, "issued", summary, credential_id=credential.id)
            if state != "issued":
                raise _AlreadyDecided(state)

        try:
            issued = issue_for(
                services,
                row.id,
                event,
                achievement_id,
                rules,
                actor=f"lms:{event.source_id}",
                within=record,
                looked_up=own is None,  # `_learner_credentials` looked for this event's credential just now
            )
        except _AlreadyDecided as decided:  # another run decided first: its decision stands, this credential not
            return decided.state
        except Conflict as error:
            return conclude(
                services,
                row,
                event,
                "ignored",
                summary | {"outcome": "duplicate", "reason": error.detail},
                credential_id=error.extensions.get("credential_id"),
            )
        if issued.replayed:  # the credential came from an earlier run of this event, which may not have concluded
            return conclude(services, row, event, "issued", summary, credential_id=issued.credential.id)
        log.info("completion %s from %s: issued", row.id, row.source_id)
        return "issued"
    if isinstance(decision, Hold):
        return conclude(services, row, event, "held", summary, review_for=achievement_id)
    return conclude(services, row, event, "declined", summary)


def issue_for(
    services: Services,
    event_id: str,
    event: CompletionEvent,
    achievement_id: str,
    rules: AchievementRules,
    *,
    actor: str,
    within: Callable[[Session, Credential], None] | None = None,
    looked_up: bool = False,
) -> Issued:
    """Issue the event's credential: idempotent per event, one active per learner unless repeats are allowed.
    `within` runs in the credential's transaction (`IssuanceService.issue`).

    Raises Conflict (with `credential_id`) when the learner already holds an active one.
    """
    results = [{"status": "Completed", "value": f"{event.score:g}%"}] if event.score is not None else None
    request = IssueRequest.model_validate(
        {
            "achievement_id": achievement_id,
            "recipient": {"email": event.email, "name": event.name},
            "results": results,
        }
    )
    key = None if rules.allow_repeat else learner_key(event.source_id, event.learner_id)
    try:
        issued = services.issuance.issue(
            request,
            actor=actor,
            idempotency_key=idempotency_key(event_id),
            learner_key=key,
            within=within,
            looked_up=looked_up,
        )
    except IntegrityError as error:
        if "learner" not in str(error.orig).lower():
            raise
        with Session(services.engine) as session:
            existing = _active(session, key or "", None, [achievement_id]).get(achievement_id)
        raise Conflict(
            "the learner already holds an active credential for this achievement; no second one is issued",
            credential_id=existing,
        ) from None
    return issued


def _active(session: Session, key: str, email: str | None, achievements: list[str]) -> dict[str, str]:
    """achievement id -> an active credential the learner holds, among `achievements` (the one at stake and its
    prerequisites): by learner key, or by email for credentials issued by hand or by another source."""
    who = [col(Credential.learner_key) == key]
    if email:
        who.append(func.lower(col(Credential.recipient_email)) == email.strip().lower())
    rows = session.exec(
        select(Credential.achievement_id, Credential.id)
        .where(col(Credential.achievement_id).in_(achievements), or_(*who), col(Credential.revoked_at).is_(None))
        .order_by(col(Credential.created_at))
    ).all()
    return {achievement: credential for achievement, credential in reversed(rows)}


def _learner_credentials(
    session: Session, key: str, event: CompletionEvent, event_id: str, achievements: list[str]
) -> tuple[dict[str, str], str | None, set[str]]:
    """One query for what the rules need to know about the learner's active credentials: which of `achievements`
    they hold, the credential this very event issued (a re-run after a crash), and the emails used before."""
    own_key = idempotency_key(event_id)
    parameters: dict[str, Any] = {"b_key": key, "b_own": own_key}
    if event.email:
        parameters |= {"b_email": event.email.strip().lower(), "b_achievements": achievements}
    rows = session.connection().execute(_LEARNER_CREDENTIALS[bool(event.email)], parameters).all()
    held = {achievement: credential for achievement, credential, *_ in rows if achievement in achievements}
    own = next((credential for _, credential, _, idem, _ in rows if idem == own_key), None)
    known = {email for _, _, learner, _, email in rows if learner == key and email}
    return held, own, known


def _learner_credentials_statement(by_email: bool) -> Any:
    who = [col(Credential.learner_key) == bindparam("b_key"), col(Credential.idempotency_key) == bindparam("b_own")]
    if by_email:
        same_email = func.lower(col(Credential.recipient_email)) == bindparam("b_email")
        who.append(and_(col(Credential.achievement_id).in_(bindparam("b_achievements", expanding=True)), same_email))
    return (
        sa_select(
            col(Credential.achievement_id),
            col(Credential.id),
            col(Credential.learner_key),
            col(Credential.idempotency_key),
            col(Credential.recipient_email),
        )
        .where(or_(*who), col(Credential.revoked_at).is_(None))
        .order_by(col(Credential.created_at).desc())
    )


# With and without the event's email; built once (constructing the statement cost more than running it).
_LEARNER_CREDENTIALS = {by_email: _learner_credentials_statement(by_email) for by_email in (False, True)}


class _AlreadyDecided(Exception):
    """Another run decided the event first (raised inside a transaction, to undo what this run wrote)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def conclude(
    services: Services,
    row: EventRow,
    event: CompletionEvent | None,
    state: str,
    decision: dict[str, Any],
    *,
    credential_id: str | None = None,
    review_for: str | None = None,
    unless_mapped: str | None = None,
) -> str:
    """Write the decision once (only while the event is still `received`), in a transaction of its own; see
    `record_decision`."""
    with session_scope(services.engine) as session:
        final = record_decision(
            session,
            services,
            row,
            event,
            state,
            decision,
            credential_id=credential_id,
            review_for=review_for,
            unless_mapped=unless_mapped,
        )
    if final == state:
        log.info("completion %s from %s: %s", row.id, row.source_id, state)
    return final


def record_decision(
    session: Session,
    services: Services,
    row: EventRow,
    event: CompletionEvent | None,
    state: str,
    decision: dict[str, Any],
    *,
    credential_id: str | None = None,
    review_for: str | None = None,
    unless_mapped: str | None = None,
) -> str:
    """Write the decision once (only while the event is still `received`), with its review and audit record, in
    the caller's transaction; returns the event's state (another run's, when it decided first).
    `event`, when given and unlike the stored one, replaces it: it carries what enrichment added, for the reviewer.
    `unless_mapped` (a course id): write nothing and return `received` if that course has a mapping by now."""
    now = utcnow()
    values: dict[str, Any] = {"state": state, "decision": decision, "credential_id": credential_id, "decided_at": now}
    if event is not None and (stored := event.to_json()) != row.event:  # enriched: keep what the LMS API added
        values["event"] = stored
    if unless_mapped is not None and mapping_of(session, row.source_id, unless_mapped, lock="share") is not None:
        return "received"
    parameters = {f"b_{name}": value for name, value in values.items()}
    changed = session.connection().execute(_DECIDE["event" in values], {"b_event_id": row.id, **parameters}).rowcount
    if changed != 1:  # another run decided first: its decision stands
        current = session.get(EventRow, row.id)
        return current.state if current is not None else state
    # Decided inline (webhooks/inline.py): the event's safety-net job, still waiting, has nothing left to do.
    session.connection().execute(
        _SAFETY_NET_DONE,
        {
            "b_dedupe_key": f"completion:{row.id}",
            "b_result": {"state": state, "inline": True},
            "b_finished_at": now,
            "b_updated_at": now,
        },
    )
    review_id = None
    if review_for is not None:
        review_id = str(uuid.uuid4())
        session.add(Review(id=review_id, event_id=row.id, achievement_id=review_for))
        session.flush()
    if state == "declined":  # the learner is told what is missing, once per event (email permitting)
        declines.enqueue_decline_email(session, services.settings, row.id, values.get("event") or row.event)
    audit.append(  # last: on PostgreSQL it holds the audit chain's lock until commit (issuance/service.py `_write`)
        session,
        actor=f"lms:{row.source_id}",
        action=f"lms.{state}",
        subject=row.id,
        data=audit_summary(decision) | {"source": row.source_id, "credential": credential_id, "review": review_id},
    )
    return state


# Statements built once (constructing one costs about as much as running it).
_DECISION_FIELDS = ("state", "decision", "credential_id", "decided_at")
_DECIDE = {
    with_event: update(EventRow)
    .where(col(EventRow.id) == bindparam("b_event_id"), col(EventRow.state) == "received")
    .values({name: bindparam(f"b_{name}") for name in (*_DECISION_FIELDS, *(("event",) if with_event else ()))})
    for with_event in (False, True)
}
_SAFETY_NET_DONE = (
    update(Job)
    .where(col(Job.dedupe_key) == bindparam("b_dedupe_key"), col(Job.state) == "pending")
    .values(
        state="succeeded",
        result=bindparam("b_result"),
        finished_at=bindparam("b_finished_at"),
        updated_at=bindparam("b_updated_at"),
    )
)


def mapping_of(session: Session, source_id: str, course_id: str, *, lock: str | None = None) -> CourseMapping | None:
    """The course's mapping on the source. `lock` orders parking against mapping: the parker takes the source row
    FOR SHARE, `requeue_unmapped` FOR NO KEY UPDATE, so on PostgreSQL one waits for the other and an event is never
    parked after the mapping's re-queue looked (SQLite: every writer already holds the one write lock)."""
    if lock is not None:
        locked = select(LmsSource.id).where(LmsSource.id == source_id)
        share = lock == "share"  # FOR SHARE, else FOR NO KEY UPDATE (which lets FK checks of new events pass)
        session.exec(locked.with_for_update(read=share, key_share=not share)).first()
    return session.exec(
        select(CourseMapping).where(CourseMapping.source_id == source_id, CourseMapping.course_id == course_id)
    ).first()


def requeue_unmapped(session: Session, mapping: CourseMapping, *, actor: str) -> list[str]:
    """Inside the transaction creating `mapping`: every event of its source and course parked as `unmapped` goes
    back to `received` with a fresh `process_completion` job (each event once: the state flip is conditional, the
    job's dedupe key names the mapping), and an audit record each. Returns their ids."""
    course = col(EventRow.event)["course_id"].as_string()
    parked = session.exec(
        select(EventRow.id).where(
            col(EventRow.source_id) == mapping.source_id, col(EventRow.state) == "unmapped", course == mapping.course_id
        )
    ).all()
    requeued = []
    for event_id in parked:
        flipped = session.exec(
            update(EventRow)
            .where(col(EventRow.id) == event_id, col(EventRow.state) == "unmapped")
            .values(state="received", decision=null(), decided_at=None)
        ).rowcount
        if flipped != 1:
            continue
        enqueue(
            session,
            kind=JOB_KIND,
            subject=event_id,
            dedupe_key=f"completion:{event_id}:mapping:{mapping.id}",
            payload={"event_id": event_id},
        )
        audit.append(
            session,
            actor=actor,
            action="lms.requeued",
            subject=event_id,
            data={"source": mapping.source_id, "course": mapping.course_id, "achievement": mapping.achievement_id},
        )
        requeued.append(event_id)
    return requeued


def audit_summary(decision: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a decision: outcome and verdict per criterion, with the numbers and module
    names, but no names or emails (the log is permanent; personal data must stay erasable elsewhere)."""
    findings = [
        {"criterion": f["criterion"], "status": f["status"]}
        | ({} if f["criterion"] in ("email", "name") else {"detail": f["detail"]})
        for f in decision.get("findings", [])
    ]
    summary = {"outcome": decision.get("outcome"), "achievement": decision.get("achievement"), "findings": findings}
    if not findings:
        summary["reason"] = decision.get("reason")
    return summary


def event_view(services: Services, row: EventRow, review: Review | None) -> dict[str, Any]:
    """An event as the API shows it: what arrived, what was decided and why, and what came of it."""
    base = services.settings.base_url
    return {
        "id": row.id,
        "source_id": row.source_id,
        "external_id": row.external_id,
        "state": row.state,
        "received_at": timestamp(row.received_at),
        "decided_at": timestamp(row.decided_at) if row.decided_at else None,
        "event": row.event,
        "decision": row.decision,
        "credential_id": row.credential_id,
        "credential_url": f"{base}/credentials/{row.credential_id}" if row.credential_id else None,
        "review": None
        if review is None
        else {"id": review.id, "state": review.state, "reason": review.reason, "decided_by": review.decided_by},
    }
