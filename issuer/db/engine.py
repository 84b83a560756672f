"""Database engines: SQLite (embedded default, WAL) and PostgreSQL, one code path; migrations at start-up."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlmodel import Session

from .checkpoints import BACKSTOP_PAGES, WalCheckpointer

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def normalize_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (SQLAlchemy would otherwise pick psycopg2)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str, *, background_checkpoints: bool = False) -> Engine:
    """`background_checkpoints` (server processes, SQLite files): a thread checkpoints the write-ahead log, not
    the commits of requests (see `checkpoints`); it stops when the engine is disposed."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        in_file = bool(path) and path != ":memory:"
        if in_file:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        background = background_checkpoints and in_file
        pragmas = functools.partial(_sqlite_pragmas, autocheckpoint_pages=BACKSTOP_PAGES if background else 1000)
        event.listen(engine, "connect", pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        if background:
            checkpointer = WalCheckpointer(path)
            event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
            checkpointer.start()
        return engine
    # No pre-ping: it costs a round trip on every checkout, several per request. A connection PostgreSQL dropped
    # (a restart) fails the one operation that finds it, which invalidates the whole pool, and that operation's
    # transaction never committed: the API answers 5xx (clients and LMS senders retry), a job retries.
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=False, pool_recycle=3600)


def _sqlite_pragmas(connection: Any, _record: Any, *, autocheckpoint_pages: int) -> None:
    """WAL + synchronous=NORMAL: 3x faster commits, still durable across process crashes (research/perf.md).

    pysqlite's own implicit BEGIN is turned off so that `_sqlite_begin` decides how transactions start.
    """
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """Writers begin IMMEDIATE: a deferred transaction that read first cannot upgrade to a write once another
    writer committed (SQLITE_BUSY_SNAPSHOT), so check-then-insert would fail instead of waiting its turn."""
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    # Straight to the driver: exec_driver_sql's statement machinery cost ~60 us here, twice a request.
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


@functools.lru_cache(maxsize=64)
def writer(engine: Engine) -> Engine:
    """The same engine, for transactions that will write (takes SQLite's write lock up front). Cached: deriving an
    engine with other execution options costs ~50 us, paid on every write transaction otherwise."""
    return engine.execution_options(sqlite_immediate=True) if engine.dialect.name == "sqlite" else engine


@functools.lru_cache(maxsize=64)
def reader(engine: Engine) -> Engine:
    """The same engine, for reads that need no transaction: on PostgreSQL each statement runs on its own (no BEGIN
    and ROLLBACK round trips around a few SELECTs); SQLite reads are cheap either way."""
    return engine.execution_options(isolation_level="AUTOCOMMIT") if engine.dialect.name == "postgresql" else engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """One transaction: committed when the block ends normally, rolled back on any exception.

    SQLite writers first queue on a lock (a thread lock within the process, then an flock on a file beside the
    database across processes): SQLite's own busy handler makes waiters sleep and poll (1, 2, 5 ... 100 ms), so
    under contention a waiter that just missed the lock sleeps while later ones win.
    """
    queue = _sqlite_writer_queue(engine) if write and engine.dialect.name == "sqlite" else contextlib.nullcontext()
    with queue, Session(writer(engine) if write else engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def _sqlite_writer_queue(engine: Engine) -> Iterator[None]:
    path = engine.url.database
    key = engine.url.render_as_string()
    with _SQLITE_WRITERS.setdefault(key, threading.RLock()):
        state = _FLOCK_STATE.setdefault(key, [None, 0])
        if not path or path == ":memory:":
            yield
            return
        if state[1] == 0:  # the outermost writer of this process on this thread takes the file lock
            handle = open(f"{path}.writers", "a+b")  # noqa: SIM115 (held across the yield)
            fcntl.flock(handle, fcntl.LOCK_EX)
            state[0] = handle
        state[1] += 1
        try:
            yield
        finally:
            state[1] -= 1
            if state[1] == 0 and state[0] is not None:
                fcntl.flock(state[0], fcntl.LOCK_UN)
                state[0].close()
                state[0] = None


_SQLITE_WRITERS: dict[str, threading.RLock] = {}
_FLOCK_STATE: dict[str, list[Any]] = {}
