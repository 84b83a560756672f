"""Mirroring: the jobs written with a credential, the job that makes a mirror match its credential, and the admin's
view and retry.

One job kind, `mirror_credential`, payload `{credential_id, service, action, target}`. Jobs are written in the
transaction that issues, re-issues or revokes the credential (dedupe keys `mirror:<service>:<credential>:issue`,
`…:reissue:<random>`, `…:revoke`, `…:retry:<random>`), so "issued" and "will be mirrored" are one fact.

Every job converges rather than replays: it reads the credential as it is when the job runs and makes the mirror
say the same (exists, same expiry, published; or revoked). So jobs may run late, twice, or out of order. Only
`issue` and `retry` jobs create; a `reissue` or `revoke` job that finds nothing on the service yet leaves it to
the creating job, which converges after creating and so applies whatever happened meanwhile.

Exactly once. Neither service has an idempotency key. Before creating, a job that cannot be sure no earlier try
got through (a later attempt, a `create_sent` checkpoint, a retry) looks for our credential id on the service
(Credly: `issuer_earner_id` in a search by email and template; Accredible: `meta_data` in a v2 search by email
and group). A duplicate refusal is answered the same way. Credly replaces a badge to change its expiry (a new
badge id); a replace whose answer was lost is found by reading the old badge's `replacement_badge_id`.

Failures: see transport.py. While a job is being retried its mirror stays `pending` with `last_error`; once it
is dead-lettered the mirror is `failed`, and `POST /api/v1/credentials/{id}/mirror/retry` queues it again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from ... import audit
from ...db.engine import session_scope
from ...db.tables import Achievement, Credential, Job, Mirror, utcnow
from ...errors import Conflict, NotFound
from ...settings import Settings
from .. import jobs
from ..jobs import JobContext, LeaseLost, PermanentJobError, register, short_error
from . import accredible, credly
from .mapping import (
    LABELS,
    AccredibleTarget,
    CredlyTarget,
    Remote,
    Subject,
    Target,
    target_from_json,
    target_json,
    targets,
)
from .transport import Duplicate, Transport

log = logging.getLogger("issuer.mirrors")

KIND = "mirror_credential"
ACTIONS = ("issue", "reissue", "revoke")
MAX_ATTEMPTS = 10  # with the job backoff (30 s doubling, capped at 1 h): about six hours of trying
MAX_REPLACEMENT_HOPS = 5


class MirrorClient(Protocol):
    """What both clients do, in the same words (credly.py, accredible.py)."""

    service: str

    def create(self, subject: Subject) -> Remote: ...
    def get(self, external_id: str) -> Remote | None: ...
    def find(self, subject: Subject) -> Remote | None: ...
    def revoke(self, remote: Remote, subject: Subject) -> Remote | None: ...
    def set_expiry(self, remote: Remote, subject: Subject) -> Remote: ...
    def publish(self, remote: Remote) -> Remote: ...


def configured(settings: Settings) -> tuple[str, ...]:
    """The services with a token: only these are mirrored to."""
    return tuple(
        service
        for service, secret in (("credly", settings.credly_token), ("accredible", settings.accredible_api_key))
        if secret is not None and secret.get_secret_value()
    )


@contextmanager
def open_client(
    settings: Settings, service: str, target: Target, clock: Callable[[], datetime] = jobs.now_utc
) -> Iterator[MirrorClient]:
    timeout = settings.mirror_timeout
    client: MirrorClient
    if service == "credly" and isinstance(target, CredlyTarget):
        if settings.credly_token is None:
            raise PermanentJobError("Credly is not configured: set ISSUER_CREDLY_TOKEN, then retry the mirror")
        auth = credly.authorization(settings.credly_token.get_secret_value())
        transport = Transport(service, settings.credly_base_url, auth, timeout=timeout, clock=clock)
        client = credly.CredlyClient(transport, target)
    elif service == "accredible" and isinstance(target, AccredibleTarget):
        if settings.accredible_api_key is None:
            raise PermanentJobError("Accredible is not configured: set ISSUER_ACCREDIBLE_API_KEY, then retry")
        auth = accredible.authorization(settings.accredible_api_key.get_secret_value())
        transport = Transport(service, settings.accredible_base_url, auth, timeout=timeout, clock=clock)
        client = accredible.AccredibleClient(transport, target, revoke=settings.accredible_revoke)
    else:
        raise PermanentJobError(f"no mirror client for {service!r} with that target")
    with transport:
        yield client


# --------------------------------------------------------------------------------------------------- enqueue


def enqueue(session: Session, settings: Settings | None, credential: Credential, *, action: str) -> list[Job]:
    """Inside the caller's transaction: the mirror jobs for what just happened to `credential`.

    `issue`: one pending mirror (and job) per service the achievement is mapped to and that has a token; nothing,
    without a query, when no token is set. `reissue`/`revoke`: a job per existing mirror (`settings` may be None:
    the mirrors that exist decide), carrying the target the credential was first mirrored to."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if action == "issue":
        return _enqueue_new(session, settings, credential)
    added = []
    rows = session.exec(select(Mirror).where(Mirror.credential_id == credential.id)).all()
    for row in rows:
        if row.state == "removed":
            continue
        target = _known_target(session, credential, row.service)
        if target is None:
            log.warning(
                "credential %s: no %s target on record; its %s is not mirrored", credential.id, row.service, action
            )
            continue
        suffix = "revoke" if action == "revoke" else f"reissue:{uuid.uuid4().hex}"  # each re-issue is news
        if row.external_id is not None and row.state == "mirrored":
            row.state, row.updated_at = "pending", utcnow()
            session.add(row)
        added.append(_add_job(session, credential.id, row.service, action, target, suffix))
    return added


