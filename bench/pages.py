"""`python -m bench.pages [--json] [--requests N]`: the verification page and the verify API under load.

A fresh SQLite installation served by `issuer serve` (bench.service's harness) with 100 stored credentials; 10
concurrent clients in closed loop: first views (each credential's page once, nothing cached), then, after a
warm-up, GET `/c/{id}` round-robin over the credentials, and POST `/api/v1/verify` (each body one of the stored
credentials). Latency is measured by the client around each request
(`bench/loadgen.py`: a lean HTTP/1.1 client, so the client takes little of the machine's two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.loadgen import build_request, closed_loop, open_connections
from bench.service import Level, fresh_database, learner, running_service


async def _level(host: str, port: int, requests: list[bytes], warmup: list[bytes], concurrency: int) -> Level:
    level = Level(concurrency, len(requests))
    connections = await open_connections(host, port, concurrency)
    try:
        await closed_loop(connections, warmup, 120)  # not counted
        start = time.perf_counter()
        level.latencies_ms, responses = await closed_loop(connections, requests, 600)
        level.wall_s = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    for response in responses:
        if isinstance(response, Exception):
            level.errors.append(f"{type(response).__name__}: {response}")
        elif response.status != 200:
            level.errors.append(f"HTTP {response.status}: {response.text[:300]}")
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
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        authority = f"{host}:{port}"
        pages = [build_request("GET", authority, f"/c/{stored[n % 100]['id']}") for n in range(args.requests)]
        checks = [
            build_request("POST", authority, "/api/v1/verify", json_body=stored[n % 100]["credential"])
            for n in range(args.requests // 2)
        ]
        # First views: each stored credential's page once, nothing cached yet (the verifier runs for every one).
        first = asyncio.run(_level(host, int(port), pages[:100], [], args.concurrency))
        # Warm-up: every credential's page three times, so that each server process has most of them cached (a
        # first view costs a verifier run; measured apart, below).
        page = asyncio.run(
            _level(host, int(port), pages, pages[:300] if args.requests >= 300 else pages, args.concurrency)
        )
        verify = asyncio.run(_level(host, int(port), checks, checks[:50], args.concurrency))
    results = {"page_first_view": first.summary(), "page": page.summary(), "verify_api": verify.summary()}
    if first.errors or page.errors or verify.errors:
        print(json.dumps({"errors": (first.errors + page.errors + verify.errors)[:5]}), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'endpoint':24} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    rows = (
        ("GET /c/{id} first view", results["page_first_view"]),
        ("GET /c/{id}", results["page"]),
        ("POST /api/v1/verify", results["verify_api"]),
    )
    for name, s in rows:
        print(
            f"{name:24} {s['concurrency']:>7} {s['requests']:>8} {s['req_per_s']:>7} {s['p50_ms']:>7} "
            f"{s['p99_ms']:>7} {s['max_ms']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
