"""Shared fixtures: every storage test runs on SQLite and on the local PostgreSQL.

Where no PostgreSQL answers, the suite says so loudly and runs SQLite only; under CI (CI=true) that is an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from issuer.db.engine import make_engine, migrate

PG_ADMIN_URL = os.environ.get("ISSUER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_answers() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


_PG_PROBLEM = _postgres_answers()
DATABASES = ["sqlite"] if _PG_PROBLEM else ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql_only: the test is about PostgreSQL behaviour; no SQLite variant")
    if _PG_PROBLEM and os.environ.get("CI") == "true":
        raise pytest.UsageError(f"CI=true but PostgreSQL does not answer at {PG_ADMIN_URL}: {_PG_PROBLEM}")


def pytest_report_header(config: pytest.Config) -> str:
    if _PG_PROBLEM:
        return (
            "!" * 100
            + f"\n!!! PostgreSQL does not answer ({_PG_PROBLEM}): storage tests ran on SQLITE ONLY\n"
            + "!" * 100
        )
    return "storage tests run on SQLite and PostgreSQL"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _PG_PROBLEM:
        terminalreporter.write_line(
            f"WARNING: PostgreSQL did not answer ({_PG_PROBLEM}); storage tests ran on SQLite only", red=True, bold=True
        )


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the kind `request.param` names ("sqlite" or "postgresql")."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'issuer.db'}"
        return
    name = f"ob3_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on a fresh database."""
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Any test that uses `database_url` (directly or through `engine`, `app`, ...) runs once per database."""
    if "database_url" in metafunc.fixturenames:
        only_pg = metafunc.definition.get_closest_marker("postgresql_only") is not None
        metafunc.parametrize("database_url", [d for d in DATABASES if d == "postgresql" or not only_pg], indirect=True)
