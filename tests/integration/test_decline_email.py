"""The declined-completion email, through the webhook flow (a signed delivery, the decision job, the email job),
against a real SMTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlmodel import Session, select

from issuer.db.tables import Job
from issuer.delivery import declines, mailer
from issuer.delivery.jobs import run_pending
from issuer.services import Services
from issuer.settings import Settings
from issuer.webhooks.service import handle

from .lms_payloads import Delivery, Learner, deliver, source_body
from .smtp_sink import SENDER, Sink, smtp_settings

NAME = "<script>alert('x')</script> Lovelace"


@pytest.fixture
def settings(settings: Settings, sink: Sink) -> Settings:
    return smtp_settings(settings, sink)


@pytest.fixture
def source(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> str:
    """A generic (Standard Webhooks) source whose course C-101 maps to an achievement needing a score of 70,
    90% attendance and two modules."""
    response = client.post("/api/v1/lms/sources", headers=admin, json=source_body("generic", "lms"))
    assert response.status_code == 201, response.text
    mapping = {"course_id": "C-101", "achievement_id": achievement_id}
    assert client.post("/api/v1/lms/sources/lms/mappings", headers=admin, json=mapping).status_code == 201
    rules = {"minScore": 70, "minAttendancePercent": 90, "requiredModules": ["m1", "m2"]}
    response = client.patch(f"/api/v1/achievements/{achievement_id}", headers=admin, json={"rules": rules})
    assert response.status_code == 200, response.text
    return "lms"


def post(client: TestClient[Any], source: str, delivery: Delivery, *, status: int = 202) -> str:
    response = client.post(delivery.url(source), content=delivery.body, headers=delivery.headers)
    assert response.status_code == status, response.text  # 200 for a duplicate delivery
    return str(response.json()["id"])


def run_all(services: Services) -> None:
    """Run jobs until none is due (the decision job enqueues the email job)."""
    while run_pending(services.engine, services, "test-worker"):
        pass


def state(client: TestClient[Any], admin: dict[str, str], event_id: str) -> str:
    response = client.get(f"/api/v1/lms/events/{event_id}", headers=admin)
    assert response.status_code == 200, response.text
    return str(response.json()["state"])


def decline_jobs(services: Services) -> list[Job]:
    with Session(services.engine) as session:
        return list(session.exec(select(Job).where(Job.kind == declines.KIND)).all())


def test_a_declined_learner_is_told_what_is_missing_once(
    client: TestClient[Any], admin: dict[str, str], services: Services, sink: Sink, source: str
) -> None:
    learner = Learner(name=NAME, score=41, attendance_percent=95, modules=("m1",))
    delivery = deliver("generic", learner)
    event_id = post(client, source, delivery)
    run_all(services)
    assert state(client, admin, event_id) == "declined"

    [received] = sink.received
    assert received.rcpt_tos == ["ada@example.org"]
    message = received.message
    assert message["Subject"] == "Data Analysis: what is still missing"
    assert message["From"] == SENDER and message["To"].addresses[0].display_name == NAME
    assert message["Message-ID"] == mailer.message_id(f"declined:{event_id}", SENDER)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    decision = client.get(f"/api/v1/lms/events/{event_id}", headers=admin).json()["decision"]
    missing = [f["detail"] for f in decision["findings"] if f["status"] == "unmet"]
    assert missing == ["failed assessment: score 41, at least 70 needed", "modules not completed: m2"]
    for sentence in missing:
        assert f"  - {sentence}" in text
    assert f"Hello {NAME}," in text  # plain text shows the name as written
    for line in ("Score: 41%", "Attendance: 95%", "Modules completed: m1", f"Completed: {learner.at.day} "):
        assert line in text
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Lovelace" in html
    assert f'<li style="margin:0 0 4px 0;">{missing[0]}</li>' in html

    # The same completion again (a re-delivery), the decision job re-run: still one email.
    assert post(client, source, delivery, status=200) == event_id
    assert handle(services, event_id) == "declined"
    run_all(services)
    assert len(sink.received) == 1
    [job] = decline_jobs(services)
    assert job.payload == {"event_id": event_id} and job.dedupe_key == f"declined:{event_id}"
    assert job.state == "succeeded" and job.result is not None and job.result["sent"] is True


def test_no_email_without_an_address_or_with_email_off(
    client: TestClient[Any], admin: dict[str, str], services: Services, sink: Sink, source: str
) -> None:
    no_address = post(client, source, deliver("generic", Learner(id="7", email=None, score=20)))
    run_all(services)
    assert state(client, admin, no_address) == "declined"

    off = Services(
        services.settings.model_copy(update={"smtp_host": None}), services.engine, services.master_key,
        services.issuance,
    )  # fmt: skip
    email_off = post(client, source, deliver("generic", Learner(id="8", email="bo@example.org", score=20)))
    assert handle(off, email_off) == "declined"
    assert decline_jobs(services) == [] and sink.received == []

    issued = post(client, source, deliver("generic", Learner(id="9", email="cy@example.org", score=90,
                                                           attendance_percent=99, modules=("m1", "m2"))))  # fmt: skip
    run_all(services)
    assert state(client, admin, issued) == "issued"
    assert decline_jobs(services) == []
    assert [r.message["Subject"] for r in sink.received] == ["Example Institute awarded you: Data Analysis"]


def test_the_email_is_built_from_the_stored_decision(services: Services) -> None:
    decision = {
        "reason": "Declined: prerequisite missing.",
        "findings": [
            {"criterion": "email", "status": "met", "detail": "the email address is well-formed"},
            {"criterion": "prerequisites", "status": "unmet", "detail": "prerequisite not held: Safety 101"},
        ],
    }
    assert declines.missing(decision) == ["prerequisite not held: Safety 101"]
    assert declines.missing({"reason": "Declined: something."}) == ["Declined: something."]
    points: dict[str, Any] = {
        "score": 88.5,
        "time_spent_minutes": None,
        "modules_completed": [],
        "completed_at": "2030-01-02T10:00:00+00:00",
    }
    assert declines.data_points(points) == [("Completed", "2 January 2030"), ("Score", "88.5%")]


def test_a_rejected_review_tells_the_learner_the_reviewers_reason(
    client: TestClient[Any], admin: dict[str, str], services: Services, sink: Sink, source: str, achievement_id: str
) -> None:
    # A score within the review margin of 70 is held for a person, who rejects it.
    rules = {"minScore": 70, "reviewMargin": 5, "minAttendancePercent": 90, "requiredModules": ["m1", "m2"]}
    response = client.patch(f"/api/v1/achievements/{achievement_id}", headers=admin, json={"rules": rules})
    assert response.status_code == 200, response.text
    learner = Learner(id="11", email="di@example.org", score=69, attendance_percent=95, modules=("m1", "m2"))
    event_id = post(client, source, deliver("generic", learner))
    run_all(services)
    assert state(client, admin, event_id) == "held" and sink.received == []
    [review] = client.get("/api/v1/reviews", headers=admin).json()["items"]
    reason = "The <b>final</b> project was not submitted."
    rejected = client.post(f"/api/v1/reviews/{review['id']}/reject", headers=admin, json={"reason": reason})
    assert rejected.status_code == 200, rejected.text
    run_all(services)
    assert state(client, admin, event_id) == "declined"
    [received] = sink.received
    assert received.rcpt_tos == ["di@example.org"]
    text = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = received.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert f"  - a reviewer decided: {reason}" in text
    assert "<b>final</b>" not in html and "&lt;b&gt;final&lt;/b&gt;" in html
