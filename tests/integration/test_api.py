"""The service through its HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient
from sqlmodel import Session, select

from issuer import audit
from issuer.db.engine import session_scope
from issuer.db.tables import AuditRecord, Credential
from issuer.services import Services
from verifier import VerifyOptions, verify_credential

from .conftest import ClientFetcher, count, problem, token_with


def _verify(client: TestClient[Any], credential: Any) -> Any:
    options = VerifyOptions(fetcher=ClientFetcher(client), allow_http_loopback=True, strict_keys=True)
    return verify_credential(credential, options)


def _issue(client: TestClient[Any], headers: dict[str, str], achievement_id: str, **extra: Any) -> Any:
    body = {"achievement_id": achievement_id, "recipient": {"email": "ada@example.org", "name": "Ada Lovelace"}}
    return client.post("/api/v1/credentials", headers=headers, json=body | extra)


def test_issue_and_verify_through_the_public_endpoints(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    response = _issue(client, admin, achievement_id, format="both")
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == body["url"] == f"http://issuer.test/credentials/{body['id']}"
    credential = body["credential"]
    assert credential["credentialSubject"]["achievement"]["name"] == "Data Analysis"
    assert credential["issuer"]["id"] == "did:web:issuer.test"
    assert credential["proof"][0]["cryptosuite"] == "eddsa-rdfc-2022"
    for form in (credential, body["jwt"]):
        report = _verify(client, form)
        assert report.verdict.value == "valid", report.to_dict()["checks"]
        assert report.check("status").status.value == "passed"
    public = client.get(f"/credentials/{body['id']}", headers={"Accept": "application/ld+json"})
    assert public.json() == credential
    assert client.get(f"/credentials/{body['id']}", headers={"Accept": "application/jwt"}).text == body["jwt"]
    assert "Ada Lovelace" in client.get(f"/credentials/{body['id']}", headers={"Accept": "text/html"}).text


def test_jwt_only_returns_the_token(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    response = _issue(client, admin, achievement_id, format="jwt")
    assert response.status_code == 201
    token = response.json()["credential"]
    assert isinstance(token, str) and token.count(".") == 2
    assert _verify(client, token).verified


def test_recipient_with_a_did(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    body = {"achievement_id": achievement_id, "recipient": {"did": "did:example:learner-7"}}
    response = client.post("/api/v1/credentials", headers=admin, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["credential"]["credentialSubject"]["id"] == "did:example:learner-7"


def test_idempotency_key(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    headers = admin | {"Idempotency-Key": "enrolment-42"}
    first = _issue(client, headers, achievement_id)
    again = _issue(client, headers, achievement_id)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = _issue(client, headers, achievement_id, valid_until="2099-01-01T00:00:00Z")
    problem(other, 409, "idempotency-key-reused")
    assert count(services, Credential) == 1


def test_concurrent_identical_requests_make_one_credential(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    headers = admin | {"Idempotency-Key": "concurrent-1"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: _issue(client, headers, achievement_id), range(10)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert count(services, Credential) == 1


def test_bad_input_gets_a_problem_and_writes_nothing(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"recipient": {"email": "a@example.org", "name": "A"}}, 422, "validation"),  # no achievement_id
        ({"achievement_id": "nope", "recipient": {"email": "a@example.org", "name": "A"}}, 422, "validation"),
        ({"achievement_id": achievement_id, "recipient": {"email": "not-an-email", "name": "A"}}, 422, "validation"),
        ({"achievement_id": achievement_id, "recipient": {"email": "a@example.org"}}, 422, "validation"),
        (
            {"achievement_id": achievement_id, "recipient": {"email": "a@example.org", "name": "A\x00B"}},
            422,
            "validation",
        ),
        ({"achievement_id": achievement_id, "recipient": {"did": "https://not-a-did.example"}}, 422, "validation"),
        ({"achievement_id": achievement_id, "recipient": {"did": "did:x:1"}, "favourite": 1}, 422, "validation"),
        (
            {"achievement_id": achievement_id, "recipient": {"did": "did:x:1"}, "valid_until": "2001-01-01T00:00:00Z"},
            422,
            "validation",
        ),
        ({"achievement_id": achievement_id, "recipient": {"did": "did:x:1"}, "format": "pdf"}, 422, "validation"),
    ]
    for body, status, slug in cases:
        detail = problem(client.post("/api/v1/credentials", headers=admin, json=body), status, slug)["detail"]
        assert detail
    problem(
        client.post("/api/v1/credentials", headers=admin | {"Content-Type": "application/json"}, content=b"{not json"),
        400,
        "bad-request",
    )
    problem(
        client.post(
            "/api/v1/credentials",
            headers=admin | {"Content-Type": "application/json"},
            content=b'{"achievement_id": "\xff\xfe"}',
        ),
        400,
        "bad-request",
    )
    big = {
        "achievement_id": achievement_id,
        "recipient": {"did": "did:x:1"},
        "evidence": [{"narrative": "x" * 2_000_000}],
    }
    problem(client.post("/api/v1/credentials", headers=admin, json=big), 413, "payload-too-large")
    assert count(services, Credential) == 0


def test_auth_and_scopes(client: TestClient[Any], services: Services, achievement_id: str) -> None:
    problem(_issue(client, {}, achievement_id), 401, "unauthorized")
    problem(_issue(client, {"Authorization": "Bearer ob3_nope_nope"}, achievement_id), 401, "unauthorized")
    reader = {"Authorization": f"Bearer {token_with(services, 'read')}"}
    problem(_issue(client, reader, achievement_id), 403, "forbidden")
    assert client.get("/api/v1/achievements", headers=reader).status_code == 200
    issuer_key = {"Authorization": f"Bearer {token_with(services, 'issue')}"}
    assert _issue(client, issuer_key, achievement_id).status_code == 201
    problem(client.post("/api/v1/achievements", headers=issuer_key, json={}), 403, "forbidden")


def test_achievements_crud(client: TestClient[Any], admin: dict[str, str]) -> None:
    body = {
        "name": "<b>Welding</b> Safety",
        "description": "Safe welding practice.",
        "criteria": {"narrative": "Pass the practical.", "id": "https://example.org/criteria/weld"},
        "image": {"id": "https://example.org/weld.png", "caption": "A torch"},
        "achievementType": "ext:SafetyTicket",
        "tag": ["safety"],
        "validForDays": 365,
        "alignment": [{"targetName": "ISO 9606", "targetUrl": "https://www.iso.org/standard/54936.html"}],
        "resultDescription": [{"name": "Score", "resultType": "Percent"}],
    }
    created = client.post("/api/v1/achievements", headers=admin, json=body)
    assert created.status_code == 201, created.text
    achievement = created.json()
    ob3 = achievement["achievement"]
    assert ob3["id"] == achievement["url"] and ob3["type"] == ["Achievement"]
    assert ob3["image"] == {"type": "Image", "id": "https://example.org/weld.png", "caption": "A torch"}
    assert ob3["alignment"][0]["type"] == ["Alignment"]
    assert ob3["resultDescription"][0]["id"] == f"{achievement['url']}/results/1"
    got = client.get(f"/api/v1/achievements/{achievement['id']}", headers=admin).json()
    assert got == achievement
    patched = client.patch(f"/api/v1/achievements/{achievement['id']}", headers=admin, json={"name": "Welding Safety"})
    assert patched.status_code == 200 and patched.json()["achievement"]["name"] == "Welding Safety"
    listing = client.get("/api/v1/achievements?limit=10", headers=admin).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == achievement["id"]
    public = client.get(f"/achievements/{achievement['id']}").json()
    assert public["name"] == "Welding Safety" and public["@context"][0] == "https://www.w3.org/ns/credentials/v2"
    problem(client.get("/api/v1/achievements/missing", headers=admin), 404, "not-found")
    problem(
        client.post("/api/v1/achievements", headers=admin, json={**body, "achievementType": "Trophy"}),
        422,
        "validation",
    )
    problem(client.post("/api/v1/achievements", headers=admin, json={**body, "criteria": {}}), 422, "validation")
    problem(
        client.patch(f"/api/v1/achievements/{achievement['id']}", headers=admin, json={"name": None}), 422, "validation"
    )


def test_html_in_names_is_escaped_on_the_page(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    body = {
        "achievement_id": achievement_id,
        "recipient": {"email": "x@example.org", "name": "<script>alert(1)</script>"},
    }
    issued = client.post("/api/v1/credentials", headers=admin, json=body).json()
    page = client.get(f"/credentials/{issued['id']}", headers={"Accept": "text/html"}).text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_batch_json_and_csv(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    rows = [
        {"achievement_id": achievement_id, "recipient": {"email": f"l{i}@example.org", "name": f"Learner {i}"}}
        for i in range(5)
    ]
    rows.insert(2, {"achievement_id": achievement_id, "recipient": {"email": "broken"}})
    result = client.post("/api/v1/credentials/batch", headers=admin, json=rows).json()
    assert (result["issued"], result["failed"]) == (5, 1)
    assert result["results"][2]["status"] == "error" and "recipient" in result["results"][2]["error"]
    csv_text = (
        f"email,name,achievement_id\nc1@example.org,Cohort One,{achievement_id}\nnot-an-email,Two,{achievement_id}\n"
    )
    csv_result = client.post(
        "/api/v1/credentials/batch", headers=admin | {"Content-Type": "text/csv"}, content=csv_text.encode()
    ).json()
    assert (csv_result["issued"], csv_result["failed"]) == (1, 1)
    upload = client.post(
        "/api/v1/credentials/batch", headers=admin, files={"file": ("cohort.csv", csv_text.encode(), "text/csv")}
    ).json()
    assert upload["issued"] == 1
    assert count(services, Credential) == 7
    problem(
        client.post(
            "/api/v1/credentials/batch", headers=admin | {"Content-Type": "text/csv"}, content=b"colour\nred\n"
        ),
        400,
        "bad-request",
    )
    problem(
        client.post("/api/v1/credentials/batch", headers=admin | {"Content-Type": "application/xml"}, content=b"<x/>"),
        415,
        "unsupported-media-type",
    )


def test_public_documents(client: TestClient[Any], admin: dict[str, str]) -> None:
    did = client.get("/.well-known/did.json")
    assert did.status_code == 200 and did.headers["content-type"].startswith("application/did+json")
    document = did.json()
    assert document["id"] == "did:web:issuer.test"
    assert {m["type"] for m in document["verificationMethod"]} == {"Multikey", "JsonWebKey"}
    jwks = client.get("/.well-known/jwks.json").json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])
    profile = client.get("/issuers/default").json()
    assert profile["id"] == "did:web:issuer.test" and profile["name"] == "Example Institute"
    problem(client.get("/credentials/does-not-exist"), 404, "not-found")
    problem(client.get("/status/999"), 404, "not-found")
    assert client.get("/schema/openapi.json").json()["info"]["title"] == "ob3-issuer"


def test_every_issuance_is_audited(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    for _ in range(3):
        _issue(client, admin, achievement_id)
    with Session(services.engine) as session:
        report = audit.verify_chain(session)
        issued = [r for r in audit.records(session, action="credential.issued")]
    assert report.ok and report.records >= 4
    assert len(issued) == 3 and all(r.actor.startswith("api-key:") for r in issued)
    assert count(services, AuditRecord) == report.records


def test_dates_are_whole_seconds_utc(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    credential = _issue(client, admin, achievement_id).json()["credential"]
    valid_from = datetime.strptime(credential["validFrom"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - valid_from).total_seconds()) < 120


def test_reissue_keeps_the_id_and_bumps_valid_from(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    first = _issue(client, admin, achievement_id, format="both").json()
    client.patch(f"/api/v1/achievements/{achievement_id}", headers=admin, json={"name": "Data Analysis II"})
    again = client.post(f"/api/v1/credentials/{first['id']}/reissue", headers=admin)
    assert again.status_code == 200, again.text
    credential = again.json()["credential"]
    assert credential["id"] == first["credential"]["id"]
    assert credential["awardedDate"] == first["credential"]["validFrom"]
    assert credential["credentialSubject"]["achievement"]["name"] == "Data Analysis II"
    assert credential["credentialStatus"] == first["credential"]["credentialStatus"]
    assert credential["credentialSubject"]["identifier"] == first["credential"]["credentialSubject"]["identifier"]
    assert _verify(client, credential).verified and _verify(client, again.json()["jwt"]).verified
    problem(client.post("/api/v1/credentials/nope/reissue", headers=admin), 404, "not-found")


def test_reissue_with_a_new_valid_until_renews_even_an_expired_credential(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, services: Services
) -> None:
    first = _issue(client, admin, achievement_id).json()
    with session_scope(services.engine) as session:  # it expired yesterday
        row = session.get(Credential, first["id"])
        assert row is not None
        row.valid_until = datetime.now(UTC) - timedelta(days=1)
        session.add(row)
    problem(client.post(f"/api/v1/credentials/{first['id']}/reissue", headers=admin), 409, "conflict")
    past = {"valid_until": "2020-01-01T00:00:00Z"}
    problem(client.post(f"/api/v1/credentials/{first['id']}/reissue", headers=admin, json=past), 422, "validation")
    until = (datetime.now(UTC) + timedelta(days=365)).replace(microsecond=0)
    renewed = client.post(
        f"/api/v1/credentials/{first['id']}/reissue", headers=admin, json={"valid_until": until.isoformat()}
    )
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert body["id"] == first["id"] and body["valid_until"] == until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["credential"]["validUntil"] == body["valid_until"]
    assert _verify(client, body["credential"]).verdict.value == "valid"


def test_a_revoked_credential_is_replaced_only_when_asked(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, services: Services
) -> None:
    first = _issue(client, admin, achievement_id, format="both").json()
    client.post(f"/api/v1/credentials/{first['id']}/revoke", headers=admin, json={"reason": "wrong score"})
    problem(client.post(f"/api/v1/credentials/{first['id']}/reissue", headers=admin), 409, "credential-revoked")

    replaced = client.post(f"/api/v1/credentials/{first['id']}/reissue", headers=admin, json={"replace_revoked": True})
    assert replaced.status_code == 201, replaced.text
    body = replaced.json()
    assert body["id"] != first["id"] and body["replaces"] == first["id"] and not body["revoked"]
    new, old = body["credential"], first["credential"]
    assert new["credentialStatus"]["statusListIndex"] != old["credentialStatus"]["statusListIndex"] or (
        new["credentialStatus"]["statusListCredential"] != old["credentialStatus"]["statusListCredential"]
    )
    assert new["credentialSubject"]["identifier"] == old["credentialSubject"]["identifier"]
    assert new["awardedDate"] == old["validFrom"]
    assert _verify(client, new).verdict.value == "valid" and _verify(client, body["jwt"]).verdict.value == "valid"
    assert _verify(client, old).verdict.value == "revoked"  # revocation is never undone

    again = client.post(f"/api/v1/credentials/{first['id']}/reissue", headers=admin, json={"replace_revoked": True})
    assert again.status_code == 200 and again.json()["id"] == body["id"]  # one replacement, however often asked
    with Session(services.engine) as session:
        actions = session.exec(select(AuditRecord.action).where(AuditRecord.subject == body["id"])).all()
    assert actions == ["credential.replaced"]


def test_issuer_profiles_have_their_own_did(client: TestClient[Any], admin: dict[str, str]) -> None:
    created = client.post(
        "/api/v1/issuers",
        headers=admin,
        json={"id": "physics", "name": "Department of Physics", "url": "https://physics.example"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["did"] == "did:web:issuer.test:issuers:physics"
    problem(client.post("/api/v1/issuers", headers=admin, json={"id": "physics", "name": "Again"}), 409, "conflict")
    problem(client.post("/api/v1/issuers", headers=admin, json={"id": "Bad Slug!", "name": "X"}), 422, "validation")
    document = client.get("/issuers/physics/did.json").json()
    assert document["id"] == "did:web:issuer.test:issuers:physics"
    achievement = client.post(
        "/api/v1/achievements",
        headers=admin,
        json={
            "name": "Lab Safety",
            "description": "Works safely in the lab.",
            "criteria": {"narrative": "Pass."},
            "issuerId": "physics",
        },
    ).json()
    issued = _issue(client, admin, achievement["id"]).json()
    assert issued["credential"]["issuer"]["id"] == "did:web:issuer.test:issuers:physics"
    assert _verify(client, issued["credential"]).verified
    listing = client.get("/api/v1/issuers", headers=admin).json()
    assert [i["id"] for i in listing] == ["default", "physics"]


def test_credentials_verify_across_key_rotation_and_compromise_withdraws(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    from issuer.db.engine import session_scope
    from issuer.keyring import mark_compromised, rotate

    before = _issue(client, admin, achievement_id, format="both").json()
    with session_scope(services.engine) as session:
        new_ed = rotate(session, "default", "Ed25519", services.master_key)
        rotate(session, "default", "RS256", services.master_key)
    after = _issue(client, admin, achievement_id, format="both").json()
    assert after["credential"]["proof"][0]["verificationMethod"].endswith(new_ed.id)
    assert (
        before["credential"]["proof"][0]["verificationMethod"] != after["credential"]["proof"][0]["verificationMethod"]
    )
    for body in (before, after):
        for form in (body["credential"], body["jwt"]):
            assert _verify(client, form).verified
    document = client.get("/.well-known/did.json").json()
    assert len(document["verificationMethod"]) == 4  # two retired, two active
    old_key = before["credential"]["proof"][0]["verificationMethod"].split("#")[1]
    with session_scope(services.engine) as session:
        mark_compromised(session, old_key, services.master_key)
    report = _verify(client, before["credential"])
    assert not report.verified and report.check("issuer_key").status.value == "failed"
    assert _verify(client, after["credential"]).verified


def test_revocation_reaches_verifiers_and_the_list_is_cacheable(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    issued = _issue(client, admin, achievement_id, format="both").json()
    list_url = issued["credential"]["credentialStatus"]["statusListCredential"].removeprefix("http://issuer.test")
    first = client.get(list_url)
    assert first.status_code == 200 and first.headers["cache-control"] == "public, max-age=300"
    etag = first.headers["etag"]
    assert client.get(list_url, headers={"If-None-Match": etag}).status_code == 304
    revoked = client.post(
        f"/api/v1/credentials/{issued['id']}/revoke", headers=admin, json={"reason": "Issued in error"}
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True and revoked.json()["revocation_reason"] == "Issued in error"
    again = client.post(f"/api/v1/credentials/{issued['id']}/revoke", headers=admin, json={"reason": "again"})
    assert again.status_code == 200 and again.json()["already_revoked"] is True
    assert again.json()["revocation_reason"] == "Issued in error"
    changed = client.get(list_url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    for form in (issued["credential"], issued["jwt"]):
        report = _verify(client, form)
        assert report.verdict.value == "revoked", report.to_dict()["checks"]
    refused = problem(
        client.post(f"/api/v1/credentials/{issued['id']}/reissue", headers=admin), 409, "credential-revoked"
    )
    assert "replace_revoked" in refused["detail"]
    problem(client.post("/api/v1/credentials/nope/revoke", headers=admin, json={"reason": "x"}), 404, "not-found")
    problem(client.post(f"/api/v1/credentials/{issued['id']}/revoke", headers=admin, json={}), 422, "validation")
    with Session(services.engine) as session:
        assert len(audit.records(session, action="credential.revoked")) == 1


def test_concurrent_issuances_never_share_a_status_index(
    client: TestClient[Any], services: Services, admin: dict[str, str], achievement_id: str
) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda i: _issue(client, admin, achievement_id), range(40)))
    assert {r.status_code for r in responses} == {201}
    entries = {
        (
            r.json()["credential"]["credentialStatus"]["statusListCredential"],
            r.json()["credential"]["credentialStatus"]["statusListIndex"],
        )
        for r in responses
    }
    assert len(entries) == 40


def test_a_taken_status_index_is_never_shared(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, monkeypatch: Any
) -> None:
    """Force two issuances onto the same random index: the database constraint sends the second elsewhere."""
    draws = iter([5, 5, 6])
    monkeypatch.setattr("issuer.issuance.service.secrets.randbelow", lambda _n: next(draws))
    first = _issue(client, admin, achievement_id).json()["credential"]["credentialStatus"]["statusListIndex"]
    second = _issue(client, admin, achievement_id).json()["credential"]["credentialStatus"]["statusListIndex"]
    assert (first, second) == ("5", "6")
