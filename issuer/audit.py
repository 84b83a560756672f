"""Append-only, hash-chained audit log.

Each record's hash covers its predecessor's hash, so editing, deleting or reordering any record breaks every link
after it, and `verify_chain` names the first broken one. Appends run inside the caller's transaction (the credential
and its audit record commit together) and are serialized per database so that two writers can never link to the
same predecessor: the chain stays one line.

Limits: a chain proves integrity only relative to its newest hash. Removing records from the *end*, or rewriting any
record and recomputing every hash after it, is undetectable from the table alone; anchor the head hash elsewhere
(logs, backups, a timestamping service) for that.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from issuer.db.rows import insert_row
from issuer.db.tables import AuditRecord, utcnow

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first record."""

# session.info key: (the transaction, the hash of the record it appended last). The transaction object is kept,
# so the identity check cannot match a later transaction.
_HEAD = "issuer.audit.head"

# pg_advisory_xact_lock key: the first 8 bytes of sha256(b"issuer.audit_log append"), as a signed bigint.
_PG_LOCK_KEY = -4442863111943908134

# Compared against keys lowercased with everything but letters and digits removed, so `clientSecret`,
# `api-token`, `encrypted_private_key` and `MASTER_KEY` are all caught. Deliberately broad: a false positive
# costs a rename, a false negative puts a secret in a permanent, append-only log.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "privatekey", "masterkey")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# Column widths in issuer/db/tables.py: PostgreSQL enforces them and SQLite does not; checked here so both agree.
_MAX_ACTOR, _MAX_ACTION, _MAX_SUBJECT = 200, 64, 512
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of `verify_chain`. `records` counts the records, from the first, that form an intact chain."""

    ok: bool
    records: int
    first_broken_id: int | None = None
    reason: str | None = None


# --- pure parts -------------------------------------------------------------------------------------------------


def iso_z(moment: datetime) -> str:
    """`2024-01-02T03:04:05Z` (fractional seconds only when present): one spelling per instant."""
    if moment.utcoffset() is None:
        raise ValueError("naive datetime: audit times must be timezone-aware")
    moment = moment.astimezone(UTC)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of `data` that survives the database round trip unchanged, so its hash can be recomputed.

    Conversions: aware datetime -> UTC ISO 8601 `Z` string (see `iso_z`); date -> `YYYY-MM-DD`; UUID -> str;
    Enum -> its value; Decimal -> str (exact); tuple -> list. Refused (misuse): naive datetimes, NaN/Infinity,
    non-string keys, any other type (bytes, sets, objects: convert them yourself), and keys that name secrets.
    """
    return _convert(data, "data")  # type: ignore[no-any-return]


def _convert(value: Any, path: str) -> Any:
    if isinstance(value, enum.Enum):
        return _convert(value.value, path)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not representable in JSON")
        return value
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string")
            if any(word in _NOT_ALNUM.sub("", key.lower()) for word in _SECRET_WORDS):
                raise ValueError(f"{path}[{key!r}]: secrets must never be written to the audit log")
            converted[key] = _convert(item, f"{path}[{key!r}]")
        return converted
    if isinstance(value, list | tuple):
        return [_convert(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"{path}: {type(value).__name__} is not JSON-safe; convert it before auditing")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(
    *, prev_hash: str, at: datetime, actor: str, action: str, subject: str | None, data: Mapping[str, Any]
) -> str:
    """SHA-256 hex of the UTF-8 canonical JSON array `[prev_hash, at, actor, action, subject, data]`.

    `at` is ISO 8601 UTC with `Z` and whole seconds; JSON has sorted keys, no whitespace, and non-ASCII kept as is.
    An array of JSON strings cannot be made ambiguous by field contents (no delimiter games). Defined once here:
    `append` and `verify_chain` both call it.
    """
    payload = [prev_hash, iso_z(at.replace(microsecond=0)), actor, action, subject, dict(data)]
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


# --- database ---------------------------------------------------------------------------------------------------


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str | None,
    data: dict[str, Any],
    at: datetime | None = None,
) -> AuditRecord:
    """Add one record to the chain inside the caller's transaction; the caller commits (or rolls back).

    Append late in the transaction: from here until the commit, other appenders wait for this one. On SQLite use a
    writing transaction (BEGIN IMMEDIATE, `session_scope`'s default): a DEFERRED one that has already read cannot
    take the write lock once another writer has committed, and SQLite raises "database is locked".
    """
    _check_text("actor", actor, _MAX_ACTOR)
    _check_text("action", action, _MAX_ACTION)
    if subject is not None:
        _check_text("subject", subject, _MAX_SUBJECT)
    moment = utcnow() if at is None else _whole_seconds(at)
    clean = jsonable(data)

    record = AuditRecord(
        at=moment, actor=actor, action=action, subject=subject, data=clean, prev_hash=GENESIS_HASH, hash=""
    )
    nested = session.in_nested_transaction()  # a savepoint may roll back what it appended: never trust a head
    transaction = session.get_transaction()
    head = None if nested else session.info.get(_HEAD)
    if head is not None and transaction is not None and head[0] is transaction:
        # An earlier append in this very transaction holds the lock (PostgreSQL's advisory lock, SQLite's write
        # lock) until commit, so the record it wrote is still the newest: link to it without asking again.
        record.prev_hash = head[1]
    elif session.get_bind().dialect.name == "postgresql":
        _lock_postgres(session)
        record.prev_hash = _latest_hash(session)
    elif session.connection().get_execution_options().get("sqlite_immediate", False):
        # BEGIN IMMEDIATE (`session_scope`'s writers): the write lock is held from the start, nobody else can
        # commit until we do, so the newest record read now stays the newest: read, then insert once.
        record.prev_hash = _latest_hash(session)
    else:
        # SQLite: write first. The transaction may have begun DEFERRED, where a read takes no lock, so a read-first
        # appender could pick a predecessor that another writer is extending right now. The INSERT takes the write
        # lock (waiting up to busy_timeout); a WAL transaction holding it reads the newest committed state (SQLite
        # refuses the write with SQLITE_BUSY_SNAPSHOT otherwise: an error, never a fork) and nobody else can
        # commit until we do. In a BEGIN IMMEDIATE transaction the lock is already held and this costs one UPDATE.
        record.hash = f"pending-{uuid.uuid4().hex}"  # unique placeholder, replaced before this function returns
        session.add(record)
        session.flush()
        record.prev_hash = _latest_hash(session, before_id=record.id)
    record.hash = record_hash(
        prev_hash=record.prev_hash, at=moment, actor=actor, action=action, subject=subject, data=clean
    )
    if record.id is None:
        insert_row(session, record)  # one INSERT, no unit of work: every issuance appends a record
    else:
        session.add(record)
        session.flush()
    session.info[_HEAD] = None if nested else (transaction, record.hash)
    return record


