"""The job outbox on SQLite and PostgreSQL: enqueue, claim, leases, retries, dead letters, the admin API, workers."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from issuer.app import create_app
from issuer.db.engine import session_scope
from issuer.db.tables import AuditRecord, Job
from issuer.delivery import jobs
from issuer.delivery.jobs import HANDLERS, JobContext, PermanentJobError, Worker, claim, enqueue, run_one, run_pending
from issuer.delivery.routes import JobsController
from issuer.services import Services
from issuer.settings import Settings

from .conftest import BASE, problem, token_with

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Crash(BaseException):
    """Stands in for the worker process dying in the middle of a job (nothing in run_one catches it)."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"jobs_embedded": False})


@pytest.fixture
def handlers() -> Iterator[dict[str, Callable[[JobContext], dict[str, Any] | None]]]:
    """Register test handlers for the test's duration; `kinds` registered here are removed afterwards."""
    added: dict[str, Callable[[JobContext], dict[str, Any] | None]] = {}
    yield added
    for kind in added:
        HANDLERS.pop(kind, None)


def use(handlers: dict[str, Any], kind: str, handler: Callable[[JobContext], dict[str, Any] | None]) -> None:
    handlers[kind] = HANDLERS[kind] = handler


def add_job(engine: Engine, key: str, *, kind: str = "test.ok", **extra: Any) -> int:
    with session_scope(engine) as session:
        job_id = enqueue(session, kind=kind, subject=key, dedupe_key=key, payload={"key": key}, **extra).id
    assert job_id is not None
    return job_id


