"""Which status list a new credential draws its random index from.

Each issuer draws from its newest list until that list is half full (random draws stay cheap and collisions rare;
a collision is caught by the unique constraint and drawn again), then a new list is opened. Counting a list's
entries is a scan, so a process counts again only every `size // 512` draws (256 for a full-size list): several
processes may overshoot the half by that much each, which is harmless.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from ..db.engine import session_scope
from ..db.tables import Credential, StatusList

STATUS_LIST_SIZE = 131_072  # the Bitstring Status List minimum (16 KiB), for group privacy
RECOUNT_FRACTION = 512


@dataclass(frozen=True)
class OpenList:
    id: int
    size: int


class StatusListChooser:
    """Per process and issuer: the list to draw from and how many draws are left before counting again."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._current: dict[str, tuple[OpenList, int]] = {}

    def current(self, session: Session, issuer_id: str) -> OpenList | None:
        """The issuer's list with room, or None when a new one must be opened (`open`)."""
        with self._lock:
            known = self._current.get(issuer_id)
            if known is not None and known[1] > 0:
                self._current[issuer_id] = (known[0], known[1] - 1)
                return known[0]
        latest = session.exec(
            select(StatusList).where(StatusList.issuer_id == issuer_id).order_by(col(StatusList.id).desc())
        ).first()
        if latest is None or latest.id is None:
            return None
        used = session.exec(select(func.count()).where(Credential.status_list_id == latest.id)).one()
        if used >= latest.size // 2:
            return None
        chosen = OpenList(latest.id, latest.size)
        with self._lock:
            self._current[issuer_id] = (chosen, latest.size // RECOUNT_FRACTION)
        return chosen

    def open(self, issuer_id: str) -> OpenList:
        """A new list (its own short write; two processes opening one at once just make two lists)."""
        with session_scope(self.engine) as session:
            fresh = StatusList(issuer_id=issuer_id, size=STATUS_LIST_SIZE)
            session.add(fresh)
            session.flush()
            assert fresh.id is not None
            chosen = OpenList(fresh.id, fresh.size)
        with self._lock:
            self._current[issuer_id] = (chosen, chosen.size // RECOUNT_FRACTION)
        return chosen
