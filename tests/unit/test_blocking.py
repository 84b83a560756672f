"""Where hot handlers' blocking work runs: on the event loop when the database is local, else on a worker thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import create_engine

from issuer.blocking import run_blocking, runs_on_loop


def _thread_of(label: str, *, suffix: str = "") -> tuple[str, int]:
    return label + suffix, threading.get_ident()


def _ran_on_loop(url: str) -> bool:
    engine = create_engine(url)  # never connected: the decision reads only the URL

    async def main() -> tuple[tuple[str, int], int]:
        return await run_blocking(engine, _thread_of, "work", suffix="!"), threading.get_ident()

    (label, worker), loop_thread = asyncio.run(main())
    assert label == "work!"
    return worker == loop_thread


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///data/issuer.db",
        "postgresql+psycopg://issuer@127.0.0.1:5432/issuer",
        "postgresql+psycopg://issuer@localhost/issuer",
        "postgresql+psycopg:///issuer?host=/run/postgresql",
    ],
)
def test_local_databases_run_the_work_on_the_event_loop(url: str) -> None:
    assert runs_on_loop(create_engine(url))
    assert _ran_on_loop(url)


def test_a_remote_postgresql_gets_a_worker_thread() -> None:
    url = "postgresql+psycopg://issuer@db.internal.example:5432/issuer"
    assert not runs_on_loop(create_engine(url))
    assert not _ran_on_loop(url)


def test_api_key_guards_are_coroutines() -> None:
    """Litestar runs a plain-function guard on a worker thread: every authenticated request would hop threads."""
    import inspect

    from issuer.auth import require

    assert inspect.iscoroutinefunction(require("read"))
