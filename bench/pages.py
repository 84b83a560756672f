"""`python -m bench.pages [--json] [--requests N]`: the verification page and the verify API under load.

A fresh SQLite installation served by `issuer serve` (bench.service's harness) with 100 stored credentials; 10
concurrent clients in closed loop GET `/c/{id}` (round-robin over the credentials) and POST `/api/v1/verify`
(each body one of the stored credentials). Latency is measured by the client around each request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.service import Level, fresh_database, learner, running_service


async def _level(url_for: Any, method: str, body_for: Any, concurrency: int, requests: int) -> Level:
    level = Level(concurrency, requests)
    remaining = requests
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            n = remaining
            start = time.perf_counter()
            response = await client.request(method, url_for(n), json=body_for(n) if body_for else None)
            level.latencies_ms.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                level.errors.append(f"HTTP {response.status_code}: {response.text[:300]}")

    clients = [httpx.AsyncClient(limits=limits, timeout=60.0) for _ in range(concurrency)]
    try:
        for client in clients:  # warm-up: a few requests each, not counted
            await client.request(method, url_for(0), json=body_for(0) if body_for else None)
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        level.wall_s = time.perf_counter() - start
    finally:
        for client in clients:
            await client.aclose()
    return level


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pages")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database("sqlite", Path(tmp)) as url,
        running_service(url, args.workers, Path(tmp)) as server,
    ):
        headers = {"Authorization": f"Bearer {server.token}"}
        stored = []
        with httpx.Client(timeout=30) as client:
            for n in range(100):
                body = {"achievement_id": server.achievement_id, "recipient": learner("pages", n)}
                response = client.post(f"{server.base_url}/api/v1/credentials", json=body, headers=headers)
                response.raise_for_status()
                stored.append(response.json())
        page = asyncio.run(
            _level(
                lambda n: f"{server.base_url}/c/{stored[n % 100]['id']}", "GET", None, args.concurrency, args.requests
            )
        )
        verify = asyncio.run(
            _level(
                lambda n: f"{server.base_url}/api/v1/verify",
                "POST",
                lambda n: stored[n % 100]["credential"],
                args.concurrency,
                args.requests // 2,
            )
        )
    results = {"page": page.summary(), "verify_api": verify.summary()}
    if page.errors or verify.errors:
        print(json.dumps({"errors": (page.errors + verify.errors)[:5]}), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'endpoint':22} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, s in (("GET /c/{id}", results["page"]), ("POST /api/v1/verify", results["verify_api"])):
        print(
            f"{name:22} {s['concurrency']:>7} {s['requests']:>8} {s['req_per_s']:>7} {s['p50_ms']:>7} "
            f"{s['p99_ms']:>7} {s['max_ms']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
