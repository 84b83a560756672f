"""Where hot handlers' blocking work runs: in the caller's thread on SQLite, on a worker thread on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import create_engine

from issuer.blocking import run_blocking


def _thread_of(label: str, *, suffix: str = "") -> tuple[str, int]:
    return label + suffix, threading.get_ident()


def test_sqlite_work_runs_on_the_event_loop_thread() -> None:
    engine = create_engine("sqlite://")

    async def main() -> tuple[tuple[str, int], int]:
        return await run_blocking(engine, _thread_of, "sqlite", suffix="!"), threading.get_ident()

    (label, worker), loop_thread = asyncio.run(main())
    assert label == "sqlite!"
    assert worker == loop_thread


def test_postgresql_work_runs_on_a_worker_thread() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected

    async def main() -> tuple[tuple[str, int], int]:
        return await run_blocking(engine, _thread_of, "pg"), threading.get_ident()

    (label, worker), loop_thread = asyncio.run(main())
    assert label == "pg"
    assert worker != loop_thread
