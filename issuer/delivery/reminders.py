"""Renewal reminders: emails 90 and 30 days before a credential expires and on the day it does.

Each reminder is a job scheduled for its moment (`run_after`), written in the same transaction as the credential
(`IssuanceService.issue` and `reissue` call `enqueue_renewal_reminders`), so a reminder can no more be lost than
the credential's own email. Its dedupe key is `reminder:<credential id>:<milestone>:<validUntil>`: one job per
milestone and expiry date, so issuing twice, re-running a re-issue or a retried request schedules nothing twice,
while a re-issue that moves `validUntil` schedules a new set. A reminder checks, when its time comes, that it is
still true: nothing is sent for a revoked credential, for one whose `validUntil` is no longer the one it was
scheduled for (the new date has its own reminders), for an erased address, or for an advance reminder whose date
passed while no worker ran (the expiry reminder says it better). Milestones already past when the credential is
issued (a credential valid for 40 days gets no 90-day reminder) are not scheduled.

Sent like the credential email (`mailer.send_once`: at most once per job, Reply-To the issuer), from the
templates `renewal_reminder.{subject.txt,txt,html}`, which an issuer or an operator can override the same way.
Nothing is scheduled when email is off (no `ISSUER_SMTP_HOST`), the credential has no `validUntil`, or the
recipient has no email address.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from ..db.tables import Credential, Issuer, Job
from ..settings import Settings
from . import mailer
from .jobs import JobContext, PermanentJobError, enqueue, register

KIND = "send_renewal_reminder"
TEMPLATE = "renewal_reminder"
EXPIRY = "expiry"
MILESTONES: tuple[tuple[str, int], ...] = (("90-days", 90), ("30-days", 30), (EXPIRY, 0))
"""(name, days before validUntil): the name goes into the dedupe key and the job's payload."""


def stamp(moment: datetime) -> str:
    """`validUntil` as the key and payload carry it: UTC, whole seconds, `Z`."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc(moment: datetime) -> datetime:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)


def enqueue_renewal_reminders(
    session: Session, settings: Settings, credential: Credential, *, now: datetime | None = None
) -> list[Job]:
    """Inside the issuing (or re-issuing) transaction: the reminder jobs still ahead of `now` (by default the
    credential's validFrom, i.e. the moment of issue). Returns them, or [] when none applies."""
    if not settings.smtp_host or not credential.recipient_email or credential.valid_until is None:
        return []
    until = utc(credential.valid_until)
    start = utc(now or credential.valid_from)
    jobs = []
    for milestone, days in MILESTONES:
        due = until - timedelta(days=days)
        if days and due <= start:
            continue  # already past: "expires in 90 days" would be false
        jobs.append(
            enqueue(
                session,
                kind=KIND,
                subject=credential.id,
                dedupe_key=f"reminder:{credential.id}:{milestone}:{stamp(until)}",
                payload={"credential_id": credential.id, "milestone": milestone, "valid_until": stamp(until)},
                run_after=due,
            )
        )
    return jobs


@register(KIND)
def send_renewal_reminder(ctx: JobContext) -> dict[str, Any] | None:
    if ctx.result.get("sent"):
        return None
    settings = ctx.services.settings
    sender = mailer.require_email(settings)
    payload = ctx.job.payload
    with Session(ctx.services.engine) as session:
        credential = session.get(Credential, payload["credential_id"])
        issuer = session.get(Issuer, credential.issuer_id) if credential is not None else None
    if credential is None or issuer is None:
        raise PermanentJobError(f"credential {payload['credential_id']!r} does not exist")
    if credential.revoked_at is not None:
        return {"skipped": "the credential was revoked"}
    if credential.valid_until is None or stamp(credential.valid_until) != payload["valid_until"]:
        return {"skipped": "the credential's validUntil changed; reminders for the new date replace this one"}
    if not credential.recipient_email:
        return {"skipped": "the recipient's email address is not on record (erased)"}
    now, until = ctx.clock(), utc(credential.valid_until)
    expired = payload["milestone"] == EXPIRY
    if not expired and now >= until:
        return {"skipped": "the credential expired before this reminder went out; the expiry reminder covers it"}

    context = mailer.email_context(settings, credential, issuer, has_pdf=False) | {
        "milestone": payload["milestone"],
        "expired": expired,
        "days_left": 0 if expired else max(1, math.ceil((until - now).total_seconds() / 86400)),
    }
    rendered = mailer.render(
        context, issuer_id=credential.issuer_id, templates_dir=settings.email_templates_dir, template=TEMPLATE
    )
    mid = mailer.message_id(ctx.job.dedupe_key, sender)
    message = mailer.build_message(
        sender=sender, to_address=credential.recipient_email, to_name=credential.recipient_name,
        rendered=rendered, message_id=mid, date=now, reply_to=issuer.email,
    )  # fmt: skip
    mailer.send_once(ctx, settings, message, mid)
    return None