def _check_text(name: str, value: str, limit: int) -> None:
    if not value or len(value) > limit:
        raise ValueError(f"{name} must be 1..{limit} characters")


def _whole_seconds(at: datetime) -> datetime:
    if at.utcoffset() is None:
        raise ValueError("naive datetime: audit times must be timezone-aware")
    return at.astimezone(UTC).replace(microsecond=0)


_LOCK = sa_select(func.pg_advisory_xact_lock(_PG_LOCK_KEY), func.current_setting("transaction_isolation"))


def _lock_postgres(session: Session) -> None:
    """Serialize appenders until commit/rollback, and make sure the next read sees the newest record.

    Under READ COMMITTED every statement takes a fresh snapshot, so the read after the lock sees every record
    committed by earlier lock holders. Under REPEATABLE READ / SERIALIZABLE the snapshot may predate the lock and
    the chain would fork, so that is refused.
    """
    _, isolation = session.connection().execute(_LOCK).one()
    if isolation != "read committed":
        raise RuntimeError(f"audit.append needs a READ COMMITTED transaction on PostgreSQL, not {isolation!r}")


_LATEST = sa_select(col(AuditRecord.hash)).order_by(col(AuditRecord.id).desc()).limit(1)  # built once: hot path
_LATEST_BEFORE = _LATEST.where(col(AuditRecord.id) < bindparam("before"))


def _latest_hash(session: Session, *, before_id: int | None = None) -> str:
    connection = session.connection()
    if before_id is None:
        latest = connection.execute(_LATEST).scalar()
    else:
        latest = connection.execute(_LATEST_BEFORE, {"before": before_id}).scalar()
    return GENESIS_HASH if latest is None else str(latest)


def verify_chain(session: Session, *, batch_size: int = 1000) -> ChainReport:
    """Recompute every hash in id order and check every link; report the first break.

    Reads plain rows through the session's connection in keyset-paginated batches (no ORM objects, no identity
    map), so memory stays flat however long the log is.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    columns = (
        col(AuditRecord.id),
        col(AuditRecord.at),
        col(AuditRecord.actor),
        col(AuditRecord.action),
        col(AuditRecord.subject),
        col(AuditRecord.data),
        col(AuditRecord.prev_hash),
        col(AuditRecord.hash),
    )
    expected_prev, previous_id, intact, last_id = GENESIS_HASH, None, 0, None
    while True:
        statement = sa_select(*columns).order_by(col(AuditRecord.id)).limit(batch_size)
        if last_id is not None:
            statement = statement.where(col(AuditRecord.id) > last_id)
        batch = session.connection().execute(statement).all()
        for id_, at, actor, action, subject, data, prev_hash, stored_hash in batch:
            if prev_hash != expected_prev:
                after = "the start of the log" if previous_id is None else f"record {previous_id}"
                reason = f"prev_hash does not link to {after} (a record before it was deleted, inserted or edited)"
                return ChainReport(ok=False, records=intact, first_broken_id=id_, reason=reason)
            computed = record_hash(prev_hash=prev_hash, at=at, actor=actor, action=action, subject=subject, data=data)
            if computed != stored_hash:
                reason = "hash does not match the record's contents (the record was edited)"
                return ChainReport(ok=False, records=intact, first_broken_id=id_, reason=reason)
            expected_prev, previous_id, intact = stored_hash, id_, intact + 1
        if len(batch) < batch_size:
            return ChainReport(ok=True, records=intact)
        last_id = batch[-1][0]


def records(
    session: Session,
    *,
    subject: str | None = None,
    action: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditRecord]:
    """Newest first; page with `before_id` = the last id of the previous page (stable while records are added)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    statement = select(AuditRecord).order_by(col(AuditRecord.id).desc()).limit(limit)
    if subject is not None:
        statement = statement.where(AuditRecord.subject == subject)
    if action is not None:
        statement = statement.where(AuditRecord.action == action)
    if before_id is not None:
        statement = statement.where(col(AuditRecord.id) < before_id)
    return list(session.exec(statement).all())
