"""`python -m bench.service [--json] [--database sqlite|postgresql|both] [--requests N] [--workers N]`.

Issuing over HTTP, end to end: a real `issuer serve` (granian) on 127.0.0.1, driven by a lean asyncio HTTP/1.1 client
(`bench/loadgen.py`: prebuilt requests, ~0.1 ms of client CPU per request, against ~1.2 ms for httpx).

For each database: a fresh SQLite file in a temporary directory, or a fresh PostgreSQL database
`ob3_bench_<random>` on 127.0.0.1:5432 (dropped afterwards, even on failure); a temporary keys directory and a
random master key; `issuer init`; `issuer serve --workers N` on a free port; an admin API key from
`issuer api-keys create`; one achievement created through the API. Then:

- load: POST /api/v1/credentials at 1, 10 and 50 concurrent clients, a fixed number of requests per level after
  a short warm-up, each request for a different learner (distinct email and name). Latency is measured
  client-side with perf_counter around each request (send, server work, whole response body read); req/s is
  requests over the level's wall time. Every answer must be 201: anything else is an error, printed with its
  body, and the command exits 1.
- batch: POST /api/v1/credentials/batch with 1,000 distinct learners as one JSON array, timed end to end.
- afterwards: `issuer audit verify` (the hash chain must be intact after concurrent appends) and a count of the
  credentials the service returned (all ids distinct).

Only 127.0.0.1 is ever contacted; every level is bounded by a request count and a time limit (--max-seconds).
CPU use during each level is reported in cores, by part: this client (getrusage), the server's process tree and
the PostgreSQL backends of the benchmark database (/proc), and everything else on the machine (/proc/stat). A
client that starves the server, or other work on a shared machine, shows up there; over 0.25 cores of other work
marks the figures as unreliable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import Connection, Response, build_request, closed_loop, open_connections

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Katherine", "Donald", "Margaret", "Niklaus")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Johnson", "Knuth", "Hamilton", "Wirth")


NOISE_CORES = 0.25  # more CPU than this used by other processes during a level: the machine was not quiet


class BenchError(RuntimeError):
    """The benchmark could not run, or the service answered wrongly: reported loudly, exit code 1."""


# --- helpers ----------------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p99 of 1,000 samples is the 990th)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_s(pid: int) -> float | None:
    """user+system CPU seconds of a live process and its live descendants (Linux /proc); None elsewhere."""
    total, stack, seen = 0.0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            if current == pid:
                return None
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
    return total


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux /proc/stat); None elsewhere."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICKS, sum(ticks) / _TICKS


def postgres_backends(database: str) -> list[int]:
    """Process ids of the PostgreSQL backends serving `database` (they run on this machine: 127.0.0.1)."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return [int(row[0]) for row in rows]


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far: this client, the server's process tree, the database's backends, the whole machine."""

    client: float
    server: float | None
    database: dict[int, float]
    machine_busy: float | None

    @classmethod
    def take(cls, server: Server) -> CpuSnapshot:
        database: dict[int, float] = {}
        for pid in postgres_backends(server.pg_database) if server.pg_database else []:
            used = tree_cpu_s(pid)
            if used is not None:
                database[pid] = used
        machine = machine_cpu_s()
        return cls(client_cpu_s(), tree_cpu_s(server.process.pid), database, machine and machine[0])

    def since(self, before: CpuSnapshot, wall_s: float) -> dict[str, float | None]:
        """Cores used in between, by part; `other` is whatever else ran on the machine (should be ~0)."""
        client = (self.client - before.client) / wall_s
        server = None if self.server is None or before.server is None else (self.server - before.server) / wall_s
        # A backend that appeared in between counts from zero (it was started during the level).
        database = sum(used - before.database.get(pid, 0.0) for pid, used in self.database.items()) / wall_s
        cores: dict[str, float | None] = {"client": client, "server": server, "database": database}
        if self.machine_busy is not None and before.machine_busy is not None:
            machine = (self.machine_busy - before.machine_busy) / wall_s
            cores["machine"] = machine
            cores["other"] = machine - client - (server or 0.0) - database
        return {name: None if value is None else round(value, 2) for name, value in cores.items()}


def source_version() -> str:
    """The git commit measured, `+dirty` when tracked files have changes (others may be editing them)."""

    def git(*args: str) -> str:
        command = ["git", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def learner(run: str, n: int) -> dict[str, str]:
    """A distinct recipient: the email and the name both differ for every n."""
    first = FIRST_NAMES[n % len(FIRST_NAMES)]
    last = LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)]
    return {"email": f"learner-{run}-{n}@example.org", "name": f"{first} {last} {n}"}


# --- the service under test -------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    env: dict[str, str]
    log_path: Path
    workdir: Path
    token: str = ""
    achievement_id: str = ""
    pg_database: str | None = None  # for the CPU accounting of its backends

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def issuer_cli(
    env: dict[str, str], cwd: Path, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # noqa: S603 (fixed argv: this interpreter, -m issuer)
        [sys.executable, "-m", "issuer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise BenchError(f"`issuer {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def service_env(database_url: str, keys_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISSUER_")}
    env.update(
        {
            "ISSUER_BASE_URL": f"http://{HOST}:{port}",
            "ISSUER_DATABASE_URL": database_url,
            "ISSUER_KEYS_DIR": str(keys_dir),
            "ISSUER_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
            "ISSUER_ENV": "development",
            "ISSUER_NAME": "Benchmark Institute",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        }
    )
    return env


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM to the server (granian stops its workers), then SIGKILL to its whole process group if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only the server and its workers
            process.wait(timeout=timeout)
    # Workers that outlived a dead parent share its process group (start_new_session): make sure none is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_service(database_url: str, workers: int, workdir: Path) -> Iterator[Server]:
    port = free_port()
    keys_dir = workdir / "keys"
    env = service_env(database_url, keys_dir, port)
    issuer_cli(env, workdir, "init")
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 (fixed argv: this interpreter, -m issuer)
            [sys.executable, "-m", "issuer", "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://{HOST}:{port}", env, log_path, workdir)
    if database_url.startswith("postgresql://"):
        server.pg_database = database_url.rsplit("/", 1)[1]
    try:
        wait_ready(server)
        server.token = issuer_cli(env, workdir, "api-keys", "create", "--scopes", "admin").stdout.split()[0]
        server.achievement_id = create_achievement(server)
        yield server
    finally:
        stop(process)


def wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{server.base_url}/.well-known/did.json").status_code == 200:
                    return
            time.sleep(0.1)
    raise BenchError(f"the server was not ready within {timeout:.0f} s:\n{server.log_tail()}")


def create_achievement(server: Server) -> str:
    body = {
        "name": "Data Analysis",
        "description": "Analysed real data with care.",
        "criteria": {"narrative": "Pass the final project."},
        "achievementType": "Certificate",
    }
    response = httpx.post(
        f"{server.base_url}/api/v1/achievements",
        json=body,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    if response.status_code != 201:
        raise BenchError(f"creating the achievement: HTTP {response.status_code}: {response.text}")
    return str(response.json()["id"])


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path) -> Iterator[str]:
    """A database URL for a new, empty database; the database is removed afterwards whatever happens."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'issuer.db'}"  # removed with workdir
        return
    import psycopg
    from psycopg import sql

    name = f"ob3_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        raise BenchError(f"cannot create a PostgreSQL database at {PG_ADMIN_URL}: {error}") from error
    try:
        yield f"postgresql://postgres@{HOST}:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- load -------------------------------------------------------------------------------------------------------


