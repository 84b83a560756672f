"""Server processes checkpoint SQLite's write-ahead log from a thread, not in the commits of requests."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from issuer.db.checkpoints import BACKSTOP_PAGES, WalCheckpointer
from issuer.db.engine import make_engine


def _wal_database(path: Path, rows: int) -> sqlite3.Connection:
    """Left open: the last connection to close would checkpoint the log itself."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")  # nobody checkpoints but the thread under test
    connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    for i in range(rows):
        connection.execute("INSERT INTO t (body) VALUES (?)", ("x" * 2000 + str(i),))
    return connection


def _wait_for(predicate: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_the_thread_copies_the_whole_log_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    writer = _wal_database(path, rows=300)
    size_before = path.stat().st_size
    checkpointer = WalCheckpointer(str(path), interval=0.02)
    checkpointer.start()
    try:
        assert _wait_for(lambda: checkpointer.last is not None and checkpointer.last[1] > 0)
        busy, frames, copied = checkpointer.last or (1, 0, 0)
        assert (busy, copied) == (0, frames)  # every frame of the log is in the database file now
        assert path.stat().st_size > size_before + 300 * 2000
    finally:
        checkpointer.stop()
        writer.close()
    assert not checkpointer.running


def test_server_engines_leave_checkpoints_to_the_thread_and_stop_it_when_disposed(tmp_path: Path) -> None:
    def checkpointers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "sqlite-checkpointer" and t.is_alive())

    before = checkpointers()
    engine = make_engine(f"sqlite:///{tmp_path / 'server.db'}", background_checkpoints=True)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == BACKSTOP_PAGES
    assert checkpointers() == before + 1
    engine.dispose()
    assert _wait_for(lambda: checkpointers() == before)

    plain = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")  # CLI commands, tests: SQLite's own checkpoints
    with plain.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    assert checkpointers() == before
    plain.dispose()