def load(engine: Engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


# --------------------------------------------------------------------------------------------------- enqueue


def test_enqueue_keeps_the_first_job_for_a_dedupe_key(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = enqueue(session, kind="test.ok", subject="s", dedupe_key="k", payload={"n": 1})
        again = enqueue(session, kind="test.ok", subject="s", dedupe_key="k", payload={"n": 2})
        assert again.id == first.id and again.payload == {"n": 1}
        other = enqueue(session, kind="test.ok", subject="s", dedupe_key="k2", payload={})  # still usable
    with session_scope(engine) as session:  # a later transaction: still the first job, and no error
        later = enqueue(session, kind="test.ok", subject="s", dedupe_key="k", payload={"n": 3}, max_attempts=2)
        assert later.id == first.id and later.max_attempts == 8
    with Session(engine) as session:
        assert [j.dedupe_key for j in session.exec(select(Job).order_by(Job.id)).all()] == ["k", "k2"]  # type: ignore[arg-type]
    assert other.id != first.id


def test_enqueue_rolls_back_with_the_callers_transaction(engine: Engine) -> None:
    def fail_after_enqueue() -> None:
        with session_scope(engine) as session:
            enqueue(session, kind="test.ok", subject=None, dedupe_key="lost", payload={})
            raise RuntimeError("the credential insert failed")

    with pytest.raises(RuntimeError):
        fail_after_enqueue()
    with Session(engine) as session:
        assert session.exec(select(Job)).first() is None


def test_concurrent_enqueues_of_one_key_make_one_job(engine: Engine) -> None:
    barrier, ids, errors = threading.Barrier(6), [], []

    def enqueue_one() -> None:
        try:
            barrier.wait()
            with session_scope(engine) as session:
                ids.append(enqueue(session, kind="test.ok", subject=None, dedupe_key="same", payload={}).id)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=enqueue_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(ids) == 6 and len(set(ids)) == 1


# --------------------------------------------------------------------------------------------------- claim


def test_claim_leases_due_jobs_oldest_first_and_reclaims_expired_leases(engine: Engine) -> None:
    a = add_job(engine, "a", run_after=T0 - timedelta(minutes=2))
    b = add_job(engine, "b", run_after=T0 - timedelta(minutes=1))
    later = add_job(engine, "later", run_after=T0 + timedelta(hours=1))
    claimed = claim(engine, "w1", limit=10, lease_seconds=60, now=T0)
    assert [j.id for j in claimed] == [a, b]
    for job in claimed:
        stored = load(engine, job.id or 0)
        assert (stored.state, stored.locked_by, stored.locked_until) == ("running", "w1", T0 + timedelta(seconds=60))
        assert stored.attempts == 0  # counted when a job starts, not when it is claimed
    assert claim(engine, "w2", limit=10, lease_seconds=60, now=T0 + timedelta(seconds=59)) == []
    reclaimed = claim(engine, "w2", limit=1, lease_seconds=60, now=T0 + timedelta(seconds=61))
    assert [j.id for j in reclaimed] == [a] and load(engine, a).locked_by == "w2"
    assert load(engine, later).state == "pending"


def test_unknown_kinds_wait_for_a_worker_that_knows_them(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    use(handlers, "test.ok", lambda ctx: None)
    known, unknown = add_job(engine, "known"), add_job(engine, "unknown", kind="test.nobody")
    assert run_pending(engine, services, "w1") == 1
    assert load(engine, known).state == "succeeded"
    assert load(engine, unknown).state == "pending"


# --------------------------------------------------------------------------------------------------- outcomes


def test_success_stores_the_result_and_checkpoints_survive_failures(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    seen: list[dict[str, Any]] = []

    def two_steps(ctx: JobContext) -> dict[str, Any]:
        seen.append(dict(ctx.result))
        if not ctx.result.get("step1"):
            ctx.checkpoint(step1="done")
            raise RuntimeError("step 2 failed")
        return {"step2": "done", "attempt": ctx.attempt}

    use(handlers, "test.ok", two_steps)
    job_id = add_job(engine, "two-steps")
    clock = Clock()
    run_pending(engine, services, "w1", clock=clock)
    failed_once = load(engine, job_id)
    assert (failed_once.state, failed_once.attempts, failed_once.result) == ("pending", 1, {"step1": "done"})
    clock.now = failed_once.run_after
    run_pending(engine, services, "w1", clock=clock)
    done = load(engine, job_id)
    assert seen == [{}, {"step1": "done"}]
    assert done.state == "succeeded" and done.result == {"step1": "done", "step2": "done", "attempt": 2}
    assert done.last_error is None and done.locked_by is None and done.finished_at == clock.now


def test_failures_back_off_exponentially_with_jitter_then_dead_letter(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    def always_fails(ctx: JobContext) -> None:
        raise ConnectionError("relay down; tried smtp://mailer:hunter2@relay.example:587")

    use(handlers, "test.ok", always_fails)
    job_id = add_job(engine, "doomed", max_attempts=4)
    clock = Clock()
    for attempt in (1, 2, 3):
        run_pending(engine, services, "w1", clock=clock)
        job = load(engine, job_id)
        step = min(jobs.BACKOFF_CAP, jobs.BACKOFF_BASE * 2 ** (attempt - 1))
        delay = (job.run_after - clock.now).total_seconds()
        assert job.state == "pending" and job.attempts == attempt
        assert step / 2 <= delay < step, (attempt, delay)
        assert claim(engine, "w1", now=job.run_after - timedelta(milliseconds=1)) == []  # not before its time
        clock.now = job.run_after
    run_pending(engine, services, "w1", clock=clock)
    dead = load(engine, job_id)
    assert (dead.state, dead.attempts, dead.finished_at, dead.locked_by) == ("failed", 4, clock.now, None)
    assert dead.last_error == "ConnectionError: relay down; tried smtp://***@relay.example:587"
    assert claim(engine, "w1", now=clock.now + timedelta(days=365)) == []


def test_backoff_is_capped() -> None:
    for _ in range(50):
        assert jobs.BACKOFF_CAP / 2 <= jobs.backoff(30).total_seconds() < jobs.BACKOFF_CAP
        assert 15 <= jobs.backoff(1).total_seconds() < 30


def test_a_permanent_error_dead_letters_at_once(engine: Engine, services: Services, handlers: dict[str, Any]) -> None:
    def refuse(ctx: JobContext) -> None:
        raise PermanentJobError("422 from the mirror: recipient.email has already been taken")

    use(handlers, "test.ok", refuse)
    job_id = add_job(engine, "refused")
    run_pending(engine, services, "w1")
    job = load(engine, job_id)
    assert (job.state, job.attempts) == ("failed", 1)
    assert job.last_error == "422 from the mirror: recipient.email has already been taken"


def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    def crash(ctx: JobContext) -> None:
        raise Crash

    use(handlers, "test.ok", crash)
    job_id = add_job(engine, "poison", max_attempts=2)
    clock = Clock()
    for attempt in (1, 2):
        with pytest.raises(Crash):
            run_pending(engine, services, f"w{attempt}", lease_seconds=60, clock=clock)
        assert (load(engine, job_id).state, load(engine, job_id).attempts) == ("running", attempt)
        clock.now += timedelta(seconds=61)
    assert claim(engine, "w3", now=clock.now) == []
    job = load(engine, job_id)
    assert (job.state, job.attempts) == ("failed", 2)
    assert job.last_error == "worker w2 stopped during the last allowed attempt (lease expired)"


# --------------------------------------------------------------------------------------------------- leases


def test_a_worker_that_lost_its_lease_cannot_start_or_finish_the_job(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    job_id = add_job(engine, "contended")
    clock = Clock()
    calls: list[str] = []

    def slow(ctx: JobContext) -> dict[str, Any]:
        calls.append(ctx.worker_id)
        if ctx.worker_id == "A":  # A overruns its lease; B takes the job over and finishes it meanwhile
            clock.now += timedelta(seconds=61)
            [taken] = claim(engine, "B", lease_seconds=60, now=clock.now)
            assert run_one(engine, services, taken, "B", lease_seconds=60, clock=clock) == "succeeded"
            with pytest.raises(jobs.LeaseLost):
                ctx.checkpoint(late=True)
        return {"by": ctx.worker_id}

    use(handlers, "test.ok", slow)
    [job] = claim(engine, "A", lease_seconds=60, now=clock.now)
    assert run_one(engine, services, job, "A", lease_seconds=60, clock=clock) is None  # A's outcome is dropped
    final = load(engine, job_id)
    assert calls == ["A", "B"] and final.state == "succeeded" and final.result == {"by": "B"}

    stale = add_job(engine, "stale")
    [claimed_by_a] = claim(engine, "A", lease_seconds=60, now=clock.now)
    claim(engine, "B", lease_seconds=60, now=clock.now + timedelta(seconds=61))
    assert run_one(engine, services, claimed_by_a, "A", clock=clock) is None  # never started by A
    assert calls == ["A", "B"] and load(engine, stale).locked_by == "B"


def test_a_stopping_worker_hands_back_the_jobs_it_did_not_start(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    stop = threading.Event()

    def first_stops(ctx: JobContext) -> None:
        stop.set()

    use(handlers, "test.ok", first_stops)
    ids = [add_job(engine, f"batch-{n}") for n in range(3)]
    assert run_pending(engine, services, "w1", stop=stop) == 3
    states = [(load(engine, i).state, load(engine, i).attempts, load(engine, i).locked_by) for i in ids]
    assert states == [("succeeded", 1, None), ("pending", 0, None), ("pending", 0, None)]


def test_concurrent_workers_run_every_job_exactly_once(
    engine: Engine, services: Services, handlers: dict[str, Any]
) -> None:
    """200 jobs, 4 worker threads claiming in batches: no job runs twice, none is left (SKIP LOCKED on
    PostgreSQL, the write lock on SQLite)."""
    ran: list[int] = []
    running: set[int] = set()
    overlaps: list[int] = []
    lock = threading.Lock()

    def record(ctx: JobContext) -> None:
        job_id = ctx.job.id or 0
        with lock:
            if job_id in running:
                overlaps.append(job_id)
            running.add(job_id)
        time.sleep(0.001)
        with lock:
            running.discard(job_id)
            ran.append(job_id)

    use(handlers, "test.ok", record)
    with session_scope(engine) as session:
        expected = [
            enqueue(session, kind="test.ok", subject=None, dedupe_key=f"many-{n}", payload={}).id or 0
            for n in range(200)
        ]
    errors: list[BaseException] = []

    def work(worker_id: str) -> None:
        try:
            while run_pending(engine, services, worker_id, limit=7):
                pass
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not overlaps
    assert [job_id for job_id, times in Counter(ran).items() if times > 1] == []
    assert sorted(ran) == sorted(expected)
    with Session(engine) as session:
        assert {j.state for j in session.exec(select(Job)).all()} == {"succeeded"}


# --------------------------------------------------------------------------------------------------- workers


def _set(event: threading.Event) -> None:
    event.set()


def _quick(services: Services, **changes: Any) -> Services:
    return dataclasses.replace(services, settings=services.settings.model_copy(update=changes))


def test_the_embedded_worker_wakes_on_commit_and_stops_promptly(services: Services, handlers: dict[str, Any]) -> None:
    done = threading.Event()
    use(handlers, "test.ok", lambda ctx: _set(done))
    worker = Worker(_quick(services, jobs_poll_interval=30.0))  # a poll would take 30 s: only a wake-up is quick
    worker.start()
    try:
        time.sleep(0.2)  # let it go idle
        job_id = add_job(services.engine, "wake")
        assert done.wait(5), "the worker did not wake up for a committed job"
    finally:
        started = time.monotonic()
        worker.stop()
        assert time.monotonic() - started < 2
    deadline = time.monotonic() + 5
    while load(services.engine, job_id).state != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert load(services.engine, job_id).state == "succeeded"


@pytest.mark.postgresql_only
def test_a_worker_hears_jobs_enqueued_by_another_process(
    services: Services, handlers: dict[str, Any], database_url: str
) -> None:
    """NOTIFY at commit wakes a PostgreSQL worker elsewhere; here the job is inserted over a separate connection
    that no in-process wake-up can see."""
    done = threading.Event()
    use(handlers, "test.ok", lambda ctx: _set(done))
    worker = Worker(_quick(services, jobs_poll_interval=30.0))
    worker.start()
    try:
        time.sleep(0.3)
        with psycopg.connect(database_url) as connection:
            connection.execute(
                "INSERT INTO jobs (kind, dedupe_key, payload, state, attempts, max_attempts, run_after, created_at,"
                " updated_at) VALUES ('test.ok', 'elsewhere', '{}', 'pending', 0, 8, now(), now(), now())"
            )
            connection.execute(f"NOTIFY {jobs.NOTIFY_CHANNEL}")
        assert done.wait(5), "the worker did not hear the NOTIFY"
    finally:
        worker.stop()


# --------------------------------------------------------------------------------------------------- the API


@pytest.fixture
def api(settings: Settings, services: Services) -> Iterator[TestClient[Any]]:
    app = create_app(settings, services)
    if not any(route.path.startswith("/api/v1/jobs") for route in app.routes):
        app.register(JobsController)  # until issuer/app.py registers it
    with TestClient(app, base_url=BASE) as client:
        yield client


def test_dead_letters_are_listed_and_can_be_retried(
    api: TestClient[Any], services: Services, handlers: dict[str, Any], admin: dict[str, str]
) -> None:
    outcome: dict[str, Any] = {"fail": True}

    def flaky(ctx: JobContext) -> dict[str, Any]:
        if outcome["fail"]:
            raise PermanentJobError("SMTP 550 5.1.1 mailbox unavailable")
        return {"sent": True}

    use(handlers, "test.ok", flaky)
    engine = services.engine
    ok_id = add_job(engine, "fine", kind="test.other")
    dead_id = add_job(engine, "dead")
    run_pending(engine, services, "w1")

    listed = api.get("/api/v1/jobs", params={"state": "failed"}, headers=admin)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total"] == 1 and [item["id"] for item in body["items"]] == [dead_id]
    item = body["items"][0]
    assert item["state"] == "failed" and item["lastError"] == "SMTP 550 5.1.1 mailbox unavailable"
    assert item["attempts"] == 1 and item["dedupeKey"] == "dead" and item["finishedAt"].endswith("Z")
    everything = api.get("/api/v1/jobs", params={"limit": 1, "offset": 1}, headers=admin).json()
    assert everything["total"] == 2 and [i["id"] for i in everything["items"]] == [ok_id]  # newest first
    assert api.get("/api/v1/jobs", params={"kind": "test.other"}, headers=admin).json()["total"] == 1
    assert api.get(f"/api/v1/jobs/{dead_id}", headers=admin).json()["lastError"] == item["lastError"]

    outcome["fail"] = False
    retried = api.post(f"/api/v1/jobs/{dead_id}/retry", headers=admin)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "pending" and retried.json()["attempts"] == 0
    problem(api.post(f"/api/v1/jobs/{dead_id}/retry", headers=admin), 409, "conflict")
    problem(api.post(f"/api/v1/jobs/{ok_id}/retry", headers=admin), 409, "conflict")
    problem(api.post("/api/v1/jobs/999999/retry", headers=admin), 404, "not-found")
    problem(api.get("/api/v1/jobs/999999", headers=admin), 404, "not-found")
    run_pending(engine, services, "w1")
    assert load(engine, dead_id).state == "succeeded" and load(engine, dead_id).result == {"sent": True}
    with Session(engine) as session:
        records = session.exec(select(AuditRecord).where(AuditRecord.action == "job.retried")).all()
    assert [r.subject for r in records] == [f"job:{dead_id}"]


def test_the_jobs_api_is_for_admins(api: TestClient[Any], services: Services, admin: dict[str, str]) -> None:
    problem(api.get("/api/v1/jobs"), 401, "unauthorized")
    reader = {"Authorization": f"Bearer {token_with(services, 'issue')}"}
    problem(api.get("/api/v1/jobs", headers=reader), 403, "forbidden")
    problem(api.post("/api/v1/jobs/1/retry", headers=reader), 403, "forbidden")
    bad = api.get("/api/v1/jobs", params={"state": "lost"}, headers=admin)
    assert bad.status_code in (400, 422) and bad.headers["content-type"].startswith("application/problem+json")
