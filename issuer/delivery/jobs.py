"""Background jobs: an outbox in the `jobs` table, run by an in-process worker thread or by `issuer worker`.

Why an outbox: a job row commits in the same transaction as what caused it (a credential), so "issued" and "will
be delivered" are one fact; a crash or an outage of the mail server delays a job, never drops it.

Life of a job. `enqueue` inserts it `pending` (a duplicate `dedupe_key` keeps the first job). `claim` moves due
jobs to `running` under a lease (`locked_by`, `locked_until`): PostgreSQL workers use `FOR UPDATE SKIP LOCKED`,
SQLite's single writer lock serializes claims. A job whose lease ran out (its worker died) is claimed again.
`run_one` *starts* the job by counting the attempt, re-checking that the claim is still ours and extending the
lease, then calls the handler. Every later write is fenced on (id, locked_by, attempts): a worker that lost its
lease can no longer change the job, and one job never runs twice at the same time as long as one attempt ends
(or `JobContext.checkpoint`s) within the lease. Outcomes: success -> `succeeded` with the handler's result; an
exception -> `pending` again after an exponential backoff with jitter, or `failed` (the dead letter, listed at
`GET /api/v1/jobs?state=failed`) once `max_attempts` attempts have been made or at once on `PermanentJobError`.
Attempts are counted when a job starts, not when it fails, so a job that kills its worker every time is still
dead-lettered instead of looping forever. `retry` puts a failed job back with a fresh set of attempts; its
`result` (for email: whether it was sent) is kept, so a retry never repeats work that was done.

Idempotency is each handler's job: an attempt can be cut off anywhere, and the next one must not redo what was
done. Handlers record progress with `ctx.checkpoint(...)` (committed at once, fenced) and read it back from
`ctx.result`. Handlers are registered with `@register(kind)`; `load_handlers` imports `HANDLER_MODULES`, and a
worker only claims kinds it has a handler for (others wait, visible as `pending`).
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Engine, and_, bindparam, event, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func, select

from ..db.engine import is_postgres, session_scope
from ..db.rows import models_of
from ..db.tables import Job
from ..errors import Conflict, NotFound

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("issuer.jobs")

STATES = ("pending", "running", "succeeded", "failed")
BACKOFF_BASE = 30.0  # seconds before the first retry; doubled per attempt
BACKOFF_CAP = 3600.0  # never wait longer than this between attempts
MAX_ERROR_CHARS = 500
NOTIFY_CHANNEL = "issuer_jobs"
HANDLER_MODULES = [
    "issuer.delivery.mailer",
    "issuer.delivery.reminders",
    "issuer.delivery.declines",
    "issuer.webhooks.service",
    "issuer.webhooks.talentlms",
    "issuer.delivery.mirrors.service",
]
"""Modules whose import registers handlers; `load_handlers` imports them (lazily: they import this module)."""


class PermanentJobError(Exception):
    """Raised by a handler when trying again cannot help (a refused recipient, a 4xx from a mirror): the job is
    dead-lettered at once. Its message becomes `last_error`: keep it short and free of secrets."""


class RetryLater(Exception):
    """Raised by a handler when the other side said when to come back (HTTP 429/503 with `Retry-After`): the job
    goes back to `pending`, due no earlier than `seconds` from now instead of after the usual backoff. It still
    counts as an attempt, so a server that never stops saying "later" ends in the dead letter like any failure."""

    def __init__(self, seconds: float, message: str) -> None:
        super().__init__(message)
        self.seconds = max(0.0, seconds)


class LeaseLost(Exception):
    """The claim is no longer ours (the lease ran out and another worker took the job): stop, write nothing."""


def now_utc() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------------- handlers


@dataclass
class JobContext:
    """What a handler gets: a snapshot of its job, the services, and `checkpoint` to record progress."""

    job: Job
    services: Services
    worker_id: str
    lease_seconds: float
    clock: Callable[[], datetime] = now_utc
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def checkpoint(self, **updates: Any) -> None:
        """Merge `updates` into `result` and commit it now, extending the lease; raises LeaseLost if the job is no
        longer ours. Call it before and right after an action that must not be repeated."""
        self.result.update(updates)
        now = self.clock()
        values = {"result": dict(self.result), "locked_until": now + timedelta(seconds=self.lease_seconds)}
        if not _fenced_update(self.services.engine, self.job, self.worker_id, now=now, **values):
            raise LeaseLost(f"job {self.job.id}: the lease was lost; another worker owns it now")


Handler = Callable[[JobContext], dict[str, Any] | None]
HANDLERS: dict[str, Handler] = {}


def register(kind: str) -> Callable[[Handler], Handler]:
    """Decorator: `@register("send_credential_email")` makes the function the handler of that kind."""

    def decorate(handler: Handler) -> Handler:
        if HANDLERS.get(kind, handler) is not handler:
            raise ValueError(f"a handler for job kind {kind!r} is already registered")
        HANDLERS[kind] = handler
        return handler

    return decorate


def load_handlers() -> None:
    for module in HANDLER_MODULES:
        import_module(module)


# --------------------------------------------------------------------------------------------------- enqueue


_JOB_COLUMNS = tuple(col(getattr(Job, column.name)) for column in Job.__table__.columns)  # type: ignore[attr-defined]
_ENQUEUED = ("kind", "subject", "dedupe_key", "payload", "state", "attempts", "max_attempts", "run_after")
_ENQUEUE = {  # per dialect, built once: constructing the statement costs more than running it
    dialect.dialect.name: dialect.insert(Job)
    .values({name: bindparam(name) for name in (*_ENQUEUED, "created_at", "updated_at")})
    .on_conflict_do_nothing(index_elements=["dedupe_key"])
    .returning(*_JOB_COLUMNS)
    for dialect in (postgresql, sqlite)
}


def enqueue(
    session: Session,
    *,
    kind: str,
    subject: str | None,
    dedupe_key: str,
    payload: dict[str, Any],
    run_after: datetime | None = None,
    max_attempts: int = 8,
) -> Job:
    """Add a job inside the caller's transaction (it commits or rolls back with the caller's work).

    A job with the same `dedupe_key` wins: this one is dropped and that one returned, without an error and without
    disturbing the caller's transaction (INSERT … ON CONFLICT DO NOTHING on both databases: no savepoint needed).
    The job returned is for reading (a new one is a snapshot, `db/rows.py`): load it to change it.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    now = now_utc()
    values = {
        "kind": kind,
        "subject": subject,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "state": "pending",
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": run_after or now,
        "created_at": now,
        "updated_at": now,
    }
    inserted = session.connection().execute(_ENQUEUE[session.get_bind().dialect.name], values).first()
    if inserted is None:  # the job with this dedupe key that was there first
        return session.exec(select(Job).where(Job.dedupe_key == dedupe_key)).one()
    if run_after is None or run_after <= now:  # a job due later is found by a poll then, not worth a wake-up now
        _wake_after_commit(session)
    job: Job = models_of(inserted, Job)[0]  # the row as stored, as a read-only snapshot (building a Job: ~0.1 ms)
    return job


