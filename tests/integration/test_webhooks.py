"""LMS automation end to end, on SQLite and PostgreSQL: signed deliveries from each platform, the documented
answers to forged, stale and broken ones, the decision checklist, the review queue, and exactly-once issuance."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.testing import TestClient
from sqlmodel import Session, col, select

from issuer.app import create_app
from issuer.db.engine import session_scope
from issuer.db.tables import AuditRecord, CompletionEvent, Credential, Job, LmsSource
from issuer.delivery.jobs import run_pending
from issuer.services import Services
from issuer.settings import Settings
from issuer.webhooks import inline
from issuer.webhooks.event import CompletionEvent as StoredEvent
from issuer.webhooks.service import accept, conclude, decide_and_act, handle, source_of

from ..http_server import LocalServer
from .conftest import BASE, count, problem
from .lms_payloads import PLATFORMS, SECRET, Delivery, Learner, deliver, forged, malformed, source_body


class Lms:
    """The admin and the LMS side of a test: configure sources and mappings, deliver, wait for decisions."""

    def __init__(self, client: TestClient[Any], admin: dict[str, str], services: Services, achievement: str) -> None:
        self.client, self.admin, self.services, self.achievement = client, admin, services, achievement

    def source(self, platform: str, source_id: str | None = None, *, course: str = "C-101", **config: Any) -> str:
        source_id = source_id or f"{platform}-src"
        response = self.client.post(
            "/api/v1/lms/sources", headers=self.admin, json=source_body(platform, source_id, **config)
        )
        assert response.status_code == 201, response.text
        self.map(source_id, course)
        return source_id

    def map(self, source_id: str, course: str, achievement: str | None = None) -> None:
        body = {"course_id": course, "achievement_id": achievement or self.achievement}
        response = self.client.post(f"/api/v1/lms/sources/{source_id}/mappings", headers=self.admin, json=body)
        assert response.status_code == 201, response.text

    def rules(self, achievement: str | None = None, **rules: Any) -> None:
        response = self.client.patch(
            f"/api/v1/achievements/{achievement or self.achievement}", headers=self.admin, json={"rules": rules}
        )
        assert response.status_code == 200, response.text
        assert response.json()["rules"] == rules

    def post(self, source_id: str, delivery: Delivery) -> Any:
        return self.client.post(delivery.url(source_id), content=delivery.body, headers=delivery.headers)

    def deliver(self, source_id: str, delivery: Delivery) -> str:
        response = self.post(source_id, delivery)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def settle(self, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Run due jobs until the event is decided; return it as the API shows it."""
        deadline = time.monotonic() + timeout
        while True:
            run_pending(self.services.engine, self.services, "test-worker")
            view = self.event(event_id)
            if view["state"] != "received" or time.monotonic() > deadline:
                return view
            with Session(self.services.engine) as session:
                job = session.exec(select(Job).where(Job.dedupe_key == f"completion:{event_id}")).one()
            assert job.last_error is None, job.last_error
            time.sleep(0.02)

    def event(self, event_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/lms/events/{event_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def credentials(self) -> list[Credential]:
        with Session(self.services.engine) as session:
            return list(session.exec(select(Credential)).all())


@pytest.fixture
def lms(client: TestClient[Any], admin: dict[str, str], services: Services, achievement_id: str) -> Lms:
    return Lms(client, admin, services, achievement_id)


@pytest.fixture
def fake_lms_api() -> Iterator[LocalServer]:
    """Moodle web services and the Docebo user API, for the platforms whose events carry no name or e-mail."""
    server = LocalServer()

    def moodle(h: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(h.path).query)
        if query.get("wstoken") != ["moodle-ws-token-0123456789"]:
            answer: Any = {"exception": "moodle_exception", "errorcode": "invalidtoken"}
        elif query["wsfunction"] == ["core_completion_get_course_completion_status"]:
            answer = {"completionstatus": {"completed": True, "aggregation": 1, "completions": []}, "warnings": []}
        else:
            answer = [{"id": 42, "fullname": "Ada Lovelace", "email": "ada@example.org"}]
        _send(h, 200, answer)

    def docebo(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer docebo-api-token-0123456789":
            _send(h, 401, {"message": "unauthorized"})
            return
        _send(
            h,
            200,
            {
                "data": {
                    "user_data": {
                        "user_id": "42",
                        "first_name": "Ada",
                        "last_name": "Lovelace",
                        "email": "ada@example.org",
                    }
                }
            },
        )

    server.routes["/webservice/rest/server.php"] = moodle
    server.routes["/manage/v1/user/42"] = docebo
    with server:
        yield server


def _send(h: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    raw = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)


def enrichment(platform: str, api: LocalServer) -> dict[str, Any]:
    if platform == "moodle":
        return {"site_url": api.base}
    if platform == "docebo":
        return {"api_base": api.base}
    return {}


def with_api_token(lms: Lms, platform: str, source_id: str) -> None:
    token = {"moodle": "moodle-ws-token-0123456789", "docebo": "docebo-api-token-0123456789"}.get(platform)
    if token:
        response = lms.client.patch(f"/api/v1/lms/sources/{source_id}", headers=lms.admin, json={"api_token": token})
        assert response.status_code == 200, response.text
        assert response.json()["api_token_configured"] is True


# --------------------------------------------------------------------------------------------- per platform


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_signed_completion_issues_a_credential(lms: Lms, platform: str, fake_lms_api: LocalServer) -> None:
    source = lms.source(platform, **enrichment(platform, fake_lms_api))
    with_api_token(lms, platform, source)
    response = lms.post(source, deliver(platform, Learner()))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    assert response.headers["location"] == f"/api/v1/lms/events/{response.json()['id']}"
    view = lms.settle(response.json()["id"])
    # Decided by its first job run, with no retry or wait in between: how fast that is, is measured by
    # `python -m bench.webhooks` (docs/benchmarks.md), never by a timed test.
    with Session(lms.services.engine) as session:
        job = session.exec(select(Job).where(Job.dedupe_key == f"completion:{response.json()['id']}")).one()
    assert job.state == "succeeded" and job.attempts == 1
    assert view["state"] == "issued", view["decision"]
    assert view["decision"]["outcome"] == "issue"
    credential = lms.client.get(f"/api/v1/credentials/{view['credential_id']}", headers=lms.admin).json()
    assert credential["achievement_id"] == lms.achievement
    subject = credential["credential"]["credentialSubject"]
    assert subject["identifier"][0]["identityHash"].startswith("sha256$")
    assert credential["credential"]["proof"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_forged_delivery_gets_401_and_changes_nothing(lms: Lms, platform: str) -> None:
    source = lms.source(platform)
    events_before = count(lms.services, CompletionEvent)
    problem(lms.post(source, forged(platform, Learner())), 401, "webhook-unauthenticated")
    unsigned = deliver(platform, Learner())
    unsigned = Delivery(
        b'{"unsigned": true}' if platform == "canvas" else unsigned.body,
        {"Content-Type": "application/json"},
        "" if platform in ("teachable", "docebo") else unsigned.query,
    )
    if platform != "moodle":  # Moodle's token lives in the body: see test_moodle_without_token
        problem(lms.post(source, unsigned), 401, "webhook-unauthenticated")
    assert count(lms.services, CompletionEvent) == events_before == 0
    assert lms.credentials() == []


def test_moodle_without_token(lms: Lms) -> None:
    source = lms.source("moodle")
    body = json.loads(deliver("moodle", Learner()).body)
    del body["token"]
    problem(lms.post(source, Delivery(json.dumps(body).encode())), 401, "webhook-unauthenticated")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_stale_delivery_is_refused_as_a_replay(lms: Lms, platform: str) -> None:
    source = lms.source(platform)
    old = Learner(at=Learner().at - timedelta(days=3))
    body = problem(lms.post(source, deliver(platform, old)), 401, "webhook-stale")
    assert "replay window" in body["detail"]
    future = Learner(at=Learner().at + timedelta(hours=1))
    problem(lms.post(source, deliver(platform, future)), 401, "webhook-stale")
    assert count(lms.services, CompletionEvent) == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_malformed_body_is_refused(lms: Lms, platform: str) -> None:
    source = lms.source(platform)
    response = lms.post(source, malformed(platform, Learner()))
    if platform == "canvas":
        problem(response, 422, "validation")  # a genuine token whose claims hold no Live Event
    else:
        problem(response, 400, "bad-request")
    assert count(lms.services, CompletionEvent) == 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_completion_without_email_is_held_for_review(lms: Lms, platform: str) -> None:
    source = lms.source(platform)  # Moodle and Docebo: no API configured, so no e-mail either
    view = lms.settle(lms.deliver(source, deliver(platform, Learner(email=None))))
    assert view["state"] == "held"
    assert "the platform sent no email address for the learner" in view["decision"]["reason"]
    assert view["review"]["state"] == "pending"
    assert lms.credentials() == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_unknown_course_waits_for_its_mapping_with_a_reason(lms: Lms, platform: str) -> None:
    source = lms.source(platform, course="another-course")
    view = lms.settle(lms.deliver(source, deliver(platform, Learner(course="C-999"))))
    assert view["state"] == "unmapped"
    assert view["decision"] == {
        "outcome": "unmapped",
        "reason": f"course 'C-999' is not mapped to an achievement on source '{source}'; the event waits and is "
        "decided when the mapping is created",
        "course_id": "C-999",
    }
    assert lms.credentials() == []


def test_events_waiting_for_a_mapping_are_decided_once_when_it_is_created(lms: Lms) -> None:
    source = lms.source("generic", course="C-101")
    waiting = [
        lms.deliver(source, deliver("generic", Learner(id=str(n), email=f"l{n}@example.org", course="C-999", score=90)))
        for n in (1, 2)
    ]
    other = lms.deliver(source, deliver("generic", Learner(id="3", email="l3@example.org", course="C-888")))
    declined = lms.deliver(
        source, deliver("generic", Learner(id="4", email="l4@example.org", course="C-999", score=10))
    )
    for event_id in [*waiting, other, declined]:
        assert lms.settle(event_id)["state"] == "unmapped"
    listed = lms.client.get(f"/api/v1/lms/events?source_id={source}&state=unmapped", headers=lms.admin).json()
    assert listed["total"] == 4
    assert {e["id"] for e in listed["items"]} == {*waiting, other, declined}
    problem(lms.client.get("/api/v1/lms/events?state=lost", headers=lms.admin), 422, "validation")

    lms.rules(minScore=50)
    url = f"/api/v1/lms/sources/{source}/mappings"
    created = lms.client.post(url, headers=lms.admin, json={"course_id": "C-999", "achievement_id": lms.achievement})
    assert created.status_code == 201, created.text
    assert sorted(created.json()["requeued_events"]) == sorted([*waiting, declined])
    assert lms.event(waiting[0])["state"] == "received" and lms.event(waiting[0])["decision"] is None
    states = {event_id: lms.settle(event_id)["state"] for event_id in [*waiting, declined]}
    assert states == {waiting[0]: "issued", waiting[1]: "issued", declined: "declined"}
    assert lms.event(declined)["decision"]["reason"] == "Declined: failed assessment: score 10, at least 50 needed."
    assert lms.event(other)["state"] == "unmapped"  # another course: still waiting
    assert len(lms.credentials()) == 2

    # Once: more job runs, the same completions delivered again, and the mapping re-created change nothing.
    run_pending(lms.services.engine, lms.services, "test-worker")
    for n in (1, 2):
        assert (
            lms.post(
                source, deliver("generic", Learner(id=str(n), email=f"l{n}@example.org", course="C-999", score=90))
            ).status_code
            == 202
        )
    for event_id in [
        e["id"] for e in lms.client.get("/api/v1/lms/events?state=received", headers=lms.admin).json()["items"]
    ]:
        assert lms.settle(event_id)["state"] == "ignored"  # the learner already holds it: no second credential
    mapping = created.json()["id"]
    assert lms.client.delete(f"{url}/{mapping}", headers=lms.admin).status_code == 204
    again = lms.client.post(url, headers=lms.admin, json={"course_id": "C-999", "achievement_id": lms.achievement})
    assert again.json()["requeued_events"] == []
    assert len(lms.credentials()) == 2
    with Session(lms.services.engine) as session:
        trail = session.exec(
            select(AuditRecord.action).where(AuditRecord.subject == waiting[0]).order_by(col(AuditRecord.id))
        ).all()
    assert trail == ["lms.unmapped", "lms.requeued", "lms.issued"]


def test_a_requeued_event_handled_concurrently_issues_once(lms: Lms) -> None:
    source = lms.source("generic", course="C-101")
    event_id = lms.deliver(source, deliver("generic", Learner(course="C-999")))
    assert lms.settle(event_id)["state"] == "unmapped"
    lms.map(source, "C-999")
    barrier = threading.Barrier(6)

    def run(_: int) -> str:
        barrier.wait()
        return handle(lms.services, event_id)

    with ThreadPoolExecutor(max_workers=6) as pool:
        states = set(pool.map(run, range(6)))
    assert states == {"issued"}
    assert len(lms.credentials()) == 1
    assert lms.settle(event_id)["state"] == "issued"  # the re-queue job finds it decided
    assert len(lms.credentials()) == 1


def test_an_event_is_not_parked_once_its_course_is_mapped(lms: Lms) -> None:
    """The race between parking an event and creating its mapping: the parker re-checks under the source's lock
    and, finding the mapping, leaves the event `received` and decides it instead."""
    source = lms.source("generic", course="C-101")
    event_id = lms.deliver(source, deliver("generic", Learner(course="C-999")))
    with Session(lms.services.engine) as session:
        row = session.get(CompletionEvent, event_id)
    assert row is not None
    lms.map(source, "C-999")  # after handle() looked for a mapping, before it parks the event
    parked = {"outcome": "unmapped", "reason": "not mapped"}
    assert conclude(lms.services, row, None, "unmapped", parked, unless_mapped="C-999") == "received"
    assert lms.event(event_id)["state"] == "received"
    assert lms.settle(event_id)["state"] == "issued"


def test_unknown_or_disabled_source_is_404(lms: Lms) -> None:
    problem(lms.post("nope", deliver("generic", Learner())), 404, "not-found")
    source = lms.source("generic")
    lms.client.patch(f"/api/v1/lms/sources/{source}", headers=lms.admin, json={"enabled": False})
    problem(lms.post(source, deliver("generic", Learner())), 404, "not-found")


def test_oversized_body_is_413(lms: Lms) -> None:
    source = lms.source("generic")
    response = lms.client.post(
        f"/webhooks/{source}", content=b"x" * 300_000, headers={"Content-Type": "application/json"}
    )
    problem(response, 413, "payload-too-large")


def test_other_events_are_acknowledged_and_ignored(lms: Lms) -> None:
    source = lms.source("openedx")
    data = json.loads(deliver("openedx", Learner()).body)
    data["openedx_events.learning.data.CoursePassingStatusData"]["is_passing"] = False
    from .lms_payloads import openedx

    response = lms.post(source, openedx(Learner(), raw=json.dumps(data).encode()))
    assert response.status_code == 200 and response.json() == {
        "status": "ignored",
        "reason": "the learner is not passing",
    }
    assert count(lms.services, CompletionEvent) == 0


def test_openedx_secret_rotation_accepts_the_previous_header(lms: Lms) -> None:
    source = lms.source("openedx")
    assert lms.settle(lms.deliver(source, deliver("openedx", Learner(), previous=True)))["state"] == "issued"


def test_docebo_grouped_payloads_become_one_event_each(lms: Lms) -> None:
    source = lms.source("docebo")
    response = lms.post(source, deliver("docebo", Learner(), group=3))
    assert response.status_code == 202
    assert len({e["id"] for e in response.json()["events"]}) == 3


# --------------------------------------------------------------------------------------------- the checklist


def test_failed_assessment_is_declined_with_reason(lms: Lms) -> None:
    source = lms.source("generic")
    lms.rules(minScore=70, reviewMargin=2)
    view = lms.settle(lms.deliver(source, deliver("generic", Learner(score=41))))
    assert view["state"] == "declined"
    assert view["decision"]["reason"] == "Declined: failed assessment: score 41, at least 70 needed."
    assert lms.credentials() == []


def test_time_threshold_missed_is_held(lms: Lms) -> None:
    source = lms.source("generic")
    lms.rules(minTimeMinutes=120)
    view = lms.settle(lms.deliver(source, deliver("generic", Learner(time_spent_minutes=35))))
    assert view["state"] == "held"
    assert "time threshold missed: 35 minutes on task, 120 expected" in view["decision"]["reason"]


def test_learner_data_mismatch_is_held(lms: Lms) -> None:
    source = lms.source("generic", course="C-101")
    other = lms.client.post(
        "/api/v1/achievements",
        headers=lms.admin,
        json={"name": "Advanced", "description": "Next level.", "criteria": {"narrative": "Finish C-202."}},
    ).json()["id"]
    lms.map(source, "C-202", other)
    assert lms.settle(lms.deliver(source, deliver("generic", Learner())))["state"] == "issued"
    changed = Learner(course="C-202", email="someone.else@example.net")
    view = lms.settle(lms.deliver(source, deliver("generic", changed)))
    assert view["state"] == "held"
    assert "learner data mismatch" in view["decision"]["reason"]


def test_prerequisite_missing_is_declined_with_the_gap_named(lms: Lms) -> None:
    source = lms.source("generic")
    basics = lms.client.post(
        "/api/v1/achievements",
        headers=lms.admin,
        json={"name": "Welding Basics", "description": "First.", "criteria": {"narrative": "Pass basics."}},
    ).json()["id"]
    lms.rules(prerequisites=[basics])
    view = lms.settle(lms.deliver(source, deliver("generic", Learner())))
    assert view["state"] == "declined"
    assert view["decision"]["reason"] == f"Declined: prerequisite not held: 'Welding Basics' ({basics})."


def test_all_requirements_met_issue_and_the_decision_is_audited(lms: Lms) -> None:
    source = lms.source("generic")
    lms.rules(minScore=70, minTimeMinutes=60, minAttendancePercent=80, requiredModules=["m1", "m2"])
    who = Learner(score=88, time_spent_minutes=240, attendance_percent=95, modules=("m1", "m2", "m3"))
    view = lms.settle(lms.deliver(source, deliver("generic", who)))
    assert view["state"] == "issued"
    assert {f["criterion"]: f["status"] for f in view["decision"]["findings"]} == {
        "email": "met", "name": "met", "score": "met", "time": "met", "attendance": "met", "modules": "met",
    }  # fmt: skip
    credential = lms.client.get(f"/api/v1/credentials/{view['credential_id']}", headers=lms.admin).json()
    assert credential["credential"]["credentialSubject"]["result"][0]["value"] == "88%"
    with Session(lms.services.engine) as session:
        record = session.exec(select(AuditRecord).where(AuditRecord.action == "lms.issued")).one()
    assert record.subject == view["id"] and record.data["credential"] == view["credential_id"]
    assert "ada@example.org" not in json.dumps(record.data), "no personal data in the permanent audit log"


def test_fifty_simultaneous_completions_make_fifty_credentials(lms: Lms) -> None:
    source = lms.source("generic")
    learners = [Learner(id=str(1000 + n), email=f"learner{n}@example.org", name=f"Learner {n}") for n in range(50)]
    with ThreadPoolExecutor(max_workers=25) as pool:
        ids = list(pool.map(lambda who: lms.deliver(source, deliver("generic", who)), learners))
    assert len(set(ids)) == 50

    def work(worker: int) -> None:
        while run_pending(lms.services.engine, lms.services, f"worker-{worker}", limit=5):
            pass

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(4)))
    states = [lms.settle(i)["state"] for i in ids]
    assert states == ["issued"] * 50
    assert len({c.recipient_email for c in lms.credentials()}) == 50


def test_manual_approval_issues_with_the_override_in_the_audit_log(lms: Lms) -> None:
    source = lms.source("generic")
    lms.rules(minScore=70, reviewMargin=5)
    view = lms.settle(lms.deliver(source, deliver("generic", Learner(score=68))))
    assert view["state"] == "held"
    queue = lms.client.get("/api/v1/reviews", headers=lms.admin).json()
    assert queue["total"] == 1
    review = queue["items"][0]
    assert review["held_because"] == ["the score 68 is just below the minimum 70 (within the review margin of 5)"]
    approved = lms.client.post(
        f"/api/v1/reviews/{review['id']}/approve", headers=lms.admin, json={"note": "Oral exam passed."}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved" and approved.json()["decided_by"].startswith("api-key:")
    event = lms.event(view["id"])
    assert event["state"] == "issued" and event["credential_id"] == approved.json()["credential_id"]
    assert event["decision"]["override"]["approved"] is True
    with Session(lms.services.engine) as session:
        record = session.exec(select(AuditRecord).where(AuditRecord.action == "review.approved")).one()
    assert record.actor == approved.json()["decided_by"]
    assert record.data["overrode"] == [{"criterion": "score", "status": "review"}]
    assert record.data["credential"] == event["credential_id"]
    again = lms.client.post(f"/api/v1/reviews/{review['id']}/approve", headers=lms.admin, json={})
    problem(again, 409, "conflict")
    assert len(lms.credentials()) == 1


def test_approval_can_supply_a_missing_email_and_reject_gives_a_reason(lms: Lms) -> None:
    source = lms.source("generic")
    held = lms.settle(lms.deliver(source, deliver("generic", Learner(email=None))))
    review_id = held["review"]["id"]
    problem(lms.client.post(f"/api/v1/reviews/{review_id}/approve", headers=lms.admin, json={}), 422, "validation")
    done = lms.client.post(
        f"/api/v1/reviews/{review_id}/approve", headers=lms.admin, json={"email": "ada@example.org"}
    ).json()
    assert lms.event(held["id"])["decision"]["override"]["corrected"] == ["email"]
    assert done["credential_id"]

    other = lms.settle(lms.deliver(source, deliver("generic", Learner(id="77", name=None, email="bo@example.org"))))
    rejected = lms.client.post(
        f"/api/v1/reviews/{other['review']['id']}/reject", headers=lms.admin, json={"reason": "Not a real learner."}
    )
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert lms.event(other["id"])["state"] == "declined"
    problem(
        lms.client.post(f"/api/v1/reviews/{other['review']['id']}/reject", headers=lms.admin, json={}),
        422,
        "validation",
    )
    again = {"reason": "Twice."}
    problem(
        lms.client.post(f"/api/v1/reviews/{other['review']['id']}/reject", headers=lms.admin, json=again),
        409,
        "conflict",
    )


# --------------------------------------------------------------------------------------------- exactly once


def test_the_same_completion_twice_and_ten_times(lms: Lms) -> None:
    source = lms.source("thinkific")
    delivery = deliver("thinkific", Learner())
    first = lms.deliver(source, delivery)
    for _ in range(9):
        again = lms.post(source, delivery)
        assert again.status_code == 200, again.text
        assert again.json() == {"status": "duplicate", "id": first, "events": [{"id": first, "duplicate": True}]}
    lms.settle(first)
    assert lms.post(source, delivery).json()["id"] == first  # and after it was decided
    assert len(lms.credentials()) == 1 and count(lms.services, CompletionEvent) == 1


def test_the_same_completion_delivered_concurrently(lms: Lms) -> None:
    source = lms.source("generic")
    delivery = deliver("generic", Learner())
    barrier = threading.Barrier(10)

    def send(_: int) -> str:
        barrier.wait()
        response = lms.post(source, delivery)
        assert response.status_code in (200, 202), response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = set(pool.map(send, range(10)))
    assert len(ids) == 1
    assert lms.settle(ids.pop())["state"] == "issued"
    assert len(lms.credentials()) == 1


def test_one_event_handled_concurrently_issues_once_and_audits_once(lms: Lms) -> None:
    source = lms.source("generic")
    event_id = lms.deliver(source, deliver("generic", Learner()))
    barrier = threading.Barrier(8)

    def run(_: int) -> str:
        barrier.wait()
        return handle(lms.services, event_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        states = set(pool.map(run, range(8)))
    assert states == {"issued"}
    assert len(lms.credentials()) == 1
    with Session(lms.services.engine) as session:
        decisions = session.exec(select(AuditRecord).where(AuditRecord.subject == event_id)).all()
    assert [d.action for d in decisions] == ["lms.issued"]


def test_the_credential_and_the_decision_commit_together(lms: Lms) -> None:
    """An event another run decided while this one was signing: the credential this run made is undone with its
    decision (one transaction), so no credential exists without the decision that produced it."""
    source = lms.source("generic")
    event_id = lms.deliver(source, deliver("generic", Learner()))
    with Session(lms.services.engine) as session:
        row = session.get(CompletionEvent, event_id)
        assert row is not None
    with session_scope(lms.services.engine) as session:  # decided elsewhere, after this run read the event
        stored = session.get(CompletionEvent, event_id)
        assert stored is not None
        stored.state = "declined"
        session.add(stored)
    state = decide_and_act(lms.services, row, StoredEvent.from_json(row.event), lms.achievement)
    assert state == "declined"
    assert lms.credentials() == []
    with Session(lms.services.engine) as session:
        actions = session.exec(
            select(AuditRecord.action).where(col(AuditRecord.action).startswith("credential."))
        ).all()
    assert actions == []  # the credential's own audit record was undone with it


def test_different_deliveries_of_one_completion_concurrently(lms: Lms) -> None:
    """Two events (say Thinkific re-sent with a new id) for the same learner and course: one active credential."""
    source = lms.source("generic")
    ids = [lms.deliver(source, deliver("generic", Learner())) for _ in range(6)]
    barrier = threading.Barrier(len(ids))

    def run(event_id: str) -> str:
        barrier.wait()
        return handle(lms.services, event_id)

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        states = sorted(pool.map(run, ids))
    assert states == ["ignored"] * 5 + ["issued"]
    assert len(lms.credentials()) == 1
    duplicates = [lms.event(i) for i in ids if lms.event(i)["state"] == "ignored"]
    assert {d["credential_id"] for d in duplicates} == {lms.credentials()[0].id}


def test_after_the_credential_exists(lms: Lms) -> None:
    source = lms.source("generic")
    manual = lms.client.post(
        "/api/v1/credentials",
        headers=lms.admin,
        json={"achievement_id": lms.achievement, "recipient": {"email": "ada@example.org", "name": "Ada Lovelace"}},
    )
    assert manual.status_code == 201
    view = lms.settle(lms.deliver(source, deliver("generic", Learner())))
    assert view["state"] == "ignored" and view["credential_id"] == manual.json()["id"]
    assert "already holds an active credential" in view["decision"]["reason"]
    assert len(lms.credentials()) == 1


def test_a_repeat_completion_issues_again_only_when_allowed(lms: Lms) -> None:
    source = lms.source("generic")
    assert lms.settle(lms.deliver(source, deliver("generic", Learner())))["state"] == "issued"
    assert lms.settle(lms.deliver(source, deliver("generic", Learner())))["state"] == "ignored"
    lms.rules(allowRepeat=True)
    assert lms.settle(lms.deliver(source, deliver("generic", Learner())))["state"] == "issued"
    assert len(lms.credentials()) == 2


def test_a_revoked_credential_lets_the_learner_earn_it_again(lms: Lms) -> None:
    source = lms.source("generic")
    first = lms.settle(lms.deliver(source, deliver("generic", Learner())))
    revoked = lms.client.post(
        f"/api/v1/credentials/{first['credential_id']}/revoke", headers=lms.admin, json={"reason": "Issued in error."}
    )
    assert revoked.status_code == 200
    assert lms.settle(lms.deliver(source, deliver("generic", Learner())))["state"] == "issued"


# --------------------------------------------------------------------------------------------- decided at once


@pytest.fixture
def inline_lms(settings: Settings, services: Services, admin: dict[str, str]) -> Iterator[Lms]:
    """The served configuration: an embedded job worker, so a completion is decided in the receiving process."""
    embedded = settings.model_copy(update={"jobs_embedded": True})
    live = dataclasses.replace(services, settings=embedded)
    with TestClient(create_app(embedded, live), base_url=BASE) as client:
        created = client.post(
            "/api/v1/achievements",
            headers=admin,
            json={"name": "Data Analysis", "description": "Analysed.", "criteria": {"narrative": "Pass."}},
        )
        assert created.status_code == 201, created.text
        yield Lms(client, admin, live, str(created.json()["id"]))


def _job_of(lms: Lms, event_id: str) -> Job:
    with Session(lms.services.engine) as session:
        return session.exec(select(Job).where(Job.dedupe_key == f"completion:{event_id}")).one()


def test_a_completion_is_decided_right_after_its_202_and_its_job_never_runs(inline_lms: Lms) -> None:
    source = inline_lms.source("generic")
    event_id = inline_lms.deliver(source, deliver("generic", Learner()))
    view = inline_lms.settle(event_id)  # nothing is due: the job waits out its grace; the pool decides
    assert view["state"] == "issued", view["decision"]
    job = _job_of(inline_lms, event_id)
    assert (job.state, job.attempts, job.result) == ("succeeded", 0, {"state": "issued", "inline": True})
    assert job.run_after - job.created_at >= inline.GRACE - timedelta(seconds=1)
    assert len(inline_lms.credentials()) == 1


def test_the_row_decided_at_once_is_the_row_stored(lms: Lms) -> None:
    """The inline decision is handed the event's row from `accept` instead of reading it back: it must be the
    same row a read returns, and deciding it must come out as deciding the stored event does."""
    source = lms.source("generic")
    with Session(lms.services.engine) as session:
        source_row = session.get(LmsSource, source)
        assert source_row is not None
    event = StoredEvent(
        source_id=source, platform="generic", external_id="evt-1", learner_id="L-1", course_id="C-101",
        completed_at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC), email="ada@example.org", name="Ada Lovelace",
        score=91.5, modules_completed=("m1", "m2"), extra={"cohort": {"name": "Autumn"}},
    )  # fmt: skip
    (fresh,) = accept(lms.services, (event,))
    assert fresh.row is not None and not fresh.duplicate
    with Session(lms.services.engine) as session:
        stored = session.get(CompletionEvent, fresh.event_id)
        assert stored is not None
        read = stored.model_dump(exclude={"received_at"})
    assert fresh.row.model_dump(exclude={"received_at"}) == read
    assert StoredEvent.from_json(fresh.row.event) == event
    assert (
        handle(lms.services, fresh.event_id, fresh=(fresh.row, source_of(lms.services.master_key, source_row)))
        == "issued"
    )
    assert lms.event(fresh.event_id)["state"] == "issued"
    (again,) = accept(lms.services, (event,))
    assert (again.event_id, again.duplicate, again.row) == (fresh.event_id, True, None)


def test_when_deciding_at_once_fails_the_job_decides_after_the_grace(inline_lms: Lms) -> None:
    """Docebo's user API is down: the inline attempt gives up, the stored event and its job are untouched, and
    the job (due after the grace) decides it once the API answers."""
    api = LocalServer()
    with api:
        unreachable = api.base
    source = inline_lms.source("docebo", api_base=unreachable)
    with_api_token(inline_lms, "docebo", source)
    event_id = inline_lms.deliver(source, deliver("docebo", Learner()))
    engine, services = inline_lms.services.engine, inline_lms.services
    deadline = time.monotonic() + 10
    while inline.in_flight() and time.monotonic() < deadline:  # the inline attempt is under way
        time.sleep(0.02)
    assert inline.in_flight() == 0
    assert inline_lms.event(event_id)["state"] == "received"
    job = _job_of(inline_lms, event_id)
    assert (job.state, job.attempts) == ("pending", 0)
    assert run_pending(engine, services, "test-worker") == 0  # not due yet

    with LocalServer() as docebo_api:
        docebo_api.routes["/manage/v1/user/42"] = lambda h: _send(
            h, 200, {"data": {"user_data": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org"}}}
        )
        patched = inline_lms.client.patch(
            f"/api/v1/lms/sources/{source}", headers=inline_lms.admin, json={"config": {"api_base": docebo_api.base}}
        )
        assert patched.status_code == 200, patched.text
        later = job.run_after + timedelta(seconds=1)
        assert run_pending(engine, services, "test-worker", clock=lambda: later) == 1
    view = inline_lms.event(event_id)
    assert view["state"] == "issued", view["decision"]
    assert _job_of(inline_lms, event_id).state == "succeeded"


# --------------------------------------------------------------------------------------------- the admin API


def test_sources_never_return_secrets_and_validate_their_config(lms: Lms) -> None:
    body = source_body("thinkific", "acme")
    created = lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=body)
    assert created.status_code == 201
    listed = lms.client.get("/api/v1/lms/sources", headers=lms.admin)
    for text in (created.text, listed.text, lms.client.get("/api/v1/lms/sources/acme", headers=lms.admin).text):
        assert SECRET not in text
    assert created.json()["secrets_configured"] == 1
    assert created.json()["webhook_url"] == "http://issuer.test/webhooks/acme"
    with Session(lms.services.engine) as session:
        stored = session.exec(select(LmsSource).where(LmsSource.id == "acme")).one()
        assert stored.encrypted_secret and SECRET.encode() not in stored.encrypted_secret
        audit_text = json.dumps([r.data for r in session.exec(select(AuditRecord)).all()])
    assert SECRET not in audit_text
    problem(lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=body), 409, "conflict")
    no_secret = {"id": "m", "platform": "moodle", "config": {}}
    assert lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=no_secret).status_code in (400, 422)
    bad_canvas = {"id": "c", "platform": "canvas", "config": {"jwks_url": "https://evil.example/jwks"}}
    assert lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=bad_canvas).status_code in (400, 422)
    problem(lms.client.get("/api/v1/lms/sources", headers={}), 401, "unauthorized")


def test_rotating_a_secret_keeps_both_valid_until_the_old_one_is_dropped(lms: Lms) -> None:
    source = lms.source("thinkific")
    new = "the-next-shared-secret-7d1e44c2a9"
    patched = lms.client.patch(f"/api/v1/lms/sources/{source}", headers=lms.admin, json={"secrets": [new, SECRET]})
    assert patched.json()["secrets_configured"] == 2
    assert lms.post(source, deliver("thinkific", Learner(id="1"))).status_code == 202
    assert lms.post(source, deliver("thinkific", Learner(id="2"), secret=new)).status_code == 202
    lms.client.patch(f"/api/v1/lms/sources/{source}", headers=lms.admin, json={"secrets": [new]})
    problem(lms.post(source, deliver("thinkific", Learner(id="3"))), 401, "webhook-unauthenticated")


def test_mappings_api(lms: Lms) -> None:
    source = lms.source("generic", course="C-1")
    url = f"/api/v1/lms/sources/{source}/mappings"
    problem(
        lms.client.post(url, headers=lms.admin, json={"course_id": "C-1", "achievement_id": lms.achievement}),
        409,
        "conflict",
    )
    problem(
        lms.client.post(url, headers=lms.admin, json={"course_id": "C-2", "achievement_id": "nope"}), 422, "validation"
    )
    items = lms.client.get(url, headers=lms.admin).json()["items"]
    assert [(m["course_id"], m["achievement_id"]) for m in items] == [("C-1", lms.achievement)]
    assert lms.client.delete(f"{url}/{items[0]['id']}", headers=lms.admin).status_code == 204
    assert lms.client.get(url, headers=lms.admin).json()["items"] == []
    problem(lms.client.get("/api/v1/lms/sources/nope/mappings", headers=lms.admin), 404, "not-found")


def test_events_are_listed_and_unknown_ones_are_404(lms: Lms) -> None:
    source = lms.source("generic")
    event_id = lms.deliver(source, deliver("generic", Learner()))
    listed = lms.client.get(f"/api/v1/lms/events?source_id={source}&state=received", headers=lms.admin).json()
    assert [e["id"] for e in listed["items"]] == [event_id]
    problem(lms.client.get("/api/v1/lms/events/nope", headers=lms.admin), 404, "not-found")


# --------------------------------------------------------------------------------------------- TalentLMS


class FakeTalentLms:
    """The v2 timeline over real HTTP: API-key auth, pages of at most 100, `created_from`, optional 429."""

    def __init__(self, server: LocalServer) -> None:
        self.rows: list[dict[str, Any]] = []
        self.rate_limited = False
        server.routes["/api/v2/timeline"] = self.timeline

    def add(self, n: int, *, at: int = 1_790_000_000, course: str = "C-101") -> None:
        for _ in range(n):
            k = len(self.rows)
            self.rows.append(
                {
                    "action": "course_completion",
                    "message": "User completed course",
                    "unix_timestamp": str(at + k),
                    "user_id": str(500 + k),
                    "user_email": f"tl{k}@example.org",
                    "user_fullname": f"Talent Learner {k}",
                    "object_id": course,
                    "object_name": "Safety Basics",
                    "event_counter": str(k),
                }
            )

    def timeline(self, h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("X-API-Key") != "talent-api-key-0123456789" or not h.headers.get("X-API-Version"):
            _send(h, 401, {"type": "invalid_request_error", "message": "Invalid API key"})
            return
        if self.rate_limited:
            h.send_response(429)
            h.send_header("Retry-After", "120")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        query = parse_qs(urlsplit(h.path).query)
        assert query["event_type"] == ["course_completion"]
        since = query.get("created_from", [None])[0]
        rows = [r for r in self.rows if since is None or int(r["unix_timestamp"]) >= _unix(since)]
        rows.sort(key=lambda r: -int(r["unix_timestamp"]))  # newest first, as a timeline reads
        page, size = int(query["page"][0]), int(query["page_size"][0])
        assert size <= 100
        _send(h, 200, {"data": rows[(page - 1) * size : page * size]})


def _unix(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp())


@pytest.fixture
def talent(lms: Lms) -> Iterator[tuple[FakeTalentLms, str]]:
    with LocalServer() as server:
        fake = FakeTalentLms(server)
        body = {
            "id": "talent",
            "platform": "talentlms",
            "api_token": "talent-api-key-0123456789",
            "config": {"base_url": server.base, "poll_interval_seconds": 300},
        }
        assert lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=body).status_code == 201
        lms.map("talent", "C-101")
        yield fake, "talent"


def test_talentlms_poller_pages_remembers_its_cursor_and_feeds_the_same_path(
    lms: Lms, talent: tuple[FakeTalentLms, str]
) -> None:
    from issuer.webhooks.talentlms import poll

    fake, source = talent
    fake.add(150)
    first = poll(lms.services, source)
    assert (first.pages, first.rows, first.accepted, first.complete) == (2, 150, 150, True)
    assert json.loads(first.cursor or "")["from"].startswith("2026-")
    again = poll(lms.services, source)
    assert again.accepted == 0 and again.duplicates == 1  # only the newest second is re-read
    fake.add(3)
    third = poll(lms.services, source)
    assert third.accepted == 3
    work = [lms.settle(e.id)["state"] for e in _events(lms)]
    assert work == ["issued"] * 153


def test_talentlms_poller_resumes_after_a_rate_limit_and_refuses_bad_keys(
    lms: Lms, talent: tuple[FakeTalentLms, str]
) -> None:
    from issuer.webhooks.adapters import LmsApiError
    from issuer.webhooks.talentlms import poll

    fake, source = talent
    fake.add(250)
    partial = poll(lms.services, source, max_pages=1)
    assert (partial.accepted, partial.complete) == (100, False)
    assert json.loads(partial.cursor or "")["page"] == 2
    fake.rate_limited = True
    limited = poll(lms.services, source)
    assert limited.retry_after == 120 and limited.accepted == 0 and json.loads(limited.cursor or "")["page"] == 2
    fake.rate_limited = False
    rest = poll(lms.services, source)
    assert rest.accepted == 150 and rest.complete
    lms.client.patch(f"/api/v1/lms/sources/{source}", headers=lms.admin, json={"api_token": "a-wrong-api-key-000000"})
    with pytest.raises(LmsApiError, match="HTTP 401 Invalid API key"):
        poll(lms.services, source)


def test_talentlms_polls_are_scheduled_as_jobs(lms: Lms, talent: tuple[FakeTalentLms, str]) -> None:
    fake, _ = talent
    fake.add(2)
    with Session(lms.services.engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == "poll_talentlms")).all()
    assert len(jobs) == 1
    run_pending(lms.services.engine, lms.services, "w")
    with Session(lms.services.engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == "poll_talentlms").order_by(col(Job.id))).all()
    assert [j.state for j in jobs] == ["succeeded", "pending"]  # the next poll is waiting for its slot
    assert jobs[0].result == {"pages": 1, "accepted": 2, "complete": True}


