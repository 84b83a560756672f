"""The audit log is one unbroken hash chain on both databases, and tampering is reported at the right record."""

from __future__ import annotations

import enum
import hashlib
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text, update
from sqlmodel import Session, col, select

from issuer import audit
from issuer.db.engine import is_postgres, session_scope
from issuer.db.tables import AuditRecord

AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def _fill(engine: Engine, count: int) -> list[AuditRecord]:
    """`count` records, each committed in its own transaction; returned in id order."""
    for n in range(count):
        with session_scope(engine) as session:
            audit.append(
                session,
                actor="admin:alice",
                action="credential.issued",
                subject=f"cred-{n}",
                data={"n": n, "name": "Zoë Núñez", "issued": AT + timedelta(days=n)},
                at=AT + timedelta(minutes=n),
            )
    return _all(engine)


def _all(engine: Engine) -> list[AuditRecord]:
    with Session(engine) as session:
        return list(session.exec(select(AuditRecord).order_by(col(AuditRecord.id))).all())


def _verify(engine: Engine, *, batch_size: int = 1000) -> audit.ChainReport:
    with Session(engine) as session:
        return audit.verify_chain(session, batch_size=batch_size)


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


# --- the chain -----------------------------------------------------------------------------------------------------


def test_empty_log_is_ok(engine: Engine) -> None:
    assert _verify(engine) == audit.ChainReport(ok=True, records=0)


def test_chain_of_records_verifies_and_links(engine: Engine) -> None:
    rows = _fill(engine, 7)
    assert rows[0].prev_hash == audit.GENESIS_HASH
    assert [row.prev_hash for row in rows[1:]] == [row.hash for row in rows[:-1]]
    assert rows[3].data == {"n": 3, "name": "Zoë Núñez", "issued": "2024-01-05T03:04:05Z"}
    assert rows[3].at == AT + timedelta(minutes=3)
    assert _verify(engine) == audit.ChainReport(ok=True, records=7)
    assert _verify(engine, batch_size=2) == audit.ChainReport(ok=True, records=7)  # batches of 2, 2, 2, 1
    assert _verify(engine, batch_size=7) == audit.ChainReport(ok=True, records=7)  # exact batch + empty batch


def test_appends_share_the_callers_transaction(engine: Engine) -> None:
    _fill(engine, 1)
    with session_scope(engine) as session:
        first = audit.append(session, actor="system", action="a.one", subject=None, data={})
        second = audit.append(session, actor="system", action="a.two", subject=None, data={})
        assert second.prev_hash == first.hash

    def fail_after_append() -> None:
        with session_scope(engine) as session:
            audit.append(session, actor="system", action="rolled.back", subject=None, data={})
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_after_append()
    assert [row.action for row in _all(engine)] == ["credential.issued", "a.one", "a.two"]
    assert _verify(engine) == audit.ChainReport(ok=True, records=3)
    _fill(engine, 1)  # the chain continues after a rollback
    assert _verify(engine).ok


def test_edited_data_in_the_middle_is_reported_at_that_record(engine: Engine) -> None:
    rows = _fill(engine, 6)
    with engine.begin() as connection:
        connection.execute(update(AuditRecord).where(col(AuditRecord.id) == rows[3].id).values(data={"n": 99}))
    report = _verify(engine, batch_size=2)  # the break is in the second batch
    assert report == audit.ChainReport(
        ok=False,
        records=3,
        first_broken_id=rows[3].id,
        reason="hash does not match the record's contents (the record was edited)",
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "admin:mallory"), ("action", "credential.revoked"), ("subject", "cred-other"), ("subject", None)],
)
def test_edited_columns_are_reported(engine: Engine, column: str, value: str | None) -> None:
    rows = _fill(engine, 4)
    _sql(engine, f"UPDATE audit_log SET {column} = :value WHERE id = :id", value=value, id=rows[2].id)  # noqa: S608
    report = _verify(engine)
    assert (report.ok, report.records, report.first_broken_id) == (False, 2, rows[2].id)


