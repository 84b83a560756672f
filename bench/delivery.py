"""`python -m bench.delivery [--json] [--database sqlite|postgresql|both] [--learners N] [--via webhook|api]`.

A cohort delivered end to end: from the first request to every certificate rendered and every email accepted.

A real `issuer serve --workers N` (granian; each worker process runs the embedded job worker, so N processes
share the jobs) on a fresh database, started with `bench.service`'s helpers, and a real SMTP server (aiosmtpd on
127.0.0.1, in this process) that the service is configured to send to (`.env` in the server's working directory).
Then `--learners` completions, each for a different learner, at `--concurrency` concurrent senders:

- `--via webhook` (default): signed Standard Webhooks deliveries to `POST /webhooks/bench` (a `generic` source
  mapped to the achievement). Each is stored and answered 202; the `process_completion` job decides and issues,
  and the credential's email job renders the PDF certificate and sends it as an attachment.
- `--via api`: `POST /api/v1/credentials` (201 once issued); the email jobs follow as above.

The clock stops when the SMTP server has accepted one email per learner. Every email must carry a PDF
(`application/pdf` part) and go to a distinct learner, and no job may be dead-lettered (`GET /api/v1/jobs?
state=failed`): otherwise the run fails (exit 1). Figures: seconds to the last request answered and to the last
email accepted, certificates (PDFs) and emails per second over the whole run, and CPU in cores by part (this
client with its SMTP server, the server processes, PostgreSQL backends, everything else) as in `bench.service`.
Only 127.0.0.1 is contacted; the run is bounded by `--max-seconds`.
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
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from bench.service import (
    HOST,
    NOISE_CORES,
    BenchError,
    CpuSnapshot,
    Server,
    free_port,
    fresh_database,
    learner,
    running_service,
    source_version,
)

SOURCE_ID = "bench"
COURSE_ID = "COHORT-1"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"bench.delivery source key").digest()).decode()


# --- the SMTP server --------------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """Counts what the SMTP server accepted: recipients, and whether each message carries a PDF."""

    received: int = 0
    with_pdf: int = 0
    recipients: set[str] = field(default_factory=set)
    first_at: float | None = None
    last_at: float | None = None
    sample: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        content: bytes = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        now = time.perf_counter()
        with self.lock:
            self.received += 1
            self.with_pdf += b"Content-Type: application/pdf" in content
            self.recipients.update(envelope.rcpt_tos)
            self.first_at = self.first_at or now
            self.last_at = now
            if not self.sample:
                self.sample = content
        return "250 2.0.0 accepted"


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname=HOST, port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def write_env(workdir: Path, smtp_port: int) -> None:
    """Email settings for the service, in the `.env` its processes read (bench.service passes no ISSUER_SMTP_*)."""
    lines = {
        "ISSUER_SMTP_HOST": HOST,
        "ISSUER_SMTP_PORT": str(smtp_port),
        "ISSUER_SMTP_SECURITY": "none",
        "ISSUER_SMTP_FROM": "Benchmark Institute <badges@bench.example>",
        "ISSUER_SMTP_TIMEOUT": "30",
    }
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))


# --- the cohort -------------------------------------------------------------------------------------------------


def admin(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def create_source(server: Server) -> None:
    """A generic (Standard Webhooks) source with the course mapped to the benchmark's achievement."""
    with httpx.Client(base_url=server.base_url, headers=admin(server), timeout=30) as client:
        body = {"id": SOURCE_ID, "platform": "generic", "secrets": [WEBHOOK_SECRET], "config": {}}
        response = client.post("/api/v1/lms/sources", json=body)
        if response.status_code != 201:
            raise BenchError(f"creating the LMS source: HTTP {response.status_code}: {response.text}")
        mapping = {"course_id": COURSE_ID, "achievement_id": server.achievement_id}
        response = client.post(f"/api/v1/lms/sources/{SOURCE_ID}/mappings", json=mapping)
        if response.status_code != 201:
            raise BenchError(f"mapping the course: HTTP {response.status_code}: {response.text}")


def completion(run: str, n: int) -> tuple[bytes, dict[str, str]]:
    """A signed Standard Webhooks delivery of learner `n`'s completion: (body, headers)."""
    who = learner(run, n)
    now = datetime.now(UTC).replace(microsecond=0)
    data = {
        "type": "course.completed",
        "data": {
            "learner": {"id": f"{run}-{n}", "email": who["email"], "name": who["name"]},
            "course": {"id": COURSE_ID, "name": "Data Analysis"},
            "completed_at": now.isoformat(),
            "score": 80 + n % 20,
        },
    }
    body = json.dumps(data, separators=(",", ":")).encode()
    event_id, sent = f"evt-{run}-{n}", str(int(now.timestamp()))
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signature = base64.b64encode(hmac.new(key, f"{event_id}.{sent}.".encode() + body, hashlib.sha256).digest())
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": sent,
        "webhook-signature": f"v1,{signature.decode()}",
    }
    return body, headers


@dataclass
class Requests:
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