def _events(lms: Lms) -> list[CompletionEvent]:
    with Session(lms.services.engine) as session:
        return list(session.exec(select(CompletionEvent).order_by(col(CompletionEvent.received_at))).all())


# --------------------------------------------------------------------------------------------- adapter options


def _sign_stripe(body: bytes, secret: str, sent: int) -> str:
    import hashlib
    import hmac

    return f"t={sent},v1={hmac.new(secret.encode(), f'{sent}.'.encode() + body, hashlib.sha256).hexdigest()}"


def test_generic_stripe_scheme(lms: Lms) -> None:
    body = source_body("generic", "stripe-like", scheme="stripe") | {"secrets": [SECRET]}
    assert lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=body).status_code == 201
    lms.map("stripe-like", "C-101")
    who = Learner()
    payload = json.loads(deliver("generic", who).body) | {"id": "evt_1"}
    raw = json.dumps(payload).encode()
    now = int(who.at.timestamp())
    ok = Delivery(raw, {"Content-Type": "application/json", "Stripe-Signature": _sign_stripe(raw, SECRET, now)})
    assert lms.settle(lms.deliver("stripe-like", ok))["state"] == "issued"
    old = Delivery(raw, {"Stripe-Signature": _sign_stripe(raw, SECRET, now - 3600)})
    problem(lms.post("stripe-like", old), 401, "webhook-stale")
    problem(
        lms.post("stripe-like", Delivery(raw, {"Stripe-Signature": f"t={now},v1=00"})), 401, "webhook-unauthenticated"
    )


