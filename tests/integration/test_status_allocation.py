"""Status list allocation: each issuer draws random indexes from its newest list until it is half full, then a
new list is opened; two credentials never share an index (the database enforces it)."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from sqlmodel import Session, col, select

from issuer import audit
from issuer.db.tables import Credential, Issuer, StatusList
from issuer.issuance.service import IssuanceService
from issuer.services import Services
from issuer.status.allocation import STATUS_LIST_SIZE


def _issue(client: TestClient[Any], admin: dict[str, str], achievement_id: str, n: int) -> dict[str, Any]:
    response = client.post(
        "/api/v1/credentials",
        json={"achievement_id": achievement_id, "recipient": {"email": f"l{n}@example.org", "name": f"L {n}"}},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_new_list_opens_when_the_current_one_is_half_full(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, services: Services
) -> None:
    with Session(services.engine) as session:
        issuer = session.exec(select(Issuer).where(Issuer.is_default == True)).one()  # noqa: E712
        small = StatusList(issuer_id=issuer.id, size=8)  # newest list: drawn from until 4 entries are used
        session.add(small)
        session.commit()
        small_id = small.id

    issued = [_issue(client, admin, achievement_id, n) for n in range(6)]

    with Session(services.engine) as session:
        rows = session.exec(select(Credential).order_by(col(Credential.created_at), col(Credential.id))).all()
        lists = session.exec(select(StatusList).order_by(col(StatusList.id))).all()
    in_small = [row for row in rows if row.status_list_id == small_id]
    assert len(in_small) == 4  # half of 8
    assert len({row.status_index for row in in_small}) == 4 and all(0 <= r.status_index < 8 for r in in_small)
    newest = lists[-1]
    assert newest.id != small_id and newest.size == STATUS_LIST_SIZE
    assert {row.status_list_id for row in rows} == {small_id, newest.id}
    for credential in issued:  # each credential names the list it was drawn from
        entry = credential["credential"]["credentialStatus"]
        row = next(r for r in rows if r.id == credential["id"])
        assert entry["statusListCredential"].endswith(f"/status/{row.status_list_id}")
        assert entry["statusListIndex"] == str(row.status_index)


def _batch_of_three(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    rows = [
        {"achievement_id": achievement_id, "recipient": {"email": f"b{n}@example.org", "name": f"B {n}"}}
        for n in range(3)
    ]
    response = client.post("/api/v1/credentials/batch", headers=admin, json=rows)
    assert response.status_code == 200, response.text
    assert response.json()["issued"] == 3 and response.json()["failed"] == 0


def _stored(services: Services) -> tuple[list[Credential], bool]:
    with Session(services.engine) as session:
        return list(session.exec(select(Credential)).all()), audit.verify_chain(session).ok


def test_a_batch_row_that_drew_a_used_index_draws_again_before_the_write(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, services: Services, monkeypatch: Any
) -> None:
    draws = iter([5, 5, 6, 7, *range(8, 100)])
    monkeypatch.setattr("issuer.issuance.service.secrets.randbelow", lambda _n: next(draws))
    _issue(client, admin, achievement_id, 0)  # holds index 5
    _batch_of_three(client, admin, achievement_id)
    stored, audit_ok = _stored(services)
    assert sorted(c.status_index for c in stored) == [5, 6, 7, 8] and audit_ok  # only the row that drew 5 again


def test_a_batch_whose_transaction_conflicts_is_issued_row_by_row(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, services: Services, monkeypatch: Any
) -> None:
    """An index taken by a concurrent request after the batch looked (simulated: the look is skipped) undoes the
    chunk's whole transaction, and every row is then issued on its own: each row once, no index shared."""
    draws = iter([5, 5, 6, 7, *range(8, 100)])
    monkeypatch.setattr("issuer.issuance.service.secrets.randbelow", lambda _n: next(draws))
    monkeypatch.setattr(IssuanceService, "_redraw_taken", lambda _self, prepared, _taken: prepared)
    first = _issue(client, admin, achievement_id, 0)  # holds index 5
    _batch_of_three(client, admin, achievement_id)
    stored, audit_ok = _stored(services)
    assert len(stored) == 4 and len({(c.status_list_id, c.status_index) for c in stored}) == 4
    assert {c.status_index for c in stored} == {5, 8, 9, 10}  # the chunk's 5, 6, 7 were undone with it
    assert first["id"] in {c.id for c in stored} and audit_ok