# --------------------------------------------------------------------------------------------------- claim & run


def _claimable(now: datetime, kinds: Iterable[str] | None) -> ColumnElement[bool]:
    due = and_(col(Job.state) == "pending", col(Job.run_after) <= now)
    abandoned = and_(col(Job.state) == "running", col(Job.locked_until) < now)
    ready = or_(due, abandoned)
    return ready if kinds is None else and_(ready, col(Job.kind).in_(list(kinds)))


def claim(
    engine: Engine,
    worker_id: str,
    *,
    limit: int = 10,
    lease_seconds: float = 300,
    kinds: Iterable[str] | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Lease up to `limit` due jobs (oldest first) to `worker_id`, including running jobs whose lease expired.

    A cheap unlocked look comes first, so an idle poll never takes SQLite's write lock. A job abandoned after its
    last allowed attempt is dead-lettered here instead of being claimed.
    """
    now = now or now_utc()
    kinds = None if kinds is None else list(kinds)
    with Session(engine) as session:
        if session.exec(select(Job.id).where(_claimable(now, kinds)).limit(1)).first() is None:
            return []
    with session_scope(engine) as session:
        statement = select(Job).where(_claimable(now, kinds)).order_by(col(Job.run_after), col(Job.id)).limit(limit)
        if is_postgres(engine):
            statement = statement.with_for_update(skip_locked=True)
        claimed = []
        for job in session.exec(statement).all():
            if job.state == "running":
                log.warning("job %s (%s): worker %s stopped holding it; taking over", job.id, job.kind, job.locked_by)
                if job.attempts >= job.max_attempts:
                    job.last_error = f"worker {job.locked_by} stopped during the last allowed attempt (lease expired)"
                    _finish(job, "failed", now)
                    session.add(job)
                    continue
            job.state, job.locked_by, job.updated_at = "running", worker_id, now
            job.locked_until = now + timedelta(seconds=lease_seconds)
            session.add(job)
            claimed.append(job)
        return claimed


def _finish(job: Job, state: str, now: datetime) -> None:
    job.state, job.locked_by, job.locked_until, job.finished_at, job.updated_at = state, None, None, now, now


def _fenced_update(engine: Engine, job: Job, worker_id: str, *, now: datetime, **values: Any) -> bool:
    """Write `values` only while this attempt still owns the job (same worker, same attempt, still running)."""
    statement = (
        update(Job)
        .where(
            col(Job.id) == job.id,
            col(Job.locked_by) == worker_id,
            col(Job.attempts) == job.attempts,
            col(Job.state) == "running",
        )
        .values(updated_at=now, **values)
    )
    with session_scope(engine) as session:
        return session.exec(statement).rowcount == 1


def backoff(attempts: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> timedelta:
    """The wait after `attempts` failed attempts: min(cap, base·2^(attempts-1)) times a jitter in [0.5, 1)
    ("equal jitter": never less than half the step, so retries stay spread out yet keep their order)."""
    step = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=step * (0.5 + _RANDOM.random() / 2))


_RANDOM = random.SystemRandom()


def short_error(error: BaseException) -> str:
    """One line, at most MAX_ERROR_CHARS, credentials in URLs masked: what an operator may read in the API."""
    text = " ".join(str(error).split()) or "(no message)"
    text = re.sub(r"(\w+://)[^/\s:@]+:[^/\s@]+@", r"\1***@", text)
    message = text if isinstance(error, PermanentJobError) else f"{type(error).__name__}: {text}"
    return message[:MAX_ERROR_CHARS]


def run_one(
    engine: Engine,
    services: Services,
    job: Job,
    worker_id: str,
    *,
    lease_seconds: float = 300,
    clock: Callable[[], datetime] = now_utc,
) -> str | None:
    """Run one claimed job; return its new state, or None when the claim was lost before or during the run."""
    now = clock()
    started = _fenced_update(
        engine, job, worker_id, now=now, attempts=job.attempts + 1, locked_until=now + timedelta(seconds=lease_seconds)
    )
    if not started:
        return None
    job.attempts += 1
    context = JobContext(job, services, worker_id, lease_seconds, clock, dict(job.result or {}))
    handler = HANDLERS.get(job.kind)
    try:
        if handler is None:
            raise PermanentJobError(f"no handler for job kind {job.kind!r}")
        returned = handler(context)
    except LeaseLost:
        log.warning("job %s (%s): lease lost; left to its new owner", job.id, job.kind)
        return None
    except Exception as error:
        now = clock()
        dead = isinstance(error, PermanentJobError) or job.attempts >= job.max_attempts
        values: dict[str, Any] = {"last_error": short_error(error), "result": context.result or None}
        if dead:
            values |= {"state": "failed", "finished_at": now, "locked_by": None, "locked_until": None}
            log.error("job %s (%s) failed for good after %d attempt(s): %s", job.id, job.kind, job.attempts, error)
        else:
            wait = timedelta(seconds=error.seconds) if isinstance(error, RetryLater) else backoff(job.attempts)
            values |= {"state": "pending", "run_after": now + wait, "locked_by": None}
            values["locked_until"] = None
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempts, error, exc_info=True)
        state = "failed" if dead else "pending"
        return state if _fenced_update(engine, job, worker_id, now=now, **values) else None
    now = clock()
    values = {"state": "succeeded", "result": context.result | (returned or {}), "last_error": None}
    values |= {"finished_at": now, "locked_by": None, "locked_until": None}
    return "succeeded" if _fenced_update(engine, job, worker_id, now=now, **values) else None


def release(engine: Engine, jobs: Iterable[Job], worker_id: str) -> None:
    """Hand claimed jobs that were never started back (a worker stopping politely), so nobody waits for a lease."""
    for job in jobs:
        _fenced_update(engine, job, worker_id, now=now_utc(), state="pending", locked_by=None, locked_until=None)


def run_pending(
    engine: Engine,
    services: Services,
    worker_id: str,
    *,
    limit: int = 10,
    lease_seconds: float = 300,
    clock: Callable[[], datetime] = now_utc,
    stop: threading.Event | None = None,
) -> int:
    """Claim one batch and run it; returns how many jobs were claimed (0: nothing was due)."""
    jobs = claim(engine, worker_id, limit=limit, lease_seconds=lease_seconds, kinds=list(HANDLERS), now=clock())
    for index, job in enumerate(jobs):
        if stop is not None and stop.is_set():
            release(engine, jobs[index:], worker_id)
            break
        run_one(engine, services, job, worker_id, lease_seconds=lease_seconds, clock=clock)
    return len(jobs)


# --------------------------------------------------------------------------------------------------- admin


def retry(session: Session, job_id: int) -> Job:
    """A dead-lettered job back to `pending`, due now, with a fresh set of attempts (an operator fixed the cause,
    so it deserves the full backoff schedule again). `last_error` stays until the next attempt ends; `result` stays,
    so a handler that already did its work (an email that was sent) does not do it again."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job.state != "failed":
        raise Conflict(f"job {job_id} is {job.state}; only failed jobs can be retried")
    now = now_utc()
    job.state, job.attempts, job.run_after, job.finished_at, job.updated_at = "pending", 0, now, None, now
    session.add(job)
    session.flush()
    _wake_after_commit(session)
    return job


def list_jobs(
    session: Session, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[int, list[Job]]:
    """(total, page) newest first."""
    conditions = []
    if state is not None:
        conditions.append(col(Job.state) == state)
    if kind is not None:
        conditions.append(col(Job.kind) == kind)
    total = session.exec(select(func.count()).select_from(Job).where(*conditions)).one()
    page = session.exec(select(Job).where(*conditions).order_by(col(Job.id).desc()).offset(offset).limit(limit))
    return int(total), list(page.all())


# --------------------------------------------------------------------------------------------------- waking up

_LOCAL_WORKERS: weakref.WeakSet[Worker] = weakref.WeakSet()
_WAKE_FLAG = "issuer.jobs.wake"


def _wake_after_commit(session: Session) -> None:
    """Workers in this process look at once after the commit; other processes hear it through NOTIFY (PostgreSQL,
    delivered at commit) or find the job at their next poll."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")
    if not session.info.get(_WAKE_FLAG):
        session.info[_WAKE_FLAG] = True
        event.listen(session, "after_commit", _on_commit, once=True)


def _on_commit(session: Session) -> None:
    session.info.pop(_WAKE_FLAG, None)
    for worker in list(_LOCAL_WORKERS):
        worker.wake()


def _listener(engine: Engine) -> psycopg.Connection[Any] | None:
    """An autocommit connection LISTENing for new jobs (PostgreSQL only; None when it cannot be had)."""
    if not is_postgres(engine):
        return None
    try:
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = psycopg.connect(url, autocommit=True, connect_timeout=5)
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
    except psycopg.Error as error:
        log.warning("job worker: LISTEN unavailable, polling only: %s", short_error(error))
        return None
    return connection


# --------------------------------------------------------------------------------------------------- workers


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs jobs until stopped: in a daemon thread (`start`/`stop`, the embedded mode) or in the calling thread
    (`run`, for `issuer worker`). Settings give the batch size, lease and idle poll interval."""

    def __init__(
        self,
        services: Services,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        settings = services.settings
        self.services, self.engine, self.clock = services, services.engine, clock
        self.worker_id = worker_id or default_worker_id()
        self.batch_size, self.lease_seconds = settings.jobs_batch_size, float(settings.jobs_lease_seconds)
        self.poll_interval = settings.jobs_poll_interval
        self.stop_timeout = 30.0
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._listen: psycopg.Connection[Any] | None = None

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        """Finish the job at hand, hand back the rest of the batch, return from `run`."""
        self._stop.set()
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the worker is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"jobs-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, waiting up to `stop_timeout` seconds for the job at hand. It takes no parameters, so it
        can be a Litestar lifespan hook as it is (Litestar passes the app to hooks that take one)."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                log.warning("job worker %s still busy; its job will be taken over", self.worker_id)
            self._thread = None

    def run(self) -> None:
        load_handlers()
        _LOCAL_WORKERS.add(self)
        self._listen = _listener(self.engine)
        log.info("job worker %s started (kinds: %s)", self.worker_id, ", ".join(sorted(HANDLERS)) or "none")
        failures = 0
        try:
            while not self._stop.is_set():
                self._wake.clear()  # a wake-up from here on means: look again
                try:
                    claimed = run_pending(
                        self.engine, self.services, self.worker_id, limit=self.batch_size,
                        lease_seconds=self.lease_seconds, clock=self.clock, stop=self._stop,
                    )  # fmt: skip
                    failures = 0
                except Exception as error:  # the database is away: keep trying, more slowly
                    failures += 1
                    log.error("job worker %s: %s", self.worker_id, short_error(error))
                    self._stop.wait(min(60.0, self.poll_interval * 2**failures))
                    continue
                if claimed < self.batch_size:
                    self._idle()
        finally:
            _LOCAL_WORKERS.discard(self)
            if self._listen is not None:
                self._listen.close()
            log.info("job worker %s stopped", self.worker_id)

    def _idle(self) -> None:
        """Wait up to poll_interval for a wake-up (a local commit, a NOTIFY, a stop)."""
        deadline = time.monotonic() + self.poll_interval
        while self._listen is not None and not self._wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                if any(True for _ in self._listen.notifies(timeout=min(remaining, 0.2), stop_after=1)):
                    break
            except psycopg.Error:
                self._listen.close()
                self._listen = None
        if self._listen is None:
            self._wake.wait(max(0.0, deadline - time.monotonic()))


def run_forever(services: Services, *, worker_id: str | None = None) -> None:
    """`issuer worker`: run jobs in this thread until SIGTERM or SIGINT, then finish the job at hand and return."""
    worker = Worker(services, worker_id=worker_id)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.request_stop())
    worker.run()
