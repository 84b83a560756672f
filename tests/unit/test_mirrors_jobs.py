"""`RetryLater`: a handler that was told when to come back is re-run no earlier than that (both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from issuer.db.engine import session_scope
from issuer.db.tables import Job
from issuer.delivery.jobs import HANDLERS, JobContext, RetryLater, claim, enqueue, run_one
from issuer.services import Services

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def later() -> Iterator[list[float]]:
    """A handler that asks to be re-run after the next delay in the list, then succeeds."""
    delays: list[float] = []

    def handler(ctx: JobContext) -> dict[str, Any] | None:
        if delays:
            raise RetryLater(delays.pop(0), "busy; come back later")
        return {"done": True}

    HANDLERS["test.later"] = handler
    yield delays
    HANDLERS.pop("test.later", None)


def run_at(engine: Engine, moment: datetime) -> list[str | None]:
    jobs = claim(engine, "w", now=moment, kinds=["test.later"])
    return [run_one(engine, cast(Services, None), job, "w", clock=lambda: moment) for job in jobs]


def load(engine: Engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
    assert job is not None
    return job


def test_retry_later_sets_the_next_run_exactly_and_counts_the_attempt(engine: Engine, later: list[float]) -> None:
    later.extend([7200.0, 0.0])  # two hours: longer than any backoff step; then "at once"
    with session_scope(engine) as session:
        job_id = enqueue(session, kind="test.later", subject=None, dedupe_key="k", payload={}, run_after=T0).id
    assert job_id is not None
    assert run_at(engine, T0) == ["pending"]
    job = load(engine, job_id)
    assert (job.run_after, job.attempts) == (T0 + timedelta(hours=2), 1)
    assert job.last_error == "RetryLater: busy; come back later"
    assert run_at(engine, T0 + timedelta(hours=2) - timedelta(seconds=1)) == []  # never earlier
    assert run_at(engine, T0 + timedelta(hours=2)) == ["pending"]
    assert load(engine, job_id).run_after == T0 + timedelta(hours=2)  # 0 s: due at once
    assert run_at(engine, T0 + timedelta(hours=2)) == ["succeeded"]
    assert load(engine, job_id).result == {"done": True}


def test_retry_later_still_ends_in_the_dead_letter(engine: Engine, later: list[float]) -> None:
    later.extend([1.0] * 5)
    with session_scope(engine) as session:
        job_id = enqueue(
            session, kind="test.later", subject=None, dedupe_key="k", payload={}, run_after=T0, max_attempts=2
        ).id
    assert job_id is not None
    assert run_at(engine, T0) == ["pending"]
    assert run_at(engine, T0 + timedelta(seconds=1)) == ["failed"]
    assert load(engine, job_id).state == "failed"
    assert RetryLater(-3, "x").seconds == 0.0
