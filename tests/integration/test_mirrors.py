"""Mirroring to Credly and Accredible, against fake servers over real HTTP, on SQLite and PostgreSQL.

Jobs are run by hand with a controllable clock: "time passes" by moving the clock to the next job's due time,
so backoff and Retry-After are exercised without sleeping.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from pydantic import SecretStr
from sqlmodel import Session, col, select

from issuer.db.engine import session_scope
from issuer.db.tables import AuditRecord, Credential, Job, Mirror
from issuer.delivery.jobs import now_utc, run_pending
from issuer.delivery.mirrors.service import KIND
from issuer.issuance.schemas import IssueRequest
from issuer.issuance.service import IssuanceService
from issuer.services import Services
from issuer.settings import Settings
from tests.fakes.accredible import FakeAccredible
from tests.fakes.base import Fault
from tests.fakes.credly import FakeCredly

from .conftest import problem, token_with

WORKER = "test-worker"


@pytest.fixture
def credly() -> Iterator[FakeCredly]:
    with FakeCredly() as fake:
        yield fake


@pytest.fixture
def accredible() -> Iterator[FakeAccredible]:
    with FakeAccredible() as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, credly: FakeCredly, accredible: FakeAccredible) -> Settings:
    return settings.model_copy(
        update={
            "credly_token": SecretStr(credly.token),
            "credly_base_url": credly.base_url,
            "accredible_api_key": SecretStr(accredible.api_key),
            "accredible_base_url": accredible.base_url,
            "mirror_timeout": 10.0,
        }
    )


class Clock:
    """Starts a minute ahead of the wall clock (so jobs enqueued just now are due) and moves only when told."""

    def __init__(self) -> None:
        self.now = now_utc() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def mirror_jobs(services: Services) -> list[Job]:
    with Session(services.engine) as session:
        return list(session.exec(select(Job).where(Job.kind == KIND).order_by(col(Job.id))).all())


def run_due(services: Services, clock: Clock) -> int:
    """Run every job that is due now (repeatedly, so jobs that become due at once run too); how many ran."""
    ran = 0
    while claimed := run_pending(services.engine, services, WORKER, clock=clock):
        ran += claimed
    return ran


def settle(services: Services, clock: Clock, *, limit: int = 50) -> None:
    """Run jobs, moving the clock to the next due time, until no mirror job is pending."""
    for _ in range(limit):
        run_due(services, clock)
        waiting = [j for j in mirror_jobs(services) if j.state == "pending"]
        if not waiting:
            return
        clock.now = max(clock.now, min(j.run_after for j in waiting))
    raise AssertionError("mirror jobs did not settle")


def map_achievement(client: TestClient[Any], admin: dict[str, str], achievement_id: str, **mapping: Any) -> None:
    response = client.put(f"/api/v1/achievements/{achievement_id}/mirror", headers=admin, json=mapping)
    assert response.status_code == 200, response.text


def both(credly: FakeCredly, accredible: FakeAccredible) -> dict[str, Any]:
    return {
        "credly": {"organization_id": credly.organization_id, "badge_template_id": credly.template},
        "accredible": {"group_id": accredible.group},
    }


def issue(
    client: TestClient[Any],
    admin: dict[str, str],
    achievement_id: str,
    email: str = "ada@example.org",
    name: str | None = "Ada Lovelace",
    **extra: Any,
) -> str:
    recipient = {"email": email} | ({"name": name} if name else {})
    response = client.post(
        "/api/v1/credentials", headers=admin, json={"achievement_id": achievement_id, "recipient": recipient, **extra}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def mirrors_of(client: TestClient[Any], admin: dict[str, str], credential_id: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"/api/v1/credentials/{credential_id}", headers=admin)
    assert response.status_code == 200, response.text
    return {m["service"]: m for m in response.json()["mirrors"]}


@pytest.fixture
def mapped(client: TestClient[Any], admin: dict[str, str], achievement_id: str, credly: FakeCredly,
           accredible: FakeAccredible) -> str:  # fmt: skip
    map_achievement(client, admin, achievement_id, **both(credly, accredible))
    return achievement_id


# --------------------------------------------------------------------------------------------------- happy path


def test_issuance_is_mirrored_to_both_services_once(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credential_id = issue(client, admin, mapped, valid_until="2031-05-06T07:08:09Z")
    # Written with the credential: a pending mirror and a job per service.
    pending = mirrors_of(client, admin, credential_id)
    assert {s: m["state"] for s, m in pending.items()} == {"credly": "pending", "accredible": "pending"}
    assert sorted(j.dedupe_key for j in mirror_jobs(services)) == [
        f"mirror:accredible:{credential_id}:issue",
        f"mirror:credly:{credential_id}:issue",
    ]

    settle(services, clock)

    shown = mirrors_of(client, admin, credential_id)
    [badge] = credly.badges_for(credential_id)
    [copy] = accredible.credentials_for(credential_id)
    assert shown["credly"] | {"synced_at": None, "updated_at": None} == {
        "service": "credly", "state": "mirrored", "external_id": badge["id"], "last_error": None,
        "synced_at": None, "updated_at": None,
    }  # fmt: skip
    assert shown["accredible"]["state"] == "mirrored" and shown["accredible"]["external_id"] == copy["id"]
    assert shown["credly"]["synced_at"].endswith("Z")

    # What Credly got: the documented fields, in the documented forms, over Basic auth with the token as user.
    [post] = credly.calls("POST", r"/badges$")
    assert post.headers["authorization"] == "Basic " + base64.b64encode(f"{credly.token}:".encode()).decode()
    sent = post.json()
    assert sent["recipient_email"] == "ada@example.org" and sent["badge_template_id"] == credly.template
    assert (sent["issued_to_first_name"], sent["issued_to_last_name"]) == ("Ada", "Lovelace")
    assert sent["issuer_earner_id"] == credential_id
    assert sent["expires_at"] == "2031-05-06 07:08:09 +0000"
    assert datetime.strptime(sent["issued_at"], "%Y-%m-%d %H:%M:%S %z").tzinfo is not None
    assert sent["evidence"] == [
        {
            "type": "UrlEvidence",
            "name": "Open Badges 3.0 credential",
            "value": f"http://issuer.test/c/{credential_id}",
            "description": "The signed credential this badge mirrors, with its live verification.",
        }
    ]
    assert badge["state"] == "pending" and badge["expires_at"] == "2031-05-06T07:08:09.000Z"

    # What Accredible got: the documented header form, the group, dates as YYYY-MM-DD, our id in meta_data.
    [create] = accredible.calls("POST", r"^/v1/credentials$")
    assert create.headers["authorization"] == f"Token token={accredible.api_key}"
    body = create.json()["credential"]
    assert body["group_id"] == accredible.group and body["expired_on"] == "2031-05-06"
    assert body["recipient"] == {"name": "Ada Lovelace", "email": "ada@example.org", "id": credential_id}
    assert body["meta_data"] == {
        "ob3_credential_id": credential_id,
        "ob3_credential_url": f"http://issuer.test/c/{credential_id}",
    }
    assert copy["approve"] is True and copy["expired_on"] == "2031-05-06"
    # Exactly one create each, and no search on a first attempt that got its answer.
    assert len(credly.calls("GET", r"/badges$")) == 0 and len(accredible.calls("POST", "/v2/")) == 0


def test_nothing_is_mirrored_without_a_mapping_or_a_token(
    client: TestClient[Any], admin: dict[str, str], services: Services, achievement_id: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credential_id = issue(client, admin, achievement_id)  # the achievement is not mapped
    assert mirror_jobs(services) == [] and mirrors_of(client, admin, credential_id) == {}

    map_achievement(client, admin, achievement_id, **both(credly, accredible))
    no_tokens = services.settings.model_copy(update={"credly_token": None, "accredible_api_key": None})
    request = IssueRequest.model_validate(
        {"achievement_id": achievement_id, "recipient": {"email": "b@x.org", "name": "B"}}
    )
    issued = IssuanceService(services.engine, no_tokens, services.master_key).issue(request, actor="test")
    assert mirror_jobs(services) == [] and mirrors_of(client, admin, issued.credential.id) == {}
    assert credly.requests == [] and accredible.requests == []


def test_only_configured_services_are_mirrored_and_a_missing_email_is_shown(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    response = client.post(
        "/api/v1/credentials",
        headers=admin,
        json={"achievement_id": mapped, "recipient": {"did": "did:example:learner", "name": "No Mail"}},
    )
    assert response.status_code == 201, response.text
    credential_id = response.json()["id"]
    shown = mirrors_of(client, admin, credential_id)
    assert shown["credly"]["state"] == "failed" and "email" in shown["credly"]["last_error"]
    assert shown["accredible"]["state"] == "failed"
    assert mirror_jobs(services) == []  # nothing a job could do
    assert response.json()["revoked"] is False


# --------------------------------------------------------------------------------------------------- the mapping


def test_mapping_endpoint_validates_reads_and_audits(
    client: TestClient[Any],
    admin: dict[str, str],
    services: Services,
    achievement_id: str,
    credly: FakeCredly,
) -> None:
    url = f"/api/v1/achievements/{achievement_id}/mirror"
    assert client.get(url, headers=admin).json() == {
        "achievement_id": achievement_id,
        "mirror": None,
        "configured": {"credly": True, "accredible": True},
    }
    bad = client.put(url, headers=admin, json={"credly": {"organization_id": "nope", "badge_template_id": "x"}})
    body = problem(bad, 422, "validation")
    assert {e["field"] for e in body["errors"]} >= {"credly.organization_id", "credly.badge_template_id"}
    problem(client.put(url, headers=admin, json={"accredible": {"group_id": -3}}), 422, "validation")
    problem(client.put(url, headers=admin, json={"badgr": {}}), 422, "validation")
    problem(client.put(url, headers=admin, json={"accredible": {"group_id": 5, "extra": 1}}), 422, "validation")
    reader = {"Authorization": f"Bearer {token_with(services, 'read')}"}
    problem(client.put(url, headers=reader, json={}), 403, "forbidden")
    problem(client.put("/api/v1/achievements/missing/mirror", headers=admin, json={}), 404, "not-found")

    mapping = {"credly": {"organization_id": credly.organization_id.upper(), "badge_template_id": credly.template}}
    saved = client.put(url, headers=admin, json=mapping)
    assert saved.status_code == 200, saved.text
    assert saved.json()["mirror"] == {
        "credly": {"organization_id": credly.organization_id, "badge_template_id": credly.template}
    }
    assert client.get(url, headers=reader).json()["mirror"] == saved.json()["mirror"]
    cleared = client.put(url, headers=admin, json={"credly": None})
    assert cleared.status_code == 200 and cleared.json()["mirror"] is None
    with Session(services.engine) as session:
        records = session.exec(select(AuditRecord).where(AuditRecord.action == "achievement.mirror_set")).all()
    assert [r.data["after"] for r in records] == [saved.json()["mirror"], None]
    assert records[0].subject == achievement_id and records[1].data["before"] == saved.json()["mirror"]


# --------------------------------------------------------------------------------------------------- outages


def test_an_outage_delays_mirrors_and_each_lands_once_after_it(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    ids = [issue(client, admin, mapped, email=f"learner{n}@example.org", name=f"Learner {n}") for n in range(3)]
    with credly.outage(), accredible.outage():
        for _ in range(3):  # three rounds of attempts while both services are away
            assert run_due(services, clock) == 6
            jobs = mirror_jobs(services)
            assert {j.state for j in jobs} == {"pending"} and all(j.run_after > clock.now for j in jobs)
            clock.now = max(j.run_after for j in jobs)
        shown = mirrors_of(client, admin, ids[0])
        assert shown["credly"]["state"] == "pending"
        assert (
            shown["credly"]["last_error"]
            == "issue: MirrorUnavailable: Credly could not be reached (RemoteProtocolError)"
        )
    # A 503 (no Retry-After) on the way back up is one more transient failure.
    credly.inject(Fault("status", status=503))
    settle(services, clock)
    for credential_id in ids:
        assert len(credly.badges_for(credential_id)) == 1
        assert len(accredible.credentials_for(credential_id)) == 1
        assert {m["state"] for m in mirrors_of(client, admin, credential_id).values()} == {"mirrored"}
    assert {j.state for j in mirror_jobs(services)} == {"succeeded"}
    assert all(j.attempts >= 4 for j in mirror_jobs(services))


def test_a_429_storm_is_ridden_out_honouring_retry_after(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credly.inject(Fault("rate_limit", method="POST", retry_after="120", times=3))
    accredible.budget = 0  # every request is over the budget until the window rolls over
    credential_id = issue(client, admin, mapped)
    assert run_due(services, clock) == 2
    by_service = {j.payload["service"]: j for j in mirror_jobs(services)}
    started = clock.now
    assert by_service["credly"].run_after == started + timedelta(seconds=120)
    assert by_service["accredible"].run_after == started + timedelta(seconds=30)
    assert by_service["credly"].last_error == "RetryLater: Credly asked us to wait 120 s (HTTP 429)"
    assert mirrors_of(client, admin, credential_id)["credly"]["state"] == "pending"

    clock.advance(29)
    assert run_due(services, clock) == 0  # never earlier than the server asked
    clock.advance(1)
    accredible.new_window()
    accredible.budget = 2000
    assert run_due(services, clock) == 1  # Accredible's window rolled over: it lands
    clock.advance(89)
    assert run_due(services, clock) == 0
    clock.advance(1)
    assert run_due(services, clock) == 1  # the second 429
    settle(services, clock)
    assert len(credly.calls("POST", r"/badges$")) == 4  # three refusals, one success
    assert len(credly.badges_for(credential_id)) == 1 and len(accredible.credentials_for(credential_id)) == 1
    assert {m["state"] for m in mirrors_of(client, admin, credential_id).values()} == {"mirrored"}


def test_a_lost_answer_after_the_service_committed_makes_no_second_copy(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credly.inject(Fault("drop_after", method="POST", path=r"/badges$"))  # created, then the connection drops
    accredible.inject(Fault("slow_after", method="POST", path=r"^/v1/credentials$", delay=3.0))  # created, late
    credential_id = issue(client, admin, mapped)
    impatient = dataclasses.replace(services, settings=services.settings.model_copy(update={"mirror_timeout": 1.0}))
    assert run_due(impatient, clock) == 2
    assert len(credly.badges_for(credential_id)) == 1 and len(accredible.credentials_for(credential_id)) == 1
    errors = {m["service"]: m["last_error"] for m in mirrors_of(client, admin, credential_id).values()}
    assert errors["credly"] == "issue: MirrorUnavailable: Credly could not be reached (RemoteProtocolError)"
    assert errors["accredible"].startswith("issue: MirrorUnavailable: Accredible did not answer in time (")
    settle(services, clock)
    [badge] = credly.badges_for(credential_id)
    [copy] = accredible.credentials_for(credential_id)
    shown = mirrors_of(client, admin, credential_id)
    assert (shown["credly"]["external_id"], shown["accredible"]["external_id"]) == (badge["id"], copy["id"])
    assert {m["state"] for m in shown.values()} == {"mirrored"}
    # The second attempt looked before it leapt, and did not post again.
    assert len(credly.calls("POST", r"/badges$")) == 1 and len(accredible.calls("POST", r"^/v1/credentials$")) == 1
    [search] = credly.calls("GET", r"/badges$")
    assert search.param("filter") == f"recipient_email::ada@example.org|badge_template_id::{credly.template}"
    assert accredible.calls("POST", "/v2/credentials/search")[0].json()["query"] == {
        "recipient_email": "ada@example.org",
        "group.id": accredible.group,
    }


def test_a_duplicate_refusal_adopts_our_badge_but_never_someone_elses(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    ours = issue(client, admin, mapped, email="ours@example.org")
    theirs = issue(client, admin, mapped, email="taken@example.org")
    # Ours already reached Credly (an earlier run we have no record of); theirs was issued there by hand.
    with credly.lock:
        template = credly.templates[credly.template]
        credly._new_badge({"issuer_earner_id": ours}, template, now_utc(), None, "ours@example.org")
        credly._new_badge({"issuer_earner_id": "by-hand"}, template, now_utc(), None, "taken@example.org")
    settle(services, clock)
    assert mirrors_of(client, admin, ours)["credly"] | {"synced_at": None, "updated_at": None} == {
        "service": "credly", "state": "mirrored", "external_id": credly.badges_for(ours)[0]["id"],
        "last_error": None, "synced_at": None, "updated_at": None,
    }  # fmt: skip
    assert len(credly.badges_for(ours)) == 1
    refused = mirrors_of(client, admin, theirs)["credly"]
    assert refused["state"] == "failed" and refused["external_id"] is None
    assert refused["last_error"] == (
        "issue: Credly already holds this award for the recipient, not made by this service: "
        "User already has this badge"
    )
    assert credly.badges_for(theirs) == []


# --------------------------------------------------------------------------------------------------- propagation


def test_revocation_propagates_with_its_reason(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credential_id = issue(client, admin, mapped)
    settle(services, clock)
    revoked = client.post(
        f"/api/v1/credentials/{credential_id}/revoke", headers=admin, json={"reason": "Issued to the wrong person."}
    )
    assert revoked.status_code == 200
    assert {m["state"] for m in mirrors_of(client, admin, credential_id).values()} == {"pending"}
    settle(services, clock)
    [badge] = credly.badges_for(credential_id)
    assert (badge["state"], badge["revocation_reason"]) == ("revoked", "Issued to the wrong person.")
    [put] = credly.calls("PUT", r"/revoke$")
    assert put.json() == {"reason": "Issued to the wrong person.", "suppress_revoke_notification_email": False}
    [copy] = accredible.credentials_for(credential_id)
    revoked_on = revoked.json()["revoked_at"][:10]
    assert copy["expired_on"] == revoked_on
    assert copy["meta_data"]["ob3_revoked"] is True
    assert copy["meta_data"]["ob3_revocation_reason"] == "Issued to the wrong person."
    shown = mirrors_of(client, admin, credential_id)
    assert {m["state"] for m in shown.values()} == {"removed"}
    assert shown["credly"]["external_id"] == badge["id"]
    # Revoking again changes nothing and queues nothing.
    before = len(mirror_jobs(services))
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=admin, json={"reason": "again"})
    assert len(mirror_jobs(services)) == before


def test_a_credential_revoked_before_its_mirror_ran_never_reaches_the_service(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credential_id = issue(client, admin, mapped)
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=admin, json={"reason": "Too quick."})
    settle(services, clock)
    assert credly.badges_for(credential_id) == [] and accredible.credentials_for(credential_id) == []
    assert {m["state"] for m in mirrors_of(client, admin, credential_id).values()} == {"removed"}
    assert credly.calls("POST", r"/badges$") == [] and accredible.calls("POST", r"^/v1/credentials$") == []


def test_accredible_can_delete_on_revocation(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    accredible: FakeAccredible,
) -> None:  # fmt: skip
    deleting = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"accredible_revoke": "delete"})
    )
    credential_id = issue(client, admin, mapped)
    settle(deleting, clock)
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=admin, json={"reason": "Erase it."})
    settle(deleting, clock)
    assert accredible.credentials_for(credential_id) == []
    assert len(accredible.calls("DELETE", r"^/v1/credentials/")) == 1
    assert mirrors_of(client, admin, credential_id)["accredible"]["state"] == "removed"


def _change_expiry(services: Services, credential_id: str, valid_until: datetime) -> None:
    with session_scope(services.engine) as session:
        row = session.get(Credential, credential_id)
        assert row is not None
        row.valid_until = valid_until
        row.document = row.document | {"validUntil": valid_until.strftime("%Y-%m-%dT%H:%M:%SZ")}
        session.add(row)


def test_reissue_propagates_and_an_expiry_change_reaches_the_mirror_once(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credential_id = issue(client, admin, mapped, valid_until="2031-01-01T00:00:00Z")
    settle(services, clock)
    [original] = credly.badges_for(credential_id)

    # A re-issue that keeps the expiry: a job per mirror, and nothing to change there.
    assert client.post(f"/api/v1/credentials/{credential_id}/reissue", headers=admin).status_code == 200
    settle(services, clock)
    assert credly.calls("POST", r"/replace$") == [] and accredible.calls("PUT", r"^/v1/credentials/") == []
    assert len([j for j in mirror_jobs(services) if ":reissue:" in j.dedupe_key]) == 2

    # A re-issue with a new expiry: Credly replaces the badge (the answer is lost once), Accredible updates it.
    _change_expiry(services, credential_id, datetime(2032, 6, 30, 12, 0, tzinfo=UTC))
    credly.inject(Fault("drop_after", method="POST", path=r"/replace$"))
    assert client.post(f"/api/v1/credentials/{credential_id}/reissue", headers=admin).status_code == 200
    settle(services, clock)
    assert len(credly.calls("POST", r"/replace$")) == 1  # the lost answer was found, not replaced again
    old, new = credly.badges_for(credential_id)
    assert old["id"] == original["id"]
    assert old["replacement_badge_id"] == new["id"] and new["replaces_badge_id"] == old["id"]
    assert new["expires_at"] == "2032-06-30T12:00:00.000Z" and new["issued_at"] == original["issued_at"]
    [copy] = accredible.credentials_for(credential_id)
    assert copy["expired_on"] == "2032-06-30"
    shown = mirrors_of(client, admin, credential_id)
    assert shown["credly"]["external_id"] == new["id"] and shown["credly"]["state"] == "mirrored"
    assert shown["accredible"]["state"] == "mirrored"

    # Revoking after a replacement revokes the current badge.
    client.post(f"/api/v1/credentials/{credential_id}/revoke", headers=admin, json={"reason": "Withdrawn."})
    settle(services, clock)
    assert credly.badges[new["id"]]["state"] == "revoked" and credly.badges[old["id"]]["state"] == "pending"


# --------------------------------------------------------------------------------------------------- failures


def test_a_bad_token_fails_the_mirror_for_good_visibly_and_leaves_the_credential_alone(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    wrong = dataclasses.replace(
        services,
        settings=services.settings.model_copy(
            update={"credly_token": SecretStr("wrong-credly-token"), "accredible_api_key": SecretStr("wrong-key")}
        ),
    )
    credential_id = issue(client, admin, mapped)
    with caplog.at_level(logging.DEBUG):
        assert run_due(wrong, clock) == 2
    jobs = mirror_jobs(services)
    assert {(j.state, j.attempts) for j in jobs} == {("failed", 1)}  # dead-lettered at once, not retried
    shown = mirrors_of(client, admin, credential_id)
    assert shown["credly"]["state"] == "failed" and shown["credly"]["last_error"] == (
        "issue: Credly refused our credentials (HTTP 401): You are not authorized to perform this action.; "
        "check the token, then retry the mirror"
    )
    assert shown["accredible"]["last_error"] == (
        "issue: Accredible refused our credentials (HTTP 401): HTTP Token: Access denied.; "
        "check the token, then retry the mirror"
    )
    # The tokens appear nowhere: not in the API, the jobs, the logs.
    everything = client.get(f"/api/v1/credentials/{credential_id}", headers=admin).text + caplog.text
    everything += client.get("/api/v1/jobs?state=failed", headers=admin).text
    for secret in ("wrong-credly-token", "wrong-key", credly.token, accredible.api_key):
        assert secret not in everything
    assert base64.b64encode(b"wrong-credly-token:").decode() not in everything
    # The credential itself is untouched: valid, published, verifiable.
    body = client.get(f"/api/v1/credentials/{credential_id}", headers=admin).json()
    assert body["revoked"] is False and body["credential"]["proof"]
    assert client.get(f"/credentials/{credential_id}").status_code == 200
    assert credly.badges == {} and accredible.credentials == {}


def test_the_retry_endpoint_queues_failed_mirrors_again(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, mapped: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    credential_id = issue(client, admin, mapped)
    url = f"/api/v1/credentials/{credential_id}/mirror/retry"
    problem(client.post(url, headers=admin), 409, "conflict")  # nothing has failed yet
    # The created badge's answer is lost, then the token is refused: failed, with a badge out there.
    credly.inject(Fault("drop_after", method="POST", path=r"/badges$"), Fault("status", status=401, times=5))
    accredible.no_credits = True  # created but not published
    settle(services, clock)
    shown = mirrors_of(client, admin, credential_id)
    assert {m["state"] for m in shown.values()} == {"failed"}
    assert shown["accredible"]["external_id"] is not None
    assert "did not publish" in shown["accredible"]["last_error"]

    issuer_only = {"Authorization": f"Bearer {token_with(services, 'issue')}"}
    problem(client.post(url, headers=issuer_only), 403, "forbidden")
    problem(client.post("/api/v1/credentials/nope/mirror/retry", headers=admin), 404, "not-found")

    credly.faults.clear()
    accredible.no_credits = False
    retried = client.post(url, headers=admin)
    assert retried.status_code == 200, retried.text
    assert {m["state"] for m in retried.json()["mirrors"]} == {"pending"}
    settle(services, clock)
    assert len(credly.badges_for(credential_id)) == 1 and len(credly.calls("POST", r"/badges$")) == 1
    [copy] = accredible.credentials_for(credential_id)
    assert copy["approve"] is True and len(accredible.calls("POST", r"^/v1/credentials$")) == 1
    shown = mirrors_of(client, admin, credential_id)
    assert {(m["state"], m["last_error"]) for m in shown.values()} == {("mirrored", None)}
    with Session(services.engine) as session:
        [record] = session.exec(select(AuditRecord).where(AuditRecord.action == "credential.mirror_retried")).all()
    assert record.subject == credential_id and record.data["services"] == ["accredible", "credly"]
    problem(client.post(url, headers=admin), 409, "conflict")


def test_a_validation_refusal_is_permanent_and_keeps_the_services_words(
    client: TestClient[Any], admin: dict[str, str], services: Services, clock: Clock, achievement_id: str,
    credly: FakeCredly, accredible: FakeAccredible,
) -> None:  # fmt: skip
    archived = credly.add_template("Old badge", state="archived")
    map_achievement(
        client, admin, achievement_id,
        credly={"organization_id": credly.organization_id, "badge_template_id": archived.id},
        accredible={"group_id": 999},
    )  # fmt: skip
    credential_id = issue(client, admin, achievement_id)
    settle(services, clock)
    shown = mirrors_of(client, admin, credential_id)
    assert shown["credly"]["last_error"] == (
        "issue: Credly refused to issue the badge (HTTP 422): An archived badge template cannot issue badges"
    )
    assert shown["accredible"]["last_error"] == (
        "issue: Accredible refused to create the credential (HTTP 422): Invalid Group"
    )
    assert {j.attempts for j in mirror_jobs(services)} == {1}


def test_mirror_rows_are_one_per_service(services: Services, client: TestClient[Any], admin: dict[str, str],
                                         mapped: str) -> None:  # fmt: skip
    credential_id = issue(client, admin, mapped)
    with Session(services.engine) as session:
        rows = session.exec(select(Mirror).where(Mirror.credential_id == credential_id)).all()
    assert sorted(r.service for r in rows) == ["accredible", "credly"]