@dataclass
class Level:
    concurrency: int
    requests: int
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    cpu: dict[str, float | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": len(self.latencies_ms) - len(self.errors),
            "errors": len(self.errors),
            "req_per_s": round(self.requests / self.wall_s, 1) if self.wall_s else None,
            "p50_ms": round(percentile(ordered, 50), 1),
            "p90_ms": round(percentile(ordered, 90), 1),
            "p99_ms": round(percentile(ordered, 99), 1),
            "max_ms": round(ordered[-1], 1) if ordered else None,
            "mean_ms": round(sum(ordered) / len(ordered), 1) if ordered else None,
            "wall_s": round(self.wall_s, 2),
            # CPU in cores (1.0 = one core busy for the whole level); the machine has os.cpu_count() of them.
            **{f"{name}_cpu_cores": value for name, value in self.cpu.items()},
            # Server CPU per request (server processes, plus the database's backends on PostgreSQL): what sets the
            # ceiling on this machine, and less disturbed by other work than latency is.
            "server_cpu_ms_per_request": self.cpu_ms_per_request(),
        }

    def cpu_ms_per_request(self) -> float | None:
        cores = [self.cpu.get("server"), self.cpu.get("database")]
        if cores[0] is None or not self.requests:
            return None
        return round(sum(c or 0.0 for c in cores) * self.wall_s / self.requests * 1000, 2)


