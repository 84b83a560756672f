"""Migrations run on both databases and the constraints that stop duplicates are really there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

import issuer.db.tables  # noqa: F401  (registers every table)
from issuer.db.engine import MIGRATIONS, make_engine, migrate
from issuer.db.tables import CompletionEvent, Issuer, Job


def test_migrations_create_every_table_and_are_idempotent(engine: Engine) -> None:
    migrate(engine)  # a second run changes nothing
    tables = set(inspect(engine).get_table_names())
    assert {"issuers", "signing_keys", "achievements", "credentials", "status_lists", "api_keys", "audit_log"} <= tables


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrations_match_the_tables(engine: Engine) -> None:
    """The migrated schema is what `issuer/db/tables.py` declares: a column or index added to a table without a
    migration (or the other way round) fails here, on both databases."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []
    listing = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = 'credentials'"
    )
    with engine.connect() as connection:
        indexes = set(connection.exec_driver_sql(listing).scalars())
    assert "credentials_email_achievement" in indexes  # expression indexes are invisible to compare_metadata


def test_only_one_default_issuer(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Issuer(id="a", did="did:web:x", name="A", is_default=True))
        session.add(Issuer(id="b", did="did:web:x:issuers:b", name="B", is_default=False))
        session.commit()
        session.add(Issuer(id="c", did="did:web:x:issuers:c", name="C", is_default=True))
        with pytest.raises(IntegrityError):
            session.commit()


def test_events_ignored_for_an_unmapped_course_before_0004_wait_or_are_decided(database_url: str) -> None:
    """Revision 0004 turns events that 0002-era code concluded `ignored` for want of a course mapping into
    `unmapped` ones (re-queued when the mapping is created), or, if the course is mapped by now, back to
    `received` with a decision job; other `ignored` events keep their decision."""
    engine = make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    old = "course 'C-{n}' is not mapped to an achievement on source 'lms'"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO issuers (id, did, name, is_default, created_at) "
                "VALUES ('i', 'did:web:x', 'I', true, CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO achievements (id, issuer_id, name, data, created_at, updated_at) "
                "VALUES ('a', 'i', 'A', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO lms_sources (id, platform, config, enabled, created_at) "
                "VALUES ('lms', 'generic', '{}', true, CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO course_mappings (source_id, course_id, achievement_id, created_at) "
                "VALUES ('lms', 'C-1', 'a', CURRENT_TIMESTAMP)"
            )
        )
        for event_id, course, reason in (
            ("e1", "C-1", old.format(n=1)),  # mapped since: decided now
            ("e2", "C-2", old.format(n=2)),  # still unmapped: waits
            ("e3", "C-1", "the learner already holds an active credential"),  # a real decision: stands
        ):
            connection.execute(
                text(
                    "INSERT INTO completion_events (id, source_id, external_id, event, state, decision, received_at) "
                    "VALUES (:id, 'lms', :id, :event, 'ignored', :decision, CURRENT_TIMESTAMP)"
                ),
                {
                    "id": event_id,
                    "event": json.dumps({"course_id": course}),
                    "decision": json.dumps({"outcome": "ignored", "reason": reason}),
                },
            )
    migrate(engine)
    with Session(engine) as session:
        states = {e.id: e for e in session.exec(select(CompletionEvent)).all()}
        jobs = session.exec(select(Job)).all()
    assert states["e1"].state == "received" and states["e1"].decision is None
    assert states["e2"].state == "unmapped" and states["e2"].decision is not None
    assert states["e2"].decision["outcome"] == "unmapped" and states["e2"].decision["course_id"] == "C-2"
    assert states["e3"].state == "ignored"
    assert [(j.kind, j.payload, j.state) for j in jobs] == [("process_completion", {"event_id": "e1"}, "pending")]
    assert jobs[0].run_after.tzinfo is not None
    engine.dispose()


def test_snapshots_read_in_a_fresh_process_before_any_orm_use(tmp_path: Path) -> None:
    """`models_of` builds objects outside the ORM; their attributes go through the mapping, which SQLAlchemy sets
    up at the first ORM use. A CLI process may read a snapshot first (`issuer issue` did, and failed)."""
    script = """
import sys
from sqlalchemy import text
from issuer.db.engine import make_engine
from issuer.db.rows import models_of, select_models
from issuer.db.tables import Issuer
engine = make_engine("sqlite:///" + sys.argv[1])
with engine.begin() as connection:
    connection.execute(text("CREATE TABLE issuers (id TEXT PRIMARY KEY, did TEXT, name TEXT, url TEXT, email TEXT,"
                            " description TEXT, image TEXT, is_default BOOLEAN, created_at DATETIME)"))
    connection.execute(text("INSERT INTO issuers VALUES ('a', 'did:web:x', 'A', NULL, NULL, NULL, NULL, 1,"
                            " '2026-01-01 00:00:00')"))
    row = connection.execute(select_models(Issuer)).first()
(issuer,) = models_of(row, Issuer)
print(issuer.id, issuer.did, issuer.is_default)
"""
    database = str(tmp_path / "fresh.db")
    done = subprocess.run(
        [sys.executable, "-c", script, database], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a", "did:web:x", "True"]