def test_edited_time_is_reported(engine: Engine) -> None:
    rows = _fill(engine, 4)
    with engine.begin() as connection:
        new_at = rows[1].at + timedelta(seconds=1)
        connection.execute(update(AuditRecord).where(col(AuditRecord.id) == rows[1].id).values(at=new_at))
    assert _verify(engine).first_broken_id == rows[1].id


def test_deleted_middle_record_is_reported_at_the_next_one(engine: Engine) -> None:
    rows = _fill(engine, 5)
    _sql(engine, "DELETE FROM audit_log WHERE id = :id", id=rows[2].id)
    report = _verify(engine)
    assert (report.ok, report.records, report.first_broken_id) == (False, 2, rows[3].id)
    assert report.reason is not None
    assert report.reason.startswith(f"prev_hash does not link to record {rows[1].id}")


def test_deleted_first_record_is_reported(engine: Engine) -> None:
    rows = _fill(engine, 3)
    _sql(engine, "DELETE FROM audit_log WHERE id = :id", id=rows[0].id)
    report = _verify(engine)
    assert (report.ok, report.records, report.first_broken_id) == (False, 0, rows[1].id)
    assert report.reason is not None
    assert "the start of the log" in report.reason


def test_tampered_first_record_is_reported(engine: Engine) -> None:
    rows = _fill(engine, 3)
    _sql(engine, "UPDATE audit_log SET actor = 'someone-else' WHERE id = :id", id=rows[0].id)
    assert _verify(engine) == audit.ChainReport(
        ok=False,
        records=0,
        first_broken_id=rows[0].id,
        reason="hash does not match the record's contents (the record was edited)",
    )


def test_first_record_must_start_from_genesis(engine: Engine) -> None:
    rows = _fill(engine, 2)
    _sql(engine, "UPDATE audit_log SET prev_hash = :h WHERE id = :id", h="1" * 64, id=rows[0].id)
    report = _verify(engine)
    assert (report.records, report.first_broken_id) == (0, rows[0].id)


def test_edited_prev_hash_is_reported(engine: Engine) -> None:
    rows = _fill(engine, 4)
    _sql(engine, "UPDATE audit_log SET prev_hash = :h WHERE id = :id", h=rows[0].hash, id=rows[2].id)
    report = _verify(engine)
    assert (report.records, report.first_broken_id) == (2, rows[2].id)


def test_reordered_records_are_reported(engine: Engine) -> None:
    rows = _fill(engine, 4)
    a, b = rows[1].id, rows[2].id
    _sql(engine, "UPDATE audit_log SET id = :tmp WHERE id = :a", tmp=10_000, a=a)
    _sql(engine, "UPDATE audit_log SET id = :a WHERE id = :b", a=a, b=b)
    _sql(engine, "UPDATE audit_log SET id = :b WHERE id = :tmp", b=b, tmp=10_000)
    report = _verify(engine)
    assert (report.records, report.first_broken_id) == (1, a)


@pytest.mark.parametrize("begin", ["session_scope", "deferred"])
def test_appends_from_many_threads_form_one_line(engine: Engine, monkeypatch: pytest.MonkeyPatch, begin: str) -> None:
    """Through `session_scope` (BEGIN IMMEDIATE on SQLite) and through a plain Session (deferred BEGIN), where only
    audit.append's own serialization keeps the chain straight."""
    threads_count, per_thread = 8, 25
    read_latest = audit._latest_hash

    def slow_read_latest(session: Session, *, before_id: int | None = None) -> str:
        """Widen the read -> insert window: if the read were not under the lock, the chain would fork every time."""
        latest = read_latest(session, before_id=before_id)
        time.sleep(0.001)
        return latest

    monkeypatch.setattr(audit, "_latest_hash", slow_read_latest)
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for n in range(per_thread):
                with session_scope(engine) if begin == "session_scope" else Session(engine) as session:
                    audit.append(
                        session, actor=f"worker-{worker}", action="load.test", subject=f"{worker}-{n}", data={"n": n}
                    )
                    session.commit()
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    rows = _all(engine)
    assert len(rows) == threads_count * per_thread
    assert len({row.prev_hash for row in rows}) == len(rows)  # nobody shares a predecessor
    assert rows[0].prev_hash == audit.GENESIS_HASH
    assert [row.prev_hash for row in rows[1:]] == [row.hash for row in rows[:-1]]  # id order is chain order
    assert _verify(engine, batch_size=64) == audit.ChainReport(ok=True, records=len(rows))