def _enqueue_new(session: Session, settings: Settings | None, credential: Credential) -> list[Job]:
    services = configured(settings) if settings is not None else ()
    if not services:
        return []
    achievement = session.get(Achievement, credential.achievement_id)
    if achievement is None or not achievement.mirror:
        return []
    try:
        wanted = targets(achievement.mirror)
    except ValueError as error:
        log.warning("achievement %s: %s; its credentials are not mirrored", achievement.id, error)
        return []
    added = []
    for service, target in wanted.items():
        if service not in services:
            continue
        no_email = not credential.recipient_email
        session.add(
            Mirror(
                credential_id=credential.id,
                service=service,
                state="failed" if no_email else "pending",
                last_error=f"{LABELS[service]} needs the recipient's email address; none was given"
                if no_email
                else None,
            )
        )
        if not no_email:
            added.append(_add_job(session, credential.id, service, "issue", target, "issue"))
    session.flush()
    return added


def _add_job(session: Session, credential_id: str, service: str, action: str, target: Target, suffix: str) -> Job:
    return jobs.enqueue(
        session,
        kind=KIND,
        subject=credential_id,
        dedupe_key=f"mirror:{service}:{credential_id}:{suffix}",
        payload={"credential_id": credential_id, "service": service, "action": action, "target": target_json(target)},
        max_attempts=MAX_ATTEMPTS,
    )


def _known_target(session: Session, credential: Credential, service: str) -> Target | None:
    """Where the credential was first mirrored to (its issue job says), else where its achievement maps now."""
    first = session.exec(select(Job).where(Job.dedupe_key == f"mirror:{service}:{credential.id}:issue")).first()
    try:
        if first is not None and isinstance(first.payload.get("target"), dict):
            return target_from_json(service, first.payload["target"])
        achievement = session.get(Achievement, credential.achievement_id)
        return targets(achievement.mirror if achievement else None).get(service)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------- the job


@register(KIND)
def mirror_credential(ctx: JobContext) -> dict[str, Any] | None:
    payload = ctx.job.payload
    service, credential_id, action = payload["service"], payload["credential_id"], payload["action"]
    engine = ctx.services.engine
    with Session(engine) as session:
        credential = session.get(Credential, credential_id)
        mirror = session.exec(
            select(Mirror).where(Mirror.credential_id == credential_id, Mirror.service == service)
        ).first()
    if credential is None or mirror is None or mirror.id is None:
        raise PermanentJobError(f"credential {credential_id!r} or its {service} mirror record does not exist")
    try:
        target = target_from_json(service, payload["target"])
        with open_client(ctx.services.settings, service, target, ctx.clock) as client:
            return _sync(ctx, client, mirror, credential, action)
    except LeaseLost:
        raise
    except Exception as error:
        dead = isinstance(error, PermanentJobError) or ctx.attempt >= ctx.job.max_attempts
        values: dict[str, Any] = {"last_error": f"{action}: {short_error(error)}"}
        _save(engine, mirror.id, ctx.clock(), **values, **({"state": "failed"} if dead else {}))
        raise


