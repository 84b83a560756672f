"""Where a hot request's blocking work runs: on the event loop for SQLite, on a worker thread for PostgreSQL.

On SQLite the work is all CPU in this process (the database is a library call; the write lock is held for a
short transaction and waited for in a queue), so handing it to a thread only adds the hop: a future, a wake-up of
the loop through its self-pipe and two context switches, ~1 ms of CPU per request, a fifth of issuing one. On
PostgreSQL the work waits on round trips to the server, which a thread lets the loop overlap with other
requests. Measured with `python -m bench.service` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine

from .db.engine import is_postgres

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(engine: Engine, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if is_postgres(engine):
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
