"""`python -m bench.webhooks [--json] [--database sqlite|postgresql|both] [--completions N] [--cohort N]`.

Webhook-to-credential latency, end to end: a real `issuer serve --workers N` (bench/service.py starts it on a
fresh database), a `generic` LMS source (Standard Webhooks signing) with its course mapped to an achievement, and
asyncio senders posting correctly signed `course.completed` deliveries, each for a learner never seen before.

What is measured: from just before a delivery is sent until its signed credential exists, i.e. the credential
row (signed, self-verified, committed) whose idempotency key is the event's (`lms-event:<event id>`) is visible
in the database. A watcher thread in this process looks for the credentials of every delivery in flight every
`--poll-ms` milliseconds (one indexed query per look, read-only), so a figure is late by at most that much.
Deciding the event afterwards (its `issued` state), PDF and email are not included; the issue's target counts
signing.

- levels: 1, 10 and 50 senders in closed loop (each sends its next completion once its last one's credential
  exists), a fixed number of completions per level after a short warm-up. The 202's own latency is reported too.
- cohort: N completions (default 1,000) posted by 50 senders as fast as the service answers, timed from the first
  send until all N credentials exist.
- afterwards: every event must be `issued` with its credential, no credential twice, `issuer audit verify` intact.

CPU in cores per level and "other" work on the machine are reported as in bench.service: the machine is shared,
and over 0.25 cores of other work marks a level's figures as unreliable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.loadgen import Connection, build_request, open_connections
from bench.service import (
    NOISE_CORES,
    BenchError,
    CpuSnapshot,
    Server,
    fresh_database,
    issuer_cli,
    learner,
    percentile,
    running_service,
    source_version,
)

SOURCE = "bench-lms"
COURSE = "BENCH-101"


# --- the LMS side -----------------------------------------------------------------------------------------------


class Sender:
    """Builds signed Standard Webhooks deliveries of our generic completion payload, one learner each."""

    def __init__(self, server: Server) -> None:
        self.key = secrets.token_bytes(32)
        self.secret = "whsec_" + base64.b64encode(self.key).decode()
        self.url = f"{server.base_url}/webhooks/{SOURCE}"
        self.run = secrets.token_hex(3)
        self.counter = 0

    def delivery(self) -> tuple[bytes, dict[str, str]]:
        self.counter += 1
        who = learner(self.run, self.counter)
        now = datetime.now(UTC).replace(microsecond=0)
        body = json.dumps(
            {
                "type": "course.completed",
                "data": {
                    "learner": {"id": f"{self.run}-{self.counter}", **who},
                    "course": {"id": COURSE, "name": "Data Analysis"},
                    "completed_at": now.isoformat(),
                    "score": 91,
                },
            },
            separators=(",", ":"),
        ).encode()
        delivery_id, sent = f"msg_{uuid.uuid4().hex}", str(int(now.timestamp()))
        signature = hmac.new(self.key, f"{delivery_id}.{sent}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": sent,
            "webhook-signature": "v1," + base64.b64encode(signature).decode(),
        }
        return body, headers


def configure_source(server: Server, sender: Sender) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        created = client.post(
            "/api/v1/lms/sources", json={"id": SOURCE, "platform": "generic", "secrets": [sender.secret]}
        )
        if created.status_code != 201:
            raise BenchError(f"creating the source: HTTP {created.status_code}: {created.text}")
        mapped = client.post(
            f"/api/v1/lms/sources/{SOURCE}/mappings",
            json={"course_id": COURSE, "achievement_id": server.achievement_id},
        )
        if mapped.status_code != 201:
            raise BenchError(f"mapping the course: HTTP {mapped.status_code}: {mapped.text}")


# --- seeing credentials appear ----------------------------------------------------------------------------------


class Watcher:
    """A thread that looks for the credentials of the deliveries in flight and resolves their futures with the
    perf_counter() at which each was first seen."""

    def __init__(self, database_url: str, loop: asyncio.AbstractEventLoop, poll_s: float) -> None:
        self.database_url, self.loop, self.poll_s = database_url, loop, poll_s
        self.pending: dict[str, asyncio.Future[float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="credential-watcher", daemon=True)

    def expect(self, event_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = self.loop.create_future()
        with self.lock:
            self.pending[f"lms-event:{event_id}"] = future
        return future

    def _connect(self) -> Any:
        if self.database_url.startswith("sqlite:///"):
            path = self.database_url.removeprefix("sqlite:///")
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        return psycopg.connect(self.database_url, autocommit=True)

    def _run(self) -> None:
        placeholder = "?" if self.database_url.startswith("sqlite") else "%s"
        try:
            connection = self._connect()
            with contextlib.closing(connection):
                while not self.stop.is_set():
                    with self.lock:
                        keys = list(self.pending)[:500]
                    if keys:
                        marks = ",".join([placeholder] * len(keys))  # placeholders only: the keys are bound
                        query = f"SELECT idempotency_key FROM credentials WHERE idempotency_key IN ({marks})"  # noqa: S608
                        found = [row[0] for row in connection.execute(query, keys).fetchall()]
                        seen = time.perf_counter()
                        with self.lock:
                            futures = [self.pending.pop(key) for key in found]
                        for future in futures:
                            self.loop.call_soon_threadsafe(_resolve, future, seen)
                    self.stop.wait(self.poll_s)
        except BaseException as error:  # reported by the level that waits for it
            self.error = error
            with self.lock:
                futures = list(self.pending.values())
                self.pending.clear()
            for future in futures:
                self.loop.call_soon_threadsafe(_fail, future, error)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _resolve(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[float], error: BaseException) -> None:
    if not future.done():
        future.set_exception(BenchError(f"the credential watcher failed: {error!r}"))


# --- load -------------------------------------------------------------------------------------------------------


@dataclass
class Level:
    name: str
    concurrency: int
    completions: int
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # send -> signed credential exists
    answer_ms: list[float] = field(default_factory=list)  # send -> 202 received
    errors: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    intake_s: float = 0.0  # cohort: until the last 202
    cpu: dict[str, float | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ordered, answers = sorted(self.latencies_ms), sorted(self.answer_ms)
        result = {
            "name": self.name,
            "concurrency": self.concurrency,
            "completions": self.completions,
            "issued": len(self.latencies_ms),
            "errors": len(self.errors),
            "per_s": round(len(self.latencies_ms) / self.wall_s, 1) if self.wall_s else None,
            "p50_ms": round(percentile(ordered, 50), 1),
            "p90_ms": round(percentile(ordered, 90), 1),
            "p99_ms": round(percentile(ordered, 99), 1),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "answer_p50_ms": round(percentile(answers, 50), 1),
            "answer_p99_ms": round(percentile(answers, 99), 1),
            "wall_s": round(self.wall_s, 2),
            **{f"{name}_cpu_cores": value for name, value in self.cpu.items()},
        }
        if self.name == "cohort":
            result["intake_s"] = round(self.intake_s, 2)
        return result


class Load:
    def __init__(self, server: Server, sender: Sender, watcher: Watcher) -> None:
        self.server, self.sender, self.watcher = server, sender, watcher
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.path = host, int(port), f"/webhooks/{SOURCE}"

    async def level(
        self, name: str, concurrency: int, completions: int, warmup: int, max_seconds: float, *, closed: bool
    ) -> Level:
        connections = await open_connections(self.host, self.port, concurrency)
        try:
            if warmup:
                warm = Level("warm-up", concurrency, warmup)
                await self._drive(connections, warm, self.requests(warmup), max_seconds, closed=True)
            level = Level(name, concurrency, completions)
            requests = self.requests(completions)  # signed just before the clock starts: well inside the window
            before = CpuSnapshot.take(self.server)
            start = time.perf_counter()
            await self._drive(connections, level, requests, max_seconds, closed=closed, start=start)
            level.wall_s = time.perf_counter() - start
            level.cpu = CpuSnapshot.take(self.server).since(before, level.wall_s)
        finally:
            for connection in connections:
                connection.close()
        return level

    def requests(self, count: int) -> list[bytes]:
        built = []
        for _ in range(count):
            body, headers = self.sender.delivery()
            built.append(build_request("POST", f"{self.host}:{self.port}", self.path, headers=headers, body=body))
        return built

    async def _drive(
        self,
        connections: list[Connection],
        level: Level,
        requests: list[bytes],
        max_seconds: float,
        *,
        closed: bool,
        start: float | None = None,
    ) -> None:
        """Each client sends a completion; closed loop: waits for its credential before the next one; open: sends
        the next at once and the credentials are awaited at the end."""
        taken = iter(requests)
        waiting: list[asyncio.Task[None]] = []
        intake_done = 0.0

        async def credential(sent: float, future: asyncio.Future[float]) -> None:
            level.latencies_ms.append((await future - sent) * 1000)

        async def sender(connection: Connection) -> None:
            nonlocal intake_done
            for request in taken:
                sent = time.perf_counter()
                try:
                    response = await connection.send(request)
                except (OSError, ValueError) as error:
                    level.errors.append(f"{type(error).__name__}: {error}")
                    return
                level.answer_ms.append((time.perf_counter() - sent) * 1000)
                intake_done = time.perf_counter()
                if response.status != 202:
                    level.errors.append(f"HTTP {response.status}: {response.text[:2000]}")
                    continue
                event_id = str(response.json()["id"])
                level.event_ids.append(event_id)
                waited = credential(sent, self.watcher.expect(event_id))
                if closed:
                    await waited
                else:
                    waiting.append(asyncio.ensure_future(waited))

        async def everything() -> None:
            await asyncio.gather(*(sender(c) for c in connections))
            await asyncio.gather(*waiting)

        try:
            await asyncio.wait_for(everything(), timeout=max_seconds)
        except TimeoutError:
            raise BenchError(
                f"{level.name}: {level.completions} completions did not become credentials within {max_seconds:.0f} s "
                f"({len(level.latencies_ms)} did)"
            ) from None
        if start is not None:
            level.intake_s = intake_done - start


# --- checks afterwards ------------------------------------------------------------------------------------------


def outcome_counts(database_url: str) -> dict[str, Any]:
    """Events by state, credentials issued for events, and any credential id used twice (must be none)."""
    queries = {
        "states": "SELECT state, COUNT(*) FROM completion_events GROUP BY state",
        "credentials": "SELECT COUNT(*), COUNT(DISTINCT idempotency_key) FROM credentials "
        "WHERE idempotency_key LIKE 'lms-event:%'",
        "jobs": "SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state",
    }
    connection: Any
    if database_url.startswith("sqlite:///"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    else:
        connection = psycopg.connect(database_url)
    with contextlib.closing(connection):
        states = dict(connection.execute(queries["states"]).fetchall())
        total, distinct = connection.execute(queries["credentials"]).fetchone()
        jobs = {f"{kind}:{state}": n for kind, state, n in connection.execute(queries["jobs"]).fetchall()}
    return {"events_by_state": states, "credentials": total, "distinct_credentials": distinct, "jobs": jobs}


# --- one database -----------------------------------------------------------------------------------------------


def bench_database(kind: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"ob3-bench-webhooks-{kind}-"))
    try:
        with fresh_database(kind, workdir) as url, running_service(url, args.workers, workdir) as server:
            print(f"[{kind}] serving at {server.base_url} with {args.workers} worker(s)", file=log, flush=True)
            sender = Sender(server)
            configure_source(server, sender)

            async def measure() -> list[Level]:
                with Watcher(url, asyncio.get_running_loop(), args.poll_ms / 1000) as watcher:
                    load = Load(server, sender, watcher)
                    levels = []
                    for concurrency in args.concurrency:
                        print(f"[{kind}] {args.completions} completions, {concurrency} sender(s)", file=log, flush=True)
                        level = load.level(
                            f"c{concurrency}", concurrency, args.completions, args.warmup, args.max_seconds, closed=True
                        )
                        levels.append(await level)
                    if args.cohort:
                        print(f"[{kind}] cohort of {args.cohort}, 50 senders", file=log, flush=True)
                        levels.append(await load.level("cohort", 50, args.cohort, 0, args.max_seconds, closed=False))
                    return levels

            levels = asyncio.run(measure())
            if server.process.poll() is not None:
                raise BenchError(f"the server died during the run:\n{server.log_tail()}")
            time.sleep(2)  # let the events' own decisions (`issued`) land after their credentials
            counts = outcome_counts(url)
            verified = issuer_cli(server.env, workdir, "audit", "verify", timeout=300, check=False)
            sent = sum(len(level.event_ids) for level in levels) + args.warmup * len(args.concurrency)
            return {
                "server_workers": args.workers,
                "levels": [level.summary() for level in levels],
                "audit": (verified.stdout + verified.stderr).strip(),
                "outcomes": counts,
                "all_issued_once": counts["credentials"] == counts["distinct_credentials"] == sent
                and counts["events_by_state"] == {"issued": sent},
                "error_samples": {
                    level.name: list(dict.fromkeys(level.errors))[:5] for level in levels if level.errors
                },
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- output -----------------------------------------------------------------------------------------------------


def flatten(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for kind, result in results.items():
        flat[f"{kind}.server_workers"] = result["server_workers"]
        for level in result["levels"]:
            for key, value in level.items():
                if key not in ("name", "concurrency"):
                    flat[f"{kind}.{level['name']}.{key}"] = value
        flat[f"{kind}.audit_chain_ok"] = result["audit"].startswith("audit log intact")
        flat[f"{kind}.all_issued_once"] = result["all_issued_once"]
        flat[f"{kind}.events_by_state"] = result["outcomes"]["events_by_state"]
        flat[f"{kind}.jobs"] = result["outcomes"]["jobs"]
        flat[f"{kind}.machine_was_quiet"] = all(
            (level.get("other_cpu_cores") or 0) <= NOISE_CORES for level in result["levels"]
        )
        if result["error_samples"]:
            flat[f"{kind}.error_samples"] = result["error_samples"]
    return flat


def print_table(kind: str, result: dict[str, Any]) -> None:
    print(f"\n{kind}: server with {result['server_workers']} worker(s), POST /webhooks/{{source}} (generic, signed)")
    print(
        f"{'senders':>9} {'done':>5} {'errors':>6} {'/s':>6} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'202 p50':>7} {'202 p99':>7} {'CPU: client':>11} {'server':>6} {'db':>5} {'other':>5}"
    )
    for level in result["levels"]:
        cpu = [level.get(f"{part}_cpu_cores") for part in ("client", "server", "database", "other")]
        client, server, database, other = ("" if v is None else f"{v:.2f}" for v in cpu)
        label = "cohort" if level["name"] == "cohort" else str(level["concurrency"])
        print(
            f"{label:>9} {level['issued']:>5} {level['errors']:>6} {level['per_s'] or 0:>6.1f} {level['p50_ms']:>7.1f} "
            f"{level['p90_ms']:>7.1f} {level['p99_ms']:>7.1f} {level['max_ms'] or 0:>7.1f} "
            f"{level['answer_p50_ms']:>7.1f} {level['answer_p99_ms']:>7.1f} {client:>11} {server:>6} {database:>5} "
            f"{other:>5}"
        )
        if level["name"] == "cohort":
            print(
                f"cohort of {level['completions']:,}: all credentials signed {level['wall_s']:.2f} s after the first "
                f"send (all 202s after {level['intake_s']:.2f} s)"
            )
    outcomes = result["outcomes"]
    print(f"events by state {outcomes['events_by_state']}; jobs {outcomes['jobs']}")
    print(f"{result['audit']}; every completion issued exactly once: {result['all_issued_once']}")
    busy = [lv["name"] for lv in result["levels"] if (lv.get("other_cpu_cores") or 0) > NOISE_CORES]
    if busy:
        print(f"WARNING: other processes used over {NOISE_CORES} cores during {busy}: figures are unreliable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--completions", type=int, default=500, help="measured completions per sender level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured completions before each level")
    parser.add_argument("--cohort", type=int, default=1000, help="completions in the cohort (0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes (default 2)")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50], help="e.g. 1,10,50"
    )
    parser.add_argument("--poll-ms", type=float, default=2.0, help="how often the watcher looks for credentials")
    parser.add_argument("--max-seconds", type=float, default=600, help="time limit per level")
    args = parser.parse_args(argv)
    if args.completions < 1 or args.workers < 1 or min(args.concurrency) < 1 or args.warmup < 0 or args.cohort < 0:
        parser.error("--completions, --workers and --concurrency must be positive")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server, drop the database
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            results[kind] = bench_database(kind, args, sys.stderr)
    except BenchError as error:
        for kind, result in results.items():
            print_table(kind, result)
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1

    errors = sum(level["errors"] for r in results.values() for level in r["levels"])
    broken = [
        k for k, r in results.items() if not r["audit"].startswith("audit log intact") or not r["all_issued_once"]
    ]
    if args.json:
        flat = flatten(results)
        flat["completions_per_level"] = args.completions
        flat["cohort"] = args.cohort
        flat["poll_ms"] = args.poll_ms
        flat["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
        flat["python"] = platform.python_version()
        flat["source"] = source_version()
        print(json.dumps(flat, indent=2))
    else:
        for kind, result in results.items():
            print_table(kind, result)
        print(
            f"\nLatency: from sending the webhook until its signed credential is in the database (seen by a watcher "
            f"looking every {args.poll_ms:g} ms); '202' is the webhook's own answer. {args.warmup} warm-up "
            f"completions per level not counted. Source {source_version()}, Python {platform.python_version()}."
        )
    if errors or broken:
        print(f"\nBENCHMARK FAILED: {errors} errors; integrity problems in {broken or 'none'}", file=sys.stderr)
        for kind, result in results.items():
            for name, samples in result["error_samples"].items():
                for sample in samples:
                    print(f"  {kind} {name}: {sample}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