def test_teachable_optional_signature_header(lms: Lms) -> None:
    import hashlib
    import hmac

    body = source_body("teachable", "t2", signature_header="X-Teachable-Signature") | {
        "signing_secrets": ["teachable-signing-key-42424242"]
    }
    assert lms.client.post("/api/v1/lms/sources", headers=lms.admin, json=body).status_code == 201
    lms.map("t2", "C-101")
    delivery = deliver("teachable", Learner())
    problem(lms.post("t2", delivery), 401, "webhook-unauthenticated")  # the token alone is no longer enough
    digest = hmac.new(b"teachable-signing-key-42424242", delivery.body, hashlib.sha256).hexdigest()
    signed = Delivery(delivery.body, delivery.headers | {"X-Teachable-Signature": digest}, delivery.query)
    assert lms.post("t2", signed).status_code == 202


def test_docebo_basic_auth(lms: Lms) -> None:
    import base64

    source = lms.source("docebo", basic_user="docebo")
    delivery = deliver("docebo", Learner())
    basic = base64.b64encode(f"docebo:{SECRET}".encode()).decode()
    with_basic = Delivery(delivery.body, delivery.headers | {"Authorization": f"Basic {basic}"})
    assert lms.post(source, with_basic).status_code == 202
    wrong_user = base64.b64encode(f"admin:{SECRET}".encode()).decode()
    other = Delivery(delivery.body, delivery.headers | {"Authorization": f"Basic {wrong_user}"})
    problem(lms.post(source, other), 401, "webhook-unauthenticated")