def _sync(ctx: JobContext, client: MirrorClient, mirror: Mirror, credential: Credential, action: str) -> dict[str, Any]:
    engine, label = ctx.services.engine, LABELS[client.service]
    assert mirror.id is not None
    subject = _subject(ctx.services.settings, credential)
    remote: Remote | None = None
    if mirror.external_id:
        remote = _follow(client, mirror.external_id)
        if remote is None and not subject.revoked and action != "retry":
            raise PermanentJobError(
                f"{label} no longer has {mirror.external_id} (deleted there?); retry the mirror to create it again"
            )
    if remote is None:
        unsure = action != "issue" or ctx.attempt > 1 or bool(ctx.result.get("create_sent"))
        if unsure and subject.email:
            remote = client.find(subject)
        if remote is None:
            if subject.revoked:
                _save(engine, mirror.id, ctx.clock(), state="removed", last_error=None)
                return {"state": "removed", "note": f"revoked before it reached {label}: nothing to remove"}
            if action not in ("issue", "retry"):
                return {"skipped": f"not on {label} yet; the job that creates it applies the current state"}
            if not subject.email:
                raise PermanentJobError(f"{label} needs the recipient's email address; it is not on record")
            ctx.checkpoint(create_sent=True)
            try:
                remote = client.create(subject)
            except Duplicate as duplicate:
                remote = client.find(subject)
                if remote is None:
                    raise PermanentJobError(
                        f"{label} already holds this award for the recipient, not made by this service: {duplicate}"
                    ) from None
            ctx.checkpoint(created=remote.id)
    if remote.id != mirror.external_id:
        _save(engine, mirror.id, ctx.clock(), external_id=remote.id)

    # Converge with the credential as it is now: a revocation or re-issue may have landed meanwhile.
    with Session(engine) as session:
        fresh = session.get(Credential, credential.id)
    subject = _subject(ctx.services.settings, fresh or credential)
    if subject.revoked:
        if not remote.revoked:
            client.revoke(remote, subject)
        _save(engine, mirror.id, ctx.clock(), state="removed", last_error=None, synced_at=ctx.clock())
        return {"external_id": remote.id, "state": "removed"}
    if remote.revoked:
        raise PermanentJobError(f"{label} shows {remote.id} as revoked there, but the credential is valid")
    if remote.expires_on != subject.expires_on:
        remote = client.set_expiry(remote, subject)
        _save(engine, mirror.id, ctx.clock(), external_id=remote.id)
    if not remote.published:
        remote = client.publish(remote)
        if not remote.published:
            raise PermanentJobError(
                f"{label} holds {remote.id} but did not publish it (out of credits, or sandbox mode); retry later"
            )
    _save(engine, mirror.id, ctx.clock(), state="mirrored", last_error=None, synced_at=ctx.clock())
    return {"external_id": remote.id, "state": "mirrored"}


def _follow(client: MirrorClient, external_id: str) -> Remote | None:
    """The record, or the one that replaced it (a Credly replace whose answer we may never have seen)."""
    remote = client.get(external_id)
    for _hop in range(MAX_REPLACEMENT_HOPS):
        if remote is None or remote.replaced_by is None:
            break
        remote = client.get(remote.replaced_by)
    return remote


def _subject(settings: Settings, credential: Credential) -> Subject:
    awarded = credential.document.get("awardedDate")
    try:
        awarded_at = datetime.fromisoformat(awarded.replace("Z", "+00:00")) if awarded else credential.valid_from
    except (AttributeError, ValueError):
        awarded_at = credential.valid_from
    return Subject(
        credential_id=credential.id,
        page_url=f"{settings.base_url}/c/{credential.id}",
        email=credential.recipient_email,
        name=credential.recipient_name,
        awarded_at=awarded_at,
        valid_until=credential.valid_until,
        revoked_at=credential.revoked_at,
        revocation_reason=credential.revocation_reason,
    )


def _save(engine: Engine, mirror_id: int, now: datetime, **values: Any) -> None:
    with session_scope(engine) as session:
        session.exec(update(Mirror).where(col(Mirror.id) == mirror_id).values(updated_at=now, **values))


# --------------------------------------------------------------------------------------------------- the admin's view


def view(row: Mirror) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        return audit.iso_z(moment) if moment is not None else None

    return {
        "service": row.service,
        "state": row.state,
        "external_id": row.external_id,
        "last_error": row.last_error,
        "synced_at": when(row.synced_at),
        "updated_at": when(row.updated_at),
    }


def views(engine: Engine, credential_id: str) -> list[dict[str, Any]]:
    """The credential's mirrors as the API shows them (an empty list when it is not mirrored)."""
    with Session(engine) as session:
        rows = session.exec(
            select(Mirror).where(Mirror.credential_id == credential_id).order_by(col(Mirror.service))
        ).all()
    return [view(row) for row in rows]


def retry(session: Session, credential_id: str, *, actor: str) -> list[Mirror]:
    """Queue the credential's failed mirrors again (a `retry` job each: it looks before creating). Audited."""
    credential = session.get(Credential, credential_id)
    if credential is None:
        raise NotFound(f"no credential {credential_id!r}")
    failed = session.exec(
        select(Mirror)
        .where(Mirror.credential_id == credential_id, Mirror.state == "failed")
        .order_by(col(Mirror.service))
    ).all()
    if not failed:
        raise Conflict("this credential has no failed mirror to retry")
    retried = []
    for row in failed:
        target = _known_target(session, credential, row.service)
        if target is None:
            continue
        _add_job(session, credential.id, row.service, "retry", target, f"retry:{uuid.uuid4().hex}")
        row.state, row.updated_at = "pending", utcnow()
        session.add(row)
        retried.append(row)
    if not retried:
        raise Conflict("the achievement is no longer mapped to the failed mirrors' services; nothing to retry")
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="credential.mirror_retried",
        subject=credential_id,
        data={"services": [row.service for row in retried], "last_errors": [row.last_error for row in retried]},
    )
    return retried
