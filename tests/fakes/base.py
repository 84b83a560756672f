"""A fake API server over real HTTP on 127.0.0.1, with routes, a request log and a fault schedule.

Faults are consumed in order by the requests they match (method and path regex), each `times` times:

- `status`: answer with that status (and the service's error body) without doing anything;
- `rate_limit`: 429 with `Retry-After` (seconds or an HTTP date), without doing anything;
- `drop_before`: close the connection without an answer, without doing anything;
- `drop_after`: do the work (it is committed), then close the connection without an answer ("the request
  succeeded but the response was lost");
- `slow_after`: do the work, then wait `delay` seconds before answering (the client times out first).

`outage()` drops every connection until it ends (a stretch of downtime).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

FaultKind = Literal["status", "rate_limit", "drop_before", "drop_after", "slow_after"]


@dataclass
class Fault:
    kind: FaultKind
    method: str | None = None
    path: str | None = None  # a regex searched in the path
    times: int = 1
    status: int = 500
    retry_after: str = "30"
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None
        )


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class FakeResponse:
    status: int
    body: Any = None  # JSON-able, or bytes sent as they are
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return b"" if self.body is None else json.dumps(self.body).encode()


Route = Callable[..., FakeResponse]


class FakeServer:
    """Subclasses add routes (`self.add(method, pattern, handler)`), `authorized(request)` and `error(status)`."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        self.faults: list[Fault] = []
        self.requests: list[FakeRequest] = []
        self.lock = threading.RLock()
        self.down = False
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

            def do_PUT(self) -> None:
                server._handle(self)

            def do_PATCH(self) -> None:
                server._handle(self)

            def do_DELETE(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out makes our late write fail: expected

        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    # ------------------------------------------------------------------------------------------- control

    def add(self, method: str, pattern: str, handler: Route) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def inject(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    @contextmanager
    def outage(self) -> Iterator[None]:
        self.down = True
        try:
            yield
        finally:
            self.down = False

    def calls(self, method: str, pattern: str) -> list[FakeRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    # ------------------------------------------------------------------------------------------- for subclasses

    def authorized(self, request: FakeRequest) -> FakeResponse | None:
        """None when the request may proceed, else the refusal."""
        return None

    def error(self, status: int, message: str = "") -> FakeResponse:
        return FakeResponse(status, {"error": message or f"HTTP {status}"})

    def before(self, request: FakeRequest) -> FakeResponse | None:
        """A hook run before auth and routing (rate budgets)."""
        return None

    # ------------------------------------------------------------------------------------------- serving

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urlsplit(h.path)
        request = FakeRequest(
            h.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()}, body
        )
        with self.lock:
            self.requests.append(request)
        if self.down:
            h.close_connection = True
            return
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.kind == "drop_before":
            h.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            self._send(h, self.error(fault.status))
            return
        if fault is not None and fault.kind == "rate_limit":
            limited = self.error(429, "Too many requests")
            limited.headers["Retry-After"] = fault.retry_after
            self._send(h, limited)
            return
        response = self.before(request) or self.authorized(request) or self._route(request)
        if fault is not None and fault.kind == "drop_after":
            h.close_connection = True
            return
        if fault is not None and fault.kind == "slow_after":
            time.sleep(fault.delay)
        self._send(h, response)

    def _route(self, request: FakeRequest) -> FakeResponse:
        for method, pattern, handler in self.routes:
            matched = pattern.match(request.path)
            if matched and method == request.method:
                try:
                    with self.lock:
                        return handler(request, **matched.groupdict())
                except (ValueError, TypeError, KeyError, AttributeError) as error:
                    return self.error(400, f"malformed request: {error}")
        return self.error(404, "Not found")

    def _send(self, h: BaseHTTPRequestHandler, response: FakeResponse) -> None:
        payload = response.encoded()
        try:
            h.send_response(response.status)
            h.send_header("Content-Type", response.content_type)
            h.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout): nothing to tell it
