"""Renewal reminders (90 and 30 days before expiry, and on the day) against a real SMTP server, on SQLite and
PostgreSQL, with the worker's clock moved forward instead of waiting months."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from issuer.db.engine import session_scope
from issuer.db.tables import Credential, Job
from issuer.delivery import mailer, reminders
from issuer.delivery.jobs import run_pending
from issuer.issuance.schemas import IssueRequest
from issuer.services import Services
from issuer.settings import Settings

from .conftest import BASE
from .smtp_sink import SENDER, Sink, smtp_settings

NAME = "Zoë <script>alert(1)</script>"


@pytest.fixture
def settings(settings: Settings, sink: Sink) -> Settings:
    return smtp_settings(settings, sink)


@pytest.fixture(autouse=True)
def no_pdf(services: Services) -> None:
    """The credential emails that go out alongside do not need a certificate here (test_pdf covers it); the next
    test's `services` installs the renderer again."""
    mailer.use_pdf_source(None)


def issue(services: Services, achievement_id: str, *, days: float | None, email: str = "zoe@example.org") -> Credential:
    until = None if days is None else datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    request = IssueRequest.model_validate(
        {"achievement_id": achievement_id, "recipient": {"email": email, "name": NAME}, "valid_until": until}
    )
    return services.issuance.issue(request, actor="test").credential


def reminder_jobs(services: Services, credential_id: str) -> list[Job]:
    with Session(services.engine) as session:
        statement = select(Job).where(Job.kind == reminders.KIND, Job.subject == credential_id).order_by(col(Job.id))
        return list(session.exec(statement).all())


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def reminders_received(sink: Sink) -> list[str]:
    """Subjects of the reminder emails received so far (the credential emails say "awarded you")."""
    subjects = [str(r.message["Subject"]) for r in sink.received]
    return [s for s in subjects if "awarded you" not in s]


def test_three_reminders_each_sent_once_at_its_time(services: Services, sink: Sink, achievement_id: str) -> None:
    credential = issue(services, achievement_id, days=100)
    assert credential.valid_until is not None
    until = reminders.utc(credential.valid_until)
    jobs = reminder_jobs(services, credential.id)
    stamp = reminders.stamp(until)
    assert [j.dedupe_key for j in jobs] == [
        f"reminder:{credential.id}:90-days:{stamp}",
        f"reminder:{credential.id}:30-days:{stamp}",
        f"reminder:{credential.id}:expiry:{stamp}",
    ]
    assert [reminders.utc(j.run_after) for j in jobs] == [until - timedelta(days=90), until - timedelta(days=30), until]
    assert all(j.payload == {"credential_id": credential.id, "milestone": j.dedupe_key.split(":")[2],
                             "valid_until": stamp} for j in jobs)  # fmt: skip

    run_pending(services.engine, services, "w1")  # now: only the credential email is due
    assert len(sink.received) == 1 and reminders_received(sink) == []

    ninety = until - timedelta(days=90)
    run_pending(services.engine, services, "w1", clock=at(ninety - timedelta(seconds=1)))
    assert reminders_received(sink) == []  # not a second early
    for _ in range(2):  # the second run finds nothing left to send
        run_pending(services.engine, services, "w1", clock=at(ninety + timedelta(minutes=5)))
    assert reminders_received(sink) == ["Your credential expires in 90 days: Data Analysis"]

    message = sink.received[-1].message
    assert sink.received[-1].rcpt_tos == ["zoe@example.org"]
    assert message["From"] == SENDER and message["To"].addresses[0].display_name == NAME
    assert message["Message-ID"] == mailer.message_id(jobs[0].dedupe_key, SENDER)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    day = f"{until.day} {until:%B %Y}"
    assert f"Hello {NAME}," in text and f"expires in 90 days, on {day}" in text
    assert f"{BASE}/c/{credential.id}" in text and f'href="{BASE}/c/{credential.id}"' in html
    assert "<script>" not in html and "Zoë &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<strong>90 days</strong>, on " + day in html

    for moment in (until - timedelta(days=30), until):
        run_pending(services.engine, services, "w1", clock=at(moment))
        run_pending(services.engine, services, "w1", clock=at(moment + timedelta(days=1)))
    assert reminders_received(sink) == [
        "Your credential expires in 90 days: Data Analysis",
        "Your credential expires in 30 days: Data Analysis",
        "Your credential has expired: Data Analysis",
    ]
    assert f"expired on {day}" in sink.received[-1].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    done = reminder_jobs(services, credential.id)
    assert [(j.state, j.attempts) for j in done] == [("succeeded", 1)] * 3
    assert all(j.result is not None and j.result["sent"] is True and j.result["in_doubt"] is False for j in done)


