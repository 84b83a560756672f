"""Deciding a completion in the process that received it, right after its 202, with the job as the safety net.

The job path alone costs a completion its wait for the worker (one thread per process, claiming batches, so one
process's worker may hold jobs the other's would run at once) plus three write transactions of job bookkeeping
(claim, start, finish) before and after the work. Here the webhook's process decides the freshly stored event
as soon as the event and its job are committed: `handle` runs while the LMS already has its 202, on the event
loop where the database is local (`issuer/blocking.py`), else in a small thread pool. The
event's job is stored due a little later (`GRACE`) and is finished by `conclude` in the same transaction that
decides the event, so in the normal case no worker ever runs it; if this process dies, or enrichment fails
(the LMS's API is down), the job runs after the grace with its usual retries. `handle` is idempotent, so the two
paths meeting is harmless.

Only where this process runs background work at all (`jobs_embedded`); with a separate `issuer worker`, the
job is due at once as before. Both ways are bounded: beyond `MAX_WAITING` events in flight, new ones are left to
the job workers (due at once), so a burst never builds an unbounded queue in memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from ..blocking import runs_on_loop
from ..db.tables import CompletionEvent as EventRow
from ..services import Services
from .adapters import Source
from .service import handle

log = logging.getLogger("issuer.webhooks")

GRACE = timedelta(seconds=60)  # the safety-net job becomes due this long after the 202
THREADS = 2  # per process: signing is CPU-bound and holds the GIL; more threads only queue on it
MAX_WAITING = 64

_pool: ThreadPoolExecutor | None = None
_waiting = 0
_lock = threading.Lock()
_on_loop: set[asyncio.Task[None]] = set()


def admit(services: Services, count: int) -> bool:
    """Whether `count` new events may be decided here (reserving their places); False: leave them to the jobs."""
    global _waiting
    if not services.settings.jobs_embedded:
        return False
    with _lock:
        if _waiting + count > MAX_WAITING:
            return False
        _waiting += count
        return True


def in_flight() -> int:
    """Events admitted and not yet done (for operators' curiosity and the tests)."""
    with _lock:
        return _waiting


def release(count: int) -> None:
    """Give back places reserved by `admit` that will not be used (duplicates, or the store failed)."""
    global _waiting
    with _lock:
        _waiting = max(0, _waiting - count)


def submit(services: Services, fresh: Iterable[tuple[EventRow, Source]]) -> None:
    """Decide each (already admitted) event, given as its row just stored and its source. Where the database is
    local, on the event loop (the caller runs there, `issuer/blocking.py`) as a task that first lets the 202 go
    out: deciding is then nearly all CPU in this process and a thread would only compete with the loop for the
    GIL. Else in the pool. Either way it runs even if the LMS hangs up before reading its answer, so every place
    `admit` reserved is given back."""
    global _pool
    events = list(fresh)
    if not events:
        return
    if runs_on_loop(services.engine):
        task = asyncio.get_running_loop().create_task(_decide_on_loop(services, events))
        _on_loop.add(task)  # the loop keeps only a weak reference to its tasks
        task.add_done_callback(_on_loop.discard)
        return
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="lms-decide")
        pool = _pool
    for event in events:
        pool.submit(_decide, services, event)


async def _decide_on_loop(services: Services, events: list[tuple[EventRow, Source]]) -> None:
    await asyncio.sleep(0)  # the request's own coroutine sends the 202 first
    for event in events:
        _decide(services, event)


def _decide(services: Services, fresh: tuple[EventRow, Source]) -> None:
    try:
        handle(services, fresh[0].id, fresh=fresh)
    except Exception as error:  # the job runs after the grace and retries with backoff
        log.warning("completion %s: deciding at once failed (%s); its job will retry", fresh[0].id, error)
    finally:
        release(1)
