"""Migrations run on both databases and the constraints that stop duplicates are really there."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

import issuer.db.tables  # noqa: F401  (registers every table)
from issuer.db.engine import migrate
from issuer.db.tables import Issuer


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
    assert "credentials_recipient_email_lower" in indexes  # expression indexes are invisible to compare_metadata


def test_only_one_default_issuer(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Issuer(id="a", did="did:web:x", name="A", is_default=True))
        session.add(Issuer(id="b", did="did:web:x:issuers:b", name="B", is_default=False))
        session.commit()
        session.add(Issuer(id="c", did="did:web:x:issuers:c", name="C", is_default=True))
        with pytest.raises(IntegrityError):
            session.commit()
