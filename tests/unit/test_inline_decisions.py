"""LMS decisions on the event loop (local database): after the request has answered, each place given back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine

from issuer.webhooks import inline


def test_decisions_run_after_the_caller_and_give_back_their_places(monkeypatch: pytest.MonkeyPatch) -> None:
    decided: list[str] = []

    def handle(_services: Any, event_id: str, *, fresh: tuple[Any, Any]) -> str:
        assert fresh[0].id == event_id  # the row as stored comes along: nothing is read back
        decided.append(event_id)
        if event_id == "broken":
            raise RuntimeError("the LMS API is down")  # left to the event's job, which retries
        return "issued"

    monkeypatch.setattr(inline, "handle", handle)
    services: Any = SimpleNamespace(engine=create_engine("sqlite://"), settings=SimpleNamespace(jobs_embedded=True))
    before = inline.in_flight()

    async def main() -> list[str]:
        assert inline.admit(services, 3)
        source: Any = SimpleNamespace(id="lms")
        rows: list[Any] = [SimpleNamespace(id=name) for name in ("first", "broken", "third")]
        inline.submit(services, [(row, source) for row in rows])
        assert decided == []  # nothing decided before the request's own coroutine has yielded (sent its 202)
        assert inline.in_flight() == before + 3
        while inline.in_flight() > before:
            await asyncio.sleep(0.001)
        return list(decided)

    assert asyncio.run(asyncio.wait_for(main(), 5)) == ["first", "broken", "third"]
    assert inline.in_flight() == before
