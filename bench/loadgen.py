"""A lean HTTP/1.1 load client for the benchmarks: keep-alive connections over asyncio, requests built beforehand.

Why not httpx: on this 2-core machine the client shares the CPU with the server it measures. httpx spends ~1.2 ms
of CPU per request (request building, header models, its connection pool), about a fifth of what the server
spends issuing a credential, and that time is taken from the server and shows up as latency. This client writes
prebuilt request bytes and reads `Content-Length` or chunked bodies, ~0.05-0.1 ms per request, so the figures
describe the service. It speaks only what our own service answers with (HTTP/1.1, no TLS, no compression).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: bytes  # the raw header block, for the rare caller that needs one
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def build_request(
    method: str,
    host: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
) -> bytes:
    """The whole request as bytes, ready to be written as many times as wanted."""
    if json_body is not None:
        body = json.dumps(json_body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} | (headers or {})
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class ConnectionClosed(ConnectionError):
    pass


class _Protocol(asyncio.Protocol):
    """Collects bytes until one whole response is in, then resolves the waiting future."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            response = _parse(self.buffer)
            if response is not None:
                self.waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionClosed("the server closed the connection"))


def _parse(buffer: bytearray) -> Response | None:
    """One complete response from the front of `buffer` (removed from it), or None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    status = int(head[9:12])
    lower = head.lower()
    start = end + 4
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = lower.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        return Response(status, head, body)
    if b"\r\ntransfer-encoding: chunked" in lower:
        chunks = []
        at = start
        while True:
            size_end = buffer.find(b"\r\n", at)
            if size_end < 0:
                return None
            size = int(bytes(buffer[at:size_end]).split(b";")[0], 16)
            if len(buffer) < size_end + 2 + size + 2:
                return None
            chunks.append(bytes(buffer[size_end + 2 : size_end + 2 + size]))
            at = size_end + 2 + size + 2
            if size == 0:
                del buffer[:at]
                return Response(status, head, b"".join(chunks))
    if status in (204, 304) or 100 <= status < 200:
        del buffer[:start]
        return Response(status, head, b"")
    raise ValueError(f"response without Content-Length or chunked encoding: {head[:200]!r}")


class Connection:
    """One keep-alive connection; one request in flight at a time (a closed-loop client)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(_Protocol, host, port)
        assert isinstance(transport, asyncio.Transport)
        return cls(transport, protocol)

    async def send(self, request: bytes) -> Response:
        """Write `request` and wait for its whole response (callers bound the time for a whole level)."""
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._protocol.waiter = waiter
        self._transport.write(request)
        return await waiter

    def close(self) -> None:
        self._transport.close()


async def open_connections(host: str, port: int, count: int) -> list[Connection]:
    return [await Connection.open(host, port) for _ in range(count)]


async def closed_loop(
    connections: list[Connection], requests: list[bytes], max_seconds: float
) -> tuple[list[float], list[Response | Exception]]:
    """Send `requests` over `connections`, each connection sending its next one as soon as its last is answered.

    Returns the latencies in ms (perf_counter around write and whole response) and the responses, both in the
    order the requests were taken. Raises TimeoutError if the whole run exceeds `max_seconds`.
    """
    latencies: list[float] = [0.0] * len(requests)
    responses: list[Response | Exception] = [ConnectionClosed("not sent")] * len(requests)
    taken = iter(range(len(requests)))
    clock = time.perf_counter

    async def drive(connection: Connection) -> None:
        for n in taken:
            start = clock()
            try:
                responses[n] = await connection.send(requests[n])
            except (OSError, ValueError) as error:
                responses[n] = error
                latencies[n] = (clock() - start) * 1000
                return  # the connection is unusable; the others take the rest
            latencies[n] = (clock() - start) * 1000

    await asyncio.wait_for(asyncio.gather(*(drive(c) for c in connections)), timeout=max_seconds)
    return latencies, responses