class Load:
    """Issues credentials through POST /api/v1/credentials; every call is for a learner never seen before."""

    def __init__(self, server: Server, credential_format: str | None = None) -> None:
        self.server = server
        self.format = credential_format
        self.run = secrets.token_hex(3)
        self.counter = 0
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.headers = {"Authorization": f"Bearer {server.token}"}

    def requests(self, count: int) -> list[bytes]:
        """`count` requests, built before the clock starts, each for a new learner."""
        built = []
        for _ in range(count):
            self.counter += 1
            body = {"achievement_id": self.server.achievement_id, "recipient": learner(self.run, self.counter)}
            body |= {"format": self.format} if self.format else {}
            built.append(
                build_request(
                    "POST", f"{self.host}:{self.port}", "/api/v1/credentials", headers=self.headers, json_body=body
                )
            )
        return built

    async def level(self, concurrency: int, requests: int, warmup: int, max_seconds: float) -> Level:
        # One keep-alive HTTP/1.1 connection per simulated client: `concurrency` connections in all.
        connections = await open_connections(self.host, self.port, concurrency)
        try:
            await self._drive(connections, self.requests(warmup), Level(concurrency, warmup), max_seconds)
            level = Level(concurrency, requests)
            measured = self.requests(requests)
            before = CpuSnapshot.take(self.server)
            start = time.perf_counter()
            responses = await self._drive(connections, measured, level, max_seconds)
            level.wall_s = time.perf_counter() - start
            level.cpu = CpuSnapshot.take(self.server).since(before, level.wall_s)
        finally:
            for connection in connections:
                connection.close()
        for response in responses:  # read the answers after the clock and the CPU accounting have stopped
            if isinstance(response, Exception):
                level.errors.append(f"{type(response).__name__}: {response}")
            elif response.status != 201:
                level.errors.append(f"HTTP {response.status}: {response.text[:2000]}")
            else:
                level.ids.append(response.json()["id"])
        return level

    async def _drive(
        self, connections: list[Connection], requests: list[bytes], level: Level, max_seconds: float
    ) -> list[Response | Exception]:
        """`len(connections)` clients in closed loop: each sends its next request as soon as its last is answered."""
        try:
            latencies, responses = await closed_loop(connections, requests, max_seconds)
        except TimeoutError:
            raise BenchError(
                f"concurrency {len(connections)}: {len(requests)} requests did not finish within {max_seconds:.0f} s"
            ) from None
        level.latencies_ms = latencies
        return responses


def run_batch(server: Server, rows: int, run: str, credential_format: str | None) -> dict[str, Any]:
    extra = {"format": credential_format} if credential_format else {}
    body = [
        {"achievement_id": server.achievement_id, "recipient": learner(f"batch-{run}", n)} | extra for n in range(rows)
    ]
    payload = json.dumps(body).encode()
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        response = client.post(
            f"{server.base_url}/api/v1/credentials/batch",
            content=payload,
            headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
        )
        elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise BenchError(f"batch: HTTP {response.status_code}: {response.text[:2000]}")
    result = response.json()
    if result["issued"] != rows or result["failed"]:
        failures = [r for r in result["results"] if r["status"] != "issued"][:5]
        raise BenchError(f"batch: {result['issued']} issued, {result['failed']} failed, e.g. {failures}")
    return {
        "rows": rows,
        "seconds": round(elapsed, 2),
        "ms_per_row": round(elapsed * 1000 / rows, 2),
        "rows_per_s": round(rows / elapsed, 1),
        "body_kib": round(len(payload) / 1024, 1),
        "response_kib": round(len(response.content) / 1024, 1),
    }


def bench_database(kind: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"ob3-bench-{kind}-"))
    try:
        with fresh_database(kind, workdir) as url, running_service(url, args.workers, workdir) as server:
            print(f"[{kind}] serving at {server.base_url} with {args.workers} worker(s)", file=log, flush=True)
            load = Load(server, args.format)
            levels: list[Level] = []
            for concurrency in args.concurrency:
                print(f"[{kind}] {args.requests} requests at concurrency {concurrency}...", file=log, flush=True)
                level = asyncio.run(load.level(concurrency, args.requests, args.warmup, args.max_seconds))
                levels.append(level)
                if level.errors:
                    print(f"[{kind}] c{concurrency}: {len(level.errors)} ERRORS, e.g. {level.errors[0]}", file=log)
            batch = None
            if args.batch_rows:
                print(f"[{kind}] batch of {args.batch_rows}...", file=log, flush=True)
                batch = run_batch(server, args.batch_rows, load.run, args.format)
            if server.process.poll() is not None:
                raise BenchError(f"the server died during the run:\n{server.log_tail()}")
            verified = issuer_cli(server.env, workdir, "audit", "verify", timeout=300, check=False)
            audit = (verified.stdout + verified.stderr).strip()
            ids = [i for level in levels for i in level.ids]
            result: dict[str, Any] = {
                "server_workers": args.workers,
                "format": args.format or "default (ldp)",
                "levels": [level.summary() for level in levels],
                "batch": batch,
                "audit": audit,
                "distinct_ids": len(set(ids)) == len(ids),
                "error_samples": {
                    f"c{level.concurrency}": list(dict.fromkeys(level.errors))[:5] for level in levels if level.errors
                },
            }
            return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- output -----------------------------------------------------------------------------------------------------


