"""SQLite WAL checkpoints on a thread of their own, so that no request pays for one.

By default SQLite checkpoints inside the commit that takes the write-ahead log past 1,000 pages: that commit copies
the log into the database file and fsyncs it, 100-200 ms on this VM's disk, while it holds the write lock (and,
here, the event loop of its process). Server processes instead checkpoint from this thread every fraction of a
second (PASSIVE: it takes no lock that writers or readers wait for, and sqlite3 releases the GIL meanwhile); their
connections keep a far higher automatic threshold only as a backstop in case the thread falls behind. Never
checkpointing is no answer either: a log that grows without bound makes reads slower (with checkpoints off, issuing
measured 4.9-6.0 against 3.2-3.4 ms of CPU per credential within minutes, on a VM whose speed also drifts).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

INTERVAL_S = 0.2
BACKSTOP_PAGES = 10_000  # ~40 MB of log: a connection checkpoints by itself only past this


class WalCheckpointer:
    """A daemon thread running `PRAGMA wal_checkpoint(PASSIVE)` on the database file every `interval` seconds."""

    def __init__(self, path: str, interval: float = INTERVAL_S) -> None:
        self.path = path
        self.interval = interval
        self.last: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def checkpoint(self, connection: sqlite3.Connection) -> tuple[int, int, int]:
        """(busy, frames in the log, frames copied into the database): SQLite's own answer."""
        busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.last = (busy, frames, copied)
        return self.last

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if connection is None:
                        connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                    self.checkpoint(connection)
                except sqlite3.Error as error:  # locked by another checkpointer, or the file is gone: next round
                    log.debug("WAL checkpoint skipped: %s", error)
        finally:
            if connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