@pytest.mark.parametrize("header", [{"alg": "none", "kid": "canvas-2026-11"}, {"alg": "RS256", "kid": "unknown"}])
def test_canvas_refuses_unsigned_algorithms_and_unknown_keys(lms: Lms, header: dict[str, str]) -> None:
    import base64

    source = lms.source("canvas")
    genuine = deliver("canvas", Learner()).body.split(b".")
    forged_header = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
    token = b".".join([forged_header, genuine[1], genuine[2] if header["alg"] != "none" else b""])
    problem(lms.post(source, Delivery(token)), 401, "webhook-unauthenticated")


def test_openedx_certificate_carries_the_grade(lms: Lms) -> None:
    from .lms_payloads import openedx

    source = lms.source("openedx")
    who = Learner()
    data = json.loads(openedx(who).body)
    passing = data.pop("openedx_events.learning.data.CoursePassingStatusData")
    data["openedx_events.learning.data.CertificateData"] = {
        "user": passing["user"],
        "course": passing["course"],
        "mode": "verified",
        "grade": "0.85",
        "current_status": "downloadable",
    }
    data["event_metadata"]["event_type"] = "org.openedx.learning.certificate.created.v1"
    view = lms.settle(lms.deliver(source, openedx(who, raw=json.dumps(data).encode())))
    assert view["state"] == "issued" and view["event"]["score"] == 85


def test_moodle_completion_not_confirmed_by_its_api_is_held(lms: Lms) -> None:
    with LocalServer() as server:

        def api(h: BaseHTTPRequestHandler) -> None:
            query = parse_qs(urlsplit(h.path).query)
            if query["wsfunction"] == ["core_completion_get_course_completion_status"]:
                _send(h, 200, {"completionstatus": {"completed": False, "completions": []}, "warnings": []})
            else:
                _send(h, 200, [{"id": 42, "fullname": "Ada Lovelace", "email": "ada@example.org"}])

        server.routes["/webservice/rest/server.php"] = api
        source = lms.source("moodle", site_url=server.base)
        with_api_token(lms, "moodle", source)
        view = lms.settle(lms.deliver(source, deliver("moodle", Learner())))
    assert view["state"] == "held"
    assert view["decision"]["reason"] == "Held for review: the LMS's own API does not confirm this completion."
    assert view["event"]["email"] == "ada@example.org" and view["event"]["extra"]["enriched"] is True