async def send_cohort(server: Server, via: str, learners: int, concurrency: int, max_seconds: float) -> Requests:
    """Every learner's request, `concurrency` senders in closed loop, one keep-alive connection each."""
    run = secrets.token_hex(3)
    outcome = Requests()
    numbers = iter(range(learners))
    expected = 202 if via == "webhook" else 201

    async def sender(client: httpx.AsyncClient) -> None:
        for n in numbers:
            if via == "webhook":
                body, headers = completion(run, n)
                request = client.post(f"/webhooks/{SOURCE_ID}", content=body, headers=headers)
            else:
                issue = {"achievement_id": server.achievement_id, "recipient": learner(run, n)}
                request = client.post("/api/v1/credentials", json=issue, headers=admin(server))
            try:
                response = await request
            except httpx.HTTPError as error:
                outcome.errors.append(f"{type(error).__name__}: {error}")
                continue
            outcome.answered += 1
            if response.status_code != expected:
                outcome.errors.append(f"HTTP {response.status_code}: {response.text[:500]}")

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    start = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60))
            for _ in range(concurrency)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(sender(c) for c in clients)), timeout=max_seconds)
        except TimeoutError:
            raise BenchError(f"the {learners} requests did not finish within {max_seconds:.0f} s") from None
    outcome.wall_s = time.perf_counter() - start
    return outcome


def wait_for_mail(server: Server, mailbox: Mailbox, learners: int, deadline: float) -> None:
    while mailbox.received < learners:
        if server.process.poll() is not None:
            raise BenchError(f"the server exited during the run:\n{server.log_tail()}")
        if time.perf_counter() > deadline:
            raise BenchError(f"only {mailbox.received} of {learners} emails arrived in time:\n{server.log_tail()}")
        time.sleep(0.02)


def failed_jobs(server: Server) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/api/v1/jobs", params={"state": "failed", "limit": 5}, headers=admin(server), timeout=30
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def bench_delivery(kind: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"ob3-bench-delivery-{kind}-"))
    try:
        with (
            smtp_server() as (mailbox, smtp_port),
            fresh_database(kind, workdir) as url,
        ):
            write_env(workdir, smtp_port)
            with running_service(url, args.workers, workdir) as server:
                if args.via == "webhook":
                    create_source(server)
                print(
                    f"[{kind}] {server.base_url}, {args.workers} server process(es) with embedded job workers; "
                    f"{args.learners} learners via {args.via} at concurrency {args.concurrency}...",
                    file=log,
                    flush=True,
                )
                before = CpuSnapshot.take(server)
                start = time.perf_counter()
                sent = asyncio.run(send_cohort(server, args.via, args.learners, args.concurrency, args.max_seconds))
                if sent.errors:
                    raise BenchError(f"{len(sent.errors)} requests failed, e.g. {sent.errors[0]}")
                wait_for_mail(server, mailbox, args.learners, start + args.max_seconds)
                total = (mailbox.last_at or time.perf_counter()) - start
                cpu = CpuSnapshot.take(server).since(before, time.perf_counter() - start)
                failed = failed_jobs(server)
        if failed["total"]:
            raise BenchError(f"{failed['total']} jobs were dead-lettered, e.g. {failed['items'][0]['lastError']}")
        if mailbox.with_pdf != args.learners or len(mailbox.recipients) != args.learners:
            raise BenchError(
                f"{mailbox.received} emails to {len(mailbox.recipients)} recipients, {mailbox.with_pdf} with a PDF"
            )
        return {
            "database": kind,
            "via": args.via,
            "server_workers": args.workers,
            "learners": args.learners,
            "concurrency": args.concurrency,
            "requests_s": round(sent.wall_s, 2),
            "first_email_s": round((mailbox.first_at or start) - start, 2),
            "total_s": round(total, 2),
            "pdfs_per_s": round(mailbox.with_pdf / total, 1),
            "emails_per_s": round(mailbox.received / total, 1),
            "emails": mailbox.received,
            "emails_with_pdf": mailbox.with_pdf,
            "distinct_recipients": len(mailbox.recipients),
            "dead_letters": failed["total"],
            **{f"{part}_cpu_cores": value for part, value in cpu.items()},
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__.split("\n\n")[1])
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--learners", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="server processes, each with a job worker thread")
    parser.add_argument("--via", choices=["webhook", "api"], default="webhook")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent senders")
    parser.add_argument("--max-seconds", type=float, default=600, help="time limit for the whole cohort")
    args = parser.parse_args(argv)
    if min(args.learners, args.workers, args.concurrency) < 1:
        parser.error("--learners, --workers and --concurrency must be positive")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server, drop the database
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = []
    try:
        for kind in kinds:
            results.append(bench_delivery(kind, args, sys.stderr))
    except BenchError as error:
        print(f"BENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "source": source_version(),
    }
    if args.json:
        print(json.dumps({"results": results, **meta}, indent=2))
        return 0
    for r in results:
        print(
            f"\n{r['database']}: {r['learners']:,} learners via {r['via']} ({r['concurrency']} senders), "
            f"{r['server_workers']} server process(es) with embedded job workers\n"
            f"  requests answered      {r['requests_s']:>8.2f} s\n"
            f"  first email accepted   {r['first_email_s']:>8.2f} s\n"
            f"  last email accepted    {r['total_s']:>8.2f} s  (every PDF rendered, every email accepted)\n"
            f"  certificates (PDFs)/s  {r['pdfs_per_s']:>8.1f}\n"
            f"  emails/s               {r['emails_per_s']:>8.1f}\n"
            f"  CPU cores: client+SMTP {r.get('client_cpu_cores')}, server {r.get('server_cpu_cores')}, "
            f"database {r.get('database_cpu_cores')}, other {r.get('other_cpu_cores')}"
        )
        if (r.get("other_cpu_cores") or 0) > NOISE_CORES:
            print(f"  WARNING: other processes used over {NOISE_CORES} cores: the machine was busy")
    print(f"\nSource {meta['source']}, Python {meta['python']}, {meta['machine']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
