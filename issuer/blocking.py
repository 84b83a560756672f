"""Where a hot request's blocking work runs: on the event loop when the database is local, else on a thread.

Issuing a credential, serving the verification page and taking in or deciding an LMS completion are nearly all
CPU in this process: the database is a library call (SQLite) or a loopback round trip of ~0.1 ms (PostgreSQL on
the same host). Handing such work to a thread only adds cost: a future, a wake-up of the loop through its
self-pipe, two context switches and the GIL passed back and forth between threads, ~1 ms of CPU per request. Run
on the loop, requests in one process simply take turns; `python -m bench.service` and `python -m bench.webhooks`
measured 20-80% more throughput that way on both databases (docs/benchmarks.md). With PostgreSQL on another host a
request would hold the loop through every round trip, so there the work goes to a thread and the loop keeps
serving while it waits.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine

P = ParamSpec("P")
T = TypeVar("T")

_LOCAL_HOSTS = frozenset({None, "", "localhost", "127.0.0.1", "::1"})


@functools.lru_cache(maxsize=64)
def runs_on_loop(engine: Engine) -> bool:
    """SQLite, or PostgreSQL on this host (loopback or a Unix socket): the hot paths run on the event loop."""
    if engine.dialect.name == "sqlite":
        return True
    query_host = engine.url.query.get("host")  # libpq's ?host=/run/postgresql (a str, or a tuple when repeated)
    host = engine.url.host or (query_host if isinstance(query_host, str) else None)
    return host in _LOCAL_HOSTS or (host is not None and host.startswith("/"))


async def run_blocking(engine: Engine, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if runs_on_loop(engine):
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