def flatten(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for kind, result in results.items():
        flat[f"{kind}.server_workers"] = result["server_workers"]
        for level in result["levels"]:
            for key, value in level.items():
                if key != "concurrency":
                    flat[f"{kind}.c{level['concurrency']}.{key}"] = value
        if result["batch"]:
            rows = result["batch"]["rows"]
            flat[f"{kind}.batch_{rows}_s"] = result["batch"]["seconds"]
            flat[f"{kind}.batch_{rows}_ms_per_row"] = result["batch"]["ms_per_row"]
        flat[f"{kind}.audit_chain_ok"] = result["audit"].startswith("audit log intact")
        flat[f"{kind}.distinct_ids"] = result["distinct_ids"]
        flat[f"{kind}.machine_was_quiet"] = all(
            (level.get("other_cpu_cores") or 0) <= NOISE_CORES for level in result["levels"]
        )
        if result["error_samples"]:
            flat[f"{kind}.error_samples"] = result["error_samples"]
    return flat


def print_table(kind: str, result: dict[str, Any]) -> None:
    print(
        f"\n{kind}: server with {result['server_workers']} worker(s), POST /api/v1/credentials, "
        f"format {result['format']}"
    )
    header = (
        f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'CPU: client':>11} {'server':>6} {'db':>5} {'other':>5}"
    )
    print(header)
    for level in result["levels"]:
        cpu = [level.get(f"{part}_cpu_cores") for part in ("client", "server", "database", "other")]
        client, server, database, other = ("" if v is None else f"{v:.2f}" for v in cpu)
        print(
            f"{level['concurrency']:>11} {level['requests']:>8} {level['errors']:>6} {level['req_per_s']:>7.1f} "
            f"{level['p50_ms']:>7.1f} {level['p90_ms']:>7.1f} {level['p99_ms']:>7.1f} {level['max_ms']:>7.1f} "
            f"{client:>11} {server:>6} {database:>5} {other:>5}"
        )
    batch = result["batch"]
    if batch:
        print(
            f"batch of {batch['rows']:,} learners (one JSON POST): {batch['seconds']:.2f} s, "
            f"{batch['ms_per_row']:.2f} ms per row ({batch['rows_per_s']:.0f} rows/s)"
        )
    print(f"{result['audit']}; all credential ids distinct: {result['distinct_ids']}")
    busy = [lv["concurrency"] for lv in result["levels"] if (lv.get("other_cpu_cores") or 0) > NOISE_CORES]
    if busy:
        print(f"WARNING: other processes used over {NOISE_CORES} cores at concurrency {busy}: figures are unreliable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.split("\n\n")[1])
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests before each level")
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes (default 2)")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50], help="e.g. 1,10,50"
    )
    parser.add_argument(
        "--format",
        choices=["ldp", "jwt", "both"],
        help="credential format to ask for (default: none given, i.e. the API's default: Data Integrity only)",
    )
    parser.add_argument("--batch-rows", type=int, default=1000, help="rows in the batch request (0: skip)")
    parser.add_argument("--max-seconds", type=float, default=600, help="time limit per level")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.workers < 1 or min(args.concurrency) < 1 or args.warmup < 0:
        parser.error("--requests, --workers and --concurrency must be positive")

    # A SIGTERM must unwind through the `finally` blocks: stop the server, drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    log = sys.stderr
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            results[kind] = bench_database(kind, args, log)
    except BenchError as error:
        for kind, result in results.items():  # what was measured before the failure
            print_table(kind, result)
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1

    errors = sum(level["errors"] for r in results.values() for level in r["levels"])
    broken = [k for k, r in results.items() if not r["audit"].startswith("audit log intact") or not r["distinct_ids"]]
    if args.json:
        flat = flatten(results)
        flat["requests_per_level"] = args.requests
        flat["format"] = args.format or "default (ldp)"
        flat["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
        flat["python"] = platform.python_version()
        flat["source"] = source_version()
        print(json.dumps(flat, indent=2))
    else:
        for kind, result in results.items():
            print_table(kind, result)
        print(
            f"\nCPU in cores used during the level (this machine has {os.cpu_count()}): this client, the server's "
            "processes, the PostgreSQL backends, and everything else on the machine (should be ~0).\n"
            f"Latency: measured by the client around each request; {args.warmup} warm-up requests per level not "
            f"counted. Source {source_version()}, Python {platform.python_version()}."
        )
    if errors or broken:
        print(
            f"\nBENCHMARK FAILED: {errors} non-201 answers; integrity problems in {broken or 'none'}", file=sys.stderr
        )
        for kind, result in results.items():
            for level_name, samples in result["error_samples"].items():
                for sample in samples:
                    print(f"  {kind} {level_name}: {sample}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
