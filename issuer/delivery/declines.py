"""The declined-completion email: a learner whose LMS completion was declined hears what is missing.

`webhooks.service.conclude` calls `enqueue_decline_email` in the transaction that stores the decision, so the
email exists exactly when the decision does; the dedupe key `declined:<event id>` makes it one per event however
often the event is delivered or decided again. It goes only to the email address in the event itself (never one
looked up elsewhere), and only when email is on and that address is well-formed. The job's payload is the event
id alone: the address, the name and the decision are read from the stored event when the email is sent.

The email names the unmet requirements in the decision's own sentences (the reason a reviewer reads) and lists
the data points the platform reported, from `completion_declined.{subject.txt,txt,html}` (per issuer, overridable
like every email; the HTML autoescapes, so a learner called `<script>` is shown as text).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from ..db.tables import Achievement, CompletionEvent, Issuer, Job
from ..issuance.rules import email_problem
from ..settings import Settings
from . import mailer
from .jobs import JobContext, PermanentJobError, enqueue, register

KIND = "send_decline_email"
TEMPLATE = "completion_declined"


def enqueue_decline_email(session: Session, settings: Settings, event_id: str, event: Mapping[str, Any]) -> Job | None:
    """Inside the transaction that stores the `declined` decision of `event_id` (`event`: its stored JSON)."""
    email = event.get("email")
    if not settings.smtp_host or not isinstance(email, str) or email_problem(email.strip()) is not None:
        return None
    return enqueue(
        session, kind=KIND, subject=event_id, dedupe_key=f"declined:{event_id}", payload={"event_id": event_id}
    )


def missing(decision: Mapping[str, Any]) -> list[str]:
    """The unmet requirements, one sentence each; the decision's reason when it names none. A reviewer who
    rejected a held completion is quoted instead: that is the decision the learner is told about."""
    override = decision.get("override")
    if isinstance(override, dict) and override.get("approved") is False and override.get("reason"):
        return [f"a reviewer decided: {override['reason']}"]
    findings = decision.get("findings") or []
    unmet = [str(f["detail"]) for f in findings if isinstance(f, dict) and f.get("status") == "unmet"]
    return unmet or [str(decision.get("reason") or "the completion did not meet the achievement's requirements")]


def data_points(points: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the platform reported, as (label, value) lines; what it did not report is left out."""
    lines: list[tuple[str, str]] = []
    if isinstance(completed := points.get("completed_at"), str):
        try:
            moment = datetime.fromisoformat(completed)
            lines.append(("Completed", f"{moment.day} {moment:%B %Y}"))
        except ValueError:
            pass
    for key, label, unit in (
        ("score", "Score", "%"),
        ("time_spent_minutes", "Time on task", " minutes"),
        ("attendance_percent", "Attendance", "%"),
    ):
        value = points.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines.append((label, f"{value:g}{unit}"))
    modules = points.get("modules_completed")
    if isinstance(modules, list) and modules:
        lines.append(("Modules completed", ", ".join(str(m) for m in modules)))
    return lines


@register(KIND)
def send_decline_email(ctx: JobContext) -> dict[str, Any] | None:
    if ctx.result.get("sent"):
        return None
    settings = ctx.services.settings
    sender = mailer.require_email(settings)
    event_id = str(ctx.job.payload["event_id"])
    with Session(ctx.services.engine) as session:
        row = session.get(CompletionEvent, event_id)
        decision = (row.decision or {}) if row is not None else {}
        achievement = session.get(Achievement, str(decision.get("achievement") or ""))
        issuer = session.get(Issuer, achievement.issuer_id) if achievement is not None else None
    if row is None:
        raise PermanentJobError(f"completion event {event_id!r} does not exist")
    if row.state != "declined":
        return {"skipped": f"the completion is {row.state}, no longer declined"}
    email = row.event.get("email")
    if not isinstance(email, str) or not email.strip():
        return {"skipped": "the completion carries no email address"}
    if achievement is None or issuer is None:
        raise PermanentJobError(f"the achievement of completion {event_id!r} no longer exists")

    name = row.event.get("name")
    learner_name = name.strip() if isinstance(name, str) and name.strip() else None
    context = {
        "learner_name": learner_name,
        "achievement_name": achievement.name,
        "issuer_name": issuer.name,
        "issuer_url": issuer.url if mailer.is_web(issuer.url) else None,
        "issuer_email": issuer.email,
        "issuer_logo": issuer.image if mailer.is_web(issuer.image) else None,
        "missing": missing(decision),
        "data_points": data_points(decision.get("data_points") or {}),
    }
    templates = settings.email_templates_dir
    rendered = mailer.render(context, issuer_id=issuer.id, templates_dir=templates, template=TEMPLATE)
    mid = mailer.message_id(ctx.job.dedupe_key, sender)
    message = mailer.build_message(
        sender=sender, to_address=email.strip(), to_name=learner_name, rendered=rendered,
        message_id=mid, date=ctx.clock(), reply_to=issuer.email,
    )  # fmt: skip
    mailer.send_once(ctx, settings, message, mid)
    return None