@pytest.mark.postgresql_only
def test_postgres_refuses_snapshot_isolation(engine: Engine) -> None:
    """Under REPEATABLE READ the read after the lock could be stale and fork the chain."""
    assert is_postgres(engine)
    _fill(engine, 1)
    with (
        Session(engine.execution_options(isolation_level="REPEATABLE READ")) as session,
        pytest.raises(RuntimeError, match="READ COMMITTED"),
    ):
        audit.append(session, actor="system", action="x", subject=None, data={})


# --- input rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"password": "hunter2"},
        {"clientSecret": "s"},
        {"webhook_secret": "s"},
        {"api-token": "t"},
        {"ACCESS_TOKEN": "t"},
        {"key": {"encrypted_private_key": "k"}},
        {"settings": [{"ok": 1}, {"MasterKey": "m"}]},
        {"user": {"passwd": "p"}},
    ],
)
def test_secrets_are_refused_anywhere_in_data(engine: Engine, data: dict[str, Any]) -> None:
    with Session(engine) as session:
        with pytest.raises(ValueError, match="secrets must never be written") as raised:
            audit.append(session, actor="admin", action="settings.changed", subject=None, data=data)
        session.commit()
    assert "hunter2" not in str(raised.value)
    assert _all(engine) == []


def test_text_fields_are_checked_on_both_databases(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(ValueError, match="action must be"):
            audit.append(session, actor="admin", action="x" * 65, subject=None, data={})
        with pytest.raises(ValueError, match="actor must be"):
            audit.append(session, actor="", action="x", subject=None, data={})
        with pytest.raises(ValueError, match="naive"):
            audit.append(session, actor="admin", action="x", subject=None, data={}, at=datetime(2024, 1, 1))


class Color(enum.Enum):
    RED = "red"


def test_jsonable_converts_predictably() -> None:
    plus_two = timezone(timedelta(hours=2))
    converted = audit.jsonable(
        {
            "when": datetime(2024, 1, 2, 5, 4, 5, tzinfo=plus_two),
            "precise": datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
            "day": date(2024, 1, 2),
            "id": uuid.UUID(int=1),
            "amount": Decimal("10.50"),
            "color": Color.RED,
            "pair": (1, [2.5, None, True]),
        }
    )
    assert converted == {
        "when": "2024-01-02T03:04:05Z",
        "precise": "2024-01-02T03:04:05.120000Z",
        "day": "2024-01-02",
        "id": "00000000-0000-0000-0000-000000000001",
        "amount": "10.50",
        "color": "red",
        "pair": [1, [2.5, None, True]],
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"when": datetime(2024, 1, 1)}, ValueError),  # naive: which zone?
        ({"x": float("nan")}, ValueError),
        ({"x": float("inf")}, ValueError),
        ({"x": b"raw bytes"}, TypeError),
        ({"x": {1, 2}}, TypeError),
        ({"x": {1: "int key"}}, TypeError),
        ({"x": object()}, TypeError),
    ],
)
def test_jsonable_refuses_what_would_not_round_trip(data: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        audit.jsonable(data)


def test_converted_data_verifies_after_the_database_round_trip(engine: Engine) -> None:
    with session_scope(engine) as session:
        audit.append(
            session,
            actor="admin:李",
            action="achievement.updated",
            subject="ach-1",
            data={"at": datetime.now(UTC), "price": Decimal("1.10"), "ratio": 0.1, "big": 2**62, "text": 'محمد\n"q"'},
            at=datetime(2024, 6, 1, 12, 0, 0, 999999, tzinfo=timezone(timedelta(hours=-5))),
        )
    [row] = _all(engine)
    assert row.at == datetime(2024, 6, 1, 17, 0, 0, tzinfo=UTC)  # UTC, whole seconds
    assert _verify(engine).ok


# --- the hash ------------------------------------------------------------------------------------------------------


def test_hash_known_answer() -> None:
    inputs: dict[str, Any] = {
        "prev_hash": audit.GENESIS_HASH,
        "at": AT,
        "actor": "admin:alice",
        "action": "credential.issued",
        "subject": "urn:uuid:1",
        "data": {"name": "Zoë", "n": 1, "tags": ["a", "b"]},
    }
    serialization = (
        '["0000000000000000000000000000000000000000000000000000000000000000","2024-01-02T03:04:05Z",'
        '"admin:alice","credential.issued","urn:uuid:1",{"n":1,"name":"Zoë","tags":["a","b"]}]'
    )
    expected = "305e253b915f78c14b84f7bbd6ae9f4c58c63c3e6f8b44ca237e888e3a13b028"
    assert hashlib.sha256(serialization.encode()).hexdigest() == expected
    assert audit.record_hash(**inputs) == expected
    # The same instant written in another zone, or with a fraction of a second, is the same record.
    assert audit.record_hash(**{**inputs, "at": AT.astimezone(timezone(timedelta(hours=9)))}) == expected
    assert audit.record_hash(**{**inputs, "at": AT.replace(microsecond=500)}) == expected


def test_hash_ignores_key_order_but_not_content() -> None:
    def digest(data: dict[str, Any], subject: str | None = "s") -> str:
        return audit.record_hash(prev_hash=audit.GENESIS_HASH, at=AT, actor="a", action="b", subject=subject, data=data)

    assert digest({"b": 1, "a": {"y": 2, "x": 3}}) == digest({"a": {"x": 3, "y": 2}, "b": 1})
    assert digest({"a": 1}) != digest({"a": "1"})
    assert digest({}, subject=None) != digest({}, subject="")
    assert digest({}, subject=None) != digest({}, subject="null")


# --- listing -------------------------------------------------------------------------------------------------------


def test_records_newest_first_with_filters_and_paging(engine: Engine) -> None:
    with session_scope(engine) as session:
        for n in range(6):
            action = "credential.revoked" if n % 3 == 2 else "credential.issued"
            audit.append(session, actor="admin", action=action, subject=f"cred-{n % 2}", data={"n": n})
    with Session(engine) as session:
        assert [r.data["n"] for r in audit.records(session)] == [5, 4, 3, 2, 1, 0]
        page = audit.records(session, limit=4)
        assert [r.data["n"] for r in page] == [5, 4, 3, 2]
        assert [r.data["n"] for r in audit.records(session, limit=4, before_id=page[-1].id)] == [1, 0]
        assert [r.data["n"] for r in audit.records(session, subject="cred-0")] == [4, 2, 0]
        assert [r.data["n"] for r in audit.records(session, action="credential.revoked")] == [5, 2]
        assert [r.data["n"] for r in audit.records(session, subject="cred-1", action="credential.issued")] == [3, 1]
        assert audit.records(session, subject="nobody") == []
        with pytest.raises(ValueError, match="limit"):
            audit.records(session, limit=0)
        with pytest.raises(ValueError, match="limit"):
            audit.records(session, limit=audit.MAX_PAGE + 1)


def test_appends_in_one_transaction_link_to_each_other_and_the_next_transaction_reads_the_head(
    engine: Engine,
) -> None:
    """Later appends in a transaction link to the record the earlier one wrote (no second lock or read); a new
    transaction, or a savepoint, reads the newest record again. The chain stays one line either way."""
    with session_scope(engine) as session:
        first = audit.append(session, actor="t", action="a.one", subject=None, data={})
        second = audit.append(session, actor="t", action="a.two", subject=None, data={})
        assert second.prev_hash == first.hash
    with session_scope(engine) as session:
        third = audit.append(session, actor="t", action="a.three", subject=None, data={})
        assert third.prev_hash == second.hash
        with session.begin_nested():
            nested = audit.append(session, actor="t", action="a.nested", subject=None, data={})
            assert nested.prev_hash == third.hash
        fourth = audit.append(session, actor="t", action="a.four", subject=None, data={})
        assert fourth.prev_hash == nested.hash
    with Session(engine) as session:
        assert audit.verify_chain(session).ok
