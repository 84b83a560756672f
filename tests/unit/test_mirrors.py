"""The pure parts of mirroring (mapping, request bodies, reading answers) and the transport's failure classes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from issuer.delivery.jobs import PermanentJobError, RetryLater
from issuer.delivery.mirrors import accredible, credly
from issuer.delivery.mirrors.mapping import (
    AccredibleTarget,
    CredlyTarget,
    MirrorMapping,
    Subject,
    accredible_credential,
    accredible_expire_revoked,
    credly_badge,
    credly_filter,
    credly_replacement,
    credly_revocation,
    error_message,
    is_accredible_duplicate,
    is_credly_duplicate,
    parse_accredible_credential,
    parse_credly_badge,
    retry_after,
    split_name,
    targets,
)
from issuer.delivery.mirrors.transport import MirrorRejected, MirrorUnavailable, Transport
from issuer.settings import Settings
from tests.fakes.accredible import FakeAccredible
from tests.fakes.base import Fault
from tests.fakes.credly import FakeCredly

ORG, TEMPLATE = str(uuid.uuid4()), str(uuid.uuid4())
NOW = datetime(2030, 3, 4, 5, 6, 7, tzinfo=UTC)


def subject(**changes: object) -> Subject:
    values: dict[str, object] = {
        "credential_id": "c-1",
        "page_url": "https://badges.example/c/c-1",
        "email": "ada@example.org",
        "name": "Ada King Lovelace",
        "awarded_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        "valid_until": None,
        "revoked_at": None,
        "revocation_reason": None,
    }
    return Subject(**(values | changes))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- mapping


def test_the_mapping_is_validated_and_normalized() -> None:
    mapping = MirrorMapping.model_validate(
        {"credly": {"organization_id": ORG.upper(), "badge_template_id": TEMPLATE}, "accredible": {"group_id": "42"}}
    )
    assert mapping.to_json() == {
        "credly": {"organization_id": ORG, "badge_template_id": TEMPLATE},
        "accredible": {"group_id": 42},
    }
    assert MirrorMapping.model_validate({}).to_json() is None
    assert MirrorMapping.model_validate({"credly": None, "accredible": None}).to_json() is None
    malformed: list[dict[str, Any]] = [
        {"credly": {"organization_id": ORG}},
        {"credly": {"organization_id": "x", "badge_template_id": TEMPLATE}},
        {"accredible": {"group_id": 0}},
        {"accredible": {"group_id": 1.5}},
        {"accredible": {"group_id": 1, "name": "x"}},
        {"canvas": {}},
    ]
    for bad in malformed:
        with pytest.raises(ValidationError):
            MirrorMapping.model_validate(bad)


def test_stored_mappings_name_their_targets() -> None:
    found = targets({"accredible": {"group_id": 7}})
    assert found == {"accredible": AccredibleTarget(group_id=7)}
    assert targets(None) == {} and targets({}) == {}
    with pytest.raises(ValueError, match="malformed"):
        targets({"credly": {"organization_id": "nope"}})


# --------------------------------------------------------------------------------------------------- bodies


def test_names_split_for_credly() -> None:
    assert split_name("Ada King Lovelace", None) == ("Ada King", "Lovelace")
    assert split_name("  Plato ", None) == ("Plato", "Plato")
    assert split_name(None, "grace@example.org") == ("grace", "grace")
    assert split_name("", None) == ("Recipient", "Recipient")


def test_the_credly_badge_body_follows_the_documented_contract() -> None:
    target = CredlyTarget(organization_id=uuid.UUID(ORG), badge_template_id=uuid.UUID(TEMPLATE))
    body = credly_badge(target, subject(valid_until=datetime(2031, 1, 1, 23, 30, tzinfo=UTC)))
    assert body == {
        "recipient_email": "ada@example.org",
        "badge_template_id": TEMPLATE,
        "issued_at": "2030-01-02 03:04:05 +0000",
        "issued_to_first_name": "Ada King",
        "issued_to_last_name": "Lovelace",
        "issuer_earner_id": "c-1",
        "expires_at": "2031-01-01 23:30:00 +0000",
        "evidence": [
            {
                "type": "UrlEvidence",
                "name": "Open Badges 3.0 credential",
                "value": "https://badges.example/c/c-1",
                "description": "The signed credential this badge mirrors, with its live verification.",
            }
        ],
    }
    assert credly_badge(target, subject())["expires_at"] is False  # ours never expires: nor does the badge
    assert "recipient_email" not in credly_replacement(target, subject())
    assert credly_revocation(subject(revocation_reason="  Wrong\n person ")) == {
        "reason": "Wrong person",
        "suppress_revoke_notification_email": False,
    }
    assert credly_revocation(subject())["reason"] == "Revoked by the issuer."
    assert credly_filter(subject(), target) == f"recipient_email::ada@example.org|badge_template_id::{TEMPLATE}"
    assert credly_filter(subject(email="a|b@example.org"), target) == f"badge_template_id::{TEMPLATE}"


def test_the_accredible_body_follows_the_documented_contract() -> None:
    body = accredible_credential(AccredibleTarget(group_id=9), subject(valid_until=datetime(2031, 2, 3, tzinfo=UTC)))
    assert body == {
        "credential": {
            "recipient": {"name": "Ada King Lovelace", "email": "ada@example.org", "id": "c-1"},
            "group_id": 9,
            "issued_on": "2030-01-02",
            "expired_on": "2031-02-03",
            "approve": True,
            "meta_data": {"ob3_credential_id": "c-1", "ob3_credential_url": "https://badges.example/c/c-1"},
            "evidence_items": [
                {"description": "Open Badges 3.0 credential", "category": "url", "url": "https://badges.example/c/c-1"}
            ],
        }
    }
    revoked = accredible_expire_revoked(subject(revoked_at=NOW, revocation_reason="Fraud."))
    assert revoked["credential"]["expired_on"] == "2030-03-04"
    assert revoked["credential"]["meta_data"]["ob3_revoked"] is True
    assert revoked["credential"]["meta_data"]["ob3_revocation_reason"] == "Fraud."


# --------------------------------------------------------------------------------------------------- answers


def test_answers_are_normalized() -> None:
    badge = parse_credly_badge(
        {
            "id": "b-1",
            "state": "revoked",
            "expires_at": "2031-01-01T23:30:00.000Z",
            "replacement_badge_id": None,
            "issuer_earner_id": "c-1",
        }
    )
    assert (badge.id, badge.revoked, badge.expires_on, badge.earner_ref) == ("b-1", True, date(2031, 1, 1), "c-1")
    assert parse_credly_badge({"id": "b", "expires_at": "2031-01-01 20:00:00 -0500"}).expires_on == date(2031, 1, 2)
    copy = parse_accredible_credential(
        {"id": 10000001, "approve": False, "expired_on": "2031-02-03", "meta_data": {"ob3_credential_id": "c-1"}}
    )
    assert (copy.id, copy.published, copy.expires_on, copy.earner_ref) == ("10000001", False, date(2031, 2, 3), "c-1")
    assert parse_accredible_credential({"id": "5", "recipient": {"id": "c-2"}}).earner_ref == "c-2"
    for bad in (None, {}, {"id": ""}):
        with pytest.raises(ValueError, match="has no id"):
            parse_accredible_credential(bad)
    with pytest.raises(ValueError, match="unreadable date"):
        parse_credly_badge({"id": "b", "expires_at": "next tuesday"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data":{"message":"User already has this badge"}}', "User already has this badge"),
        (b'{"errors":"Invalid Group"}', "Invalid Group"),
        (b'{"errors":{"course_name":["can\'t be blank"]}}', "course_name: can't be blank"),
        (b'{"errors":{"recipient.email":["has already been taken."]}}', "recipient.email: has already been taken."),
        (
            b'{"code":400,"message":"bad query","status":"invalid_search_query","errors":{}}',
            "bad query",
        ),
        (b'{"success":false,"data":"Group does not exist"}', "Group does not exist"),
        (b'{"error":"Not found"}', "Not found"),
        (b"HTTP Token: Access denied.\n", "HTTP Token: Access denied."),
        (b"", "(no message)"),
        (b"<html>\n<b>Bad   gateway</b>", "<html> <b>Bad gateway</b>"),
    ],
)
def test_error_bodies_are_read_leniently(body: bytes, message: str) -> None:
    assert error_message(body) == message


def test_duplicates_are_recognized() -> None:
    assert is_credly_duplicate(422, "User already has this badge")
    assert not is_credly_duplicate(422, "reason can't be blank") and not is_credly_duplicate(409, "already has this")
    assert is_accredible_duplicate(422, "recipient.email: has already been taken. Your group settings ...")
    assert not is_accredible_duplicate(422, "Invalid Group")


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("120", NOW) == 120.0
    assert retry_after("Mon, 04 Mar 2030 05:08:07 GMT", NOW) == 120.0
    assert retry_after("Mon, 04 Mar 2030 05:00:00 GMT", NOW) == 0.0  # in the past: at once
    assert retry_after(None, NOW) is None and retry_after("soon", NOW) is None and retry_after("-5", NOW) is None


# --------------------------------------------------------------------------------------------------- transport


@pytest.fixture
def fake() -> Iterator[FakeCredly]:
    with FakeCredly() as server:
        yield server


def transport(fake: FakeCredly, token: str | None = None, timeout: float = 5.0) -> Transport:
    return Transport(
        "credly", fake.base_url, credly.authorization(token or fake.token), timeout=timeout, clock=lambda: NOW
    )


def test_the_transport_sorts_failures(fake: FakeCredly) -> None:
    path = f"/organizations/{fake.organization_id}/badge_templates"
    with transport(fake) as client:
        assert client.request("GET", path).json()["data"][0]["id"] == fake.template
        fake.inject(Fault("rate_limit", retry_after="Mon, 04 Mar 2030 05:07:07 GMT"))
        with pytest.raises(RetryLater) as later:
            client.request("GET", path)
        assert later.value.seconds == 60.0 and str(later.value) == "Credly asked us to wait 60 s (HTTP 429)"
        fake.inject(Fault("rate_limit", retry_after="whenever"), Fault("status", status=502))
        for _ in range(2):
            with pytest.raises(MirrorUnavailable, match=r"answered HTTP (429|502)"):
                client.request("GET", path)
        fake.inject(Fault("drop_before"))
        with pytest.raises(MirrorUnavailable, match="could not be reached"):
            client.request("GET", path)
        with pytest.raises(MirrorRejected, match="another host"):
            client.request("GET", "http://127.0.0.2:1/v1/elsewhere")  # a next_page_url elsewhere: not followed
        assert client.request("GET", f"/organizations/{uuid.uuid4()}/badges").status == 404  # the caller decides
    with transport(fake, token="not-the-token") as client:
        with pytest.raises(MirrorRejected) as refused:
            client.request("GET", path)
        assert isinstance(refused.value, PermanentJobError) and "not-the-token" not in str(refused.value)


def test_a_slow_answer_is_a_timeout(fake: FakeCredly) -> None:
    fake.inject(Fault("slow_after", delay=1.0))
    with transport(fake, timeout=0.2) as client, pytest.raises(MirrorUnavailable, match="did not answer in time"):
        client.request("GET", f"/organizations/{fake.organization_id}/badge_templates")


def test_credly_search_follows_absolute_next_page_urls(fake: FakeCredly) -> None:
    target = CredlyTarget(organization_id=uuid.UUID(fake.organization_id), badge_template_id=uuid.UUID(fake.template))
    template = fake.templates[fake.template]
    ours = fake._new_badge({"issuer_earner_id": "c-1"}, template, NOW, None, "ada@example.org")
    for n in range(120):  # other badges of the same recipient and template, newer than ours
        fake._new_badge({"issuer_earner_id": f"other-{n}"}, template, NOW, None, "ada@example.org")
    with transport(fake) as http:
        found = credly.CredlyClient(http, target).find(subject())
    assert found is not None and found.id == ours["id"]
    pages = fake.calls("GET", r"/badges$")
    assert [p.param("page") for p in pages] == [None, "2", "3"]


def test_accredible_accepts_every_documented_authorization_form() -> None:
    with FakeAccredible() as fake:
        for header in (f"Token token={fake.api_key}", f"Token {fake.api_key}", f"Bearer {fake.api_key}"):
            http = Transport("accredible", fake.base_url, header, timeout=5.0)
            with http:
                assert http.request("GET", f"/issuer/groups/{fake.group}").json()["group"]["id"] == fake.group
        assert accredible.authorization("k") == "Token token=k"
        refused = pytest.raises(MirrorRejected, match=r"HTTP 401\): HTTP Token: Access denied\.")
        with Transport("accredible", fake.base_url, "Token token=nope", timeout=5.0) as http, refused:
            http.request("GET", f"/issuer/groups/{fake.group}")


def test_accredible_search_pages_with_a_cursor() -> None:
    with FakeAccredible() as fake:
        target = AccredibleTarget(group_id=fake.group)
        group = fake.groups[fake.group]
        group.allow_duplicate_credentials = True
        with Transport("accredible", fake.base_url, accredible.authorization(fake.api_key), timeout=5.0) as http:
            client = accredible.AccredibleClient(http, target)
            for n in range(60):
                client.create(subject(credential_id=f"other-{n}"))
            mine = client.create(subject())
            assert client.find(subject()) == mine
            assert client.find(subject(credential_id="absent")) is None
        searches = fake.calls("POST", "/v2/credentials/search")
        assert [s.json()["page"].get("cursor") is not None for s in searches] == [False, True, False, True]


# --------------------------------------------------------------------------------------------------- settings


def test_mirror_settings_keep_tokens_secret_and_refuse_unsafe_urls(tmp_path: Path) -> None:
    settings = Settings(
        keys_dir=tmp_path, _env_file=None, credly_token="t0ken-credly", accredible_api_key="k3y-accredible",
    )  # fmt: skip
    assert settings.credly_base_url == "https://sandbox-api.credly.com/v1"
    assert settings.accredible_base_url == "https://sandbox.api.accredible.com/v1"
    assert "t0ken-credly" not in repr(settings) and "k3y-accredible" not in str(settings.model_dump())
    with pytest.raises(ValidationError, match="ending in /v1"):
        Settings(keys_dir=tmp_path, _env_file=None, credly_base_url="https://api.credly.com")
    with pytest.raises(ValidationError, match="must be https"):
        Settings(
            keys_dir=tmp_path, _env_file=None, env="production", base_url="https://badges.example",
            master_key="x" * 43, accredible_base_url="http://api.accredible.com/v1",
        )  # fmt: skip