def test_only_milestones_still_ahead_are_scheduled(services: Services, achievement_id: str) -> None:
    short = issue(services, achievement_id, days=40)
    assert [j.dedupe_key.split(":")[2] for j in reminder_jobs(services, short.id)] == ["30-days", "expiry"]
    assert reminder_jobs(services, issue(services, achievement_id, days=None).id) == []
    off = services.settings.model_copy(update={"smtp_host": None})
    with session_scope(services.engine) as session:
        assert reminders.enqueue_renewal_reminders(session, off, short) == []


def test_a_revoked_credential_gets_no_reminder(services: Services, sink: Sink, achievement_id: str) -> None:
    credential = issue(services, achievement_id, days=100)
    run_pending(services.engine, services, "w1")
    with session_scope(services.engine) as session:
        row = session.get(Credential, credential.id)
        assert row is not None
        row.revoked_at, row.revocation_reason = datetime.now(UTC), "issued in error"
    until = reminders.utc(credential.valid_until)  # type: ignore[arg-type]
    run_pending(services.engine, services, "w1", clock=at(until))
    assert reminders_received(sink) == []
    jobs = reminder_jobs(services, credential.id)
    assert [(j.state, j.result) for j in jobs] == [("succeeded", {"skipped": "the credential was revoked"})] * 3


def test_a_new_valid_until_replaces_the_reminders(services: Services, sink: Sink, achievement_id: str) -> None:
    credential = issue(services, achievement_id, days=100)
    old_until = reminders.utc(credential.valid_until)  # type: ignore[arg-type]
    reissued = services.issuance.reissue(credential.id, actor="test")  # same validUntil: nothing new
    assert len(reminder_jobs(services, credential.id)) == 3
    assert reissued.credential.valid_until == credential.valid_until

    new_until = old_until + timedelta(days=365)  # as a re-issue that extends the validity would set it
    with session_scope(services.engine) as session:
        row = session.get(Credential, credential.id)
        assert row is not None
        row.valid_until = new_until
        session.add(row)
        session.flush()
        reminders.enqueue_renewal_reminders(session, services.settings, row, now=datetime.now(UTC))
    jobs = reminder_jobs(services, credential.id)
    assert len(jobs) == 6 and {j.payload["valid_until"] for j in jobs[3:]} == {reminders.stamp(new_until)}

    run_pending(services.engine, services, "w1", clock=at(old_until))  # the old dates come: nothing is sent
    assert reminders_received(sink) == []
    stale = reminder_jobs(services, credential.id)[:3]
    assert {(j.state, (j.result or {}).get("skipped", "")[:34]) for j in stale} == {
        ("succeeded", "the credential's validUntil change")
    }
    run_pending(services.engine, services, "w1", clock=at(new_until - timedelta(days=90)))
    assert reminders_received(sink) == ["Your credential expires in 90 days: Data Analysis"]


def test_a_late_advance_reminder_is_dropped_for_the_expiry_one(
    services: Services, sink: Sink, achievement_id: str
) -> None:
    """No worker ran for months: at expiry the overdue 90- and 30-day reminders are not sent; the expiry one is."""
    credential = issue(services, achievement_id, days=100)
    until = reminders.utc(credential.valid_until)  # type: ignore[arg-type]
    run_pending(services.engine, services, "w1", clock=at(until + timedelta(hours=1)))
    assert reminders_received(sink) == ["Your credential has expired: Data Analysis"]
    results = [j.result or {} for j in reminder_jobs(services, credential.id)]
    assert [r.get("skipped", "sent")[:40] for r in results] == [
        "the credential expired before this remin",
        "the credential expired before this remin",
        "sent",
    ]


def test_an_issuer_can_word_its_own_reminders(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "renewal_reminder.subject.txt").write_text("Acme: renew {{ achievement_name }}\n")
    context = {
        "learner_name": "Ada", "achievement_name": "Welding", "issuer_name": "Acme", "issuer_url": None,
        "issuer_email": "office@acme.test", "issuer_logo": None, "issued_on": "2 January 2030",
        "expires_on": "2 January 2031", "verify_url": "https://x.test/c/1", "expired": False, "days_left": 1,
    }  # fmt: skip
    acme = mailer.render(context, issuer_id="acme", templates_dir=tmp_path, template=reminders.TEMPLATE)
    assert acme.subject == "Acme: renew Welding"
    assert "expires in 1 day, on 2 January 2031" in acme.text and "reply to this email" in acme.text
    other = mailer.render(context, issuer_id="other", templates_dir=tmp_path, template=reminders.TEMPLATE)
    assert other.subject == "Your credential expires in 1 day: Welding"
