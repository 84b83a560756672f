"""Migrations run on both databases and the constraints that stop duplicates are really there."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from issuer.db.engine import migrate
from issuer.db.tables import Issuer


def test_migrations_create_every_table_and_are_idempotent(engine: Engine) -> None:
    migrate(engine)  # a second run changes nothing
    tables = set(inspect(engine).get_table_names())
    assert {"issuers", "signing_keys", "achievements", "credentials", "status_lists", "api_keys", "audit_log"} <= tables


def test_only_one_default_issuer(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Issuer(id="a", did="did:web:x", name="A", is_default=True))
        session.add(Issuer(id="b", did="did:web:x:issuers:b", name="B", is_default=False))
        session.commit()
        session.add(Issuer(id="c", did="did:web:x:issuers:c", name="C", is_default=True))
        with pytest.raises(IntegrityError):
            session.commit()
