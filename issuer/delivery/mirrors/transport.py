"""One HTTP round trip to Credly or Accredible, with the mirror's budget and its failure classes.

Every request has the configured timeout, no redirects, a byte cap on the answer, and stays on the configured
origin (a `next_page_url` pointing elsewhere is refused, so the token never travels to another host). Failures
are sorted once, here, into what the job system understands:

- no answer (connect error, timeout, dropped connection), 408, 5xx -> `MirrorUnavailable` (retried with backoff);
  whether a request that got no answer took effect is unknown, and the callers look before repeating a create;
- 429 (and 503) with `Retry-After` -> `RetryLater` (the job is due again no earlier than that);
- 401/403 -> `MirrorRejected` (permanent: the token is wrong, expired or lacks the right; an admin fixes it and
  retries);
- any other answer is returned, and the caller decides (404 = gone, 422 duplicate = look it up, else rejected).

Error messages carry the service's own words and the status, never a header (the token is a header).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..jobs import PermanentJobError, RetryLater, now_utc
from .mapping import LABELS, error_message, retry_after

MAX_BODY_BYTES = 2_000_000


class MirrorUnavailable(Exception):
    """The service did not answer usefully this time (network, timeout, 5xx, 429 without a date): try again."""


class MirrorRejected(PermanentJobError):
    """The service refused the request and repeating it cannot help (4xx): the message is for the admin."""


class Duplicate(Exception):
    """The service already holds this award for this recipient (its duplicate check refused a second one)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    label: str

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise MirrorUnavailable(f"{self.label} answered {self.status} with a body that is not JSON") from None

    @property
    def message(self) -> str:
        return error_message(self.body)

    def rejected(self, what: str) -> MirrorRejected:
        return MirrorRejected(f"{self.label} refused to {what} (HTTP {self.status}): {self.message}")


class Transport:
    """Sends requests to one service's API root (`…/v1`) with its authorization header."""

    def __init__(
        self,
        service: str,
        base_url: str,
        authorization: str,
        *,
        timeout: float,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.label = LABELS[service]
        self.base_url = base_url.rstrip("/")
        self.origin = _origin(self.base_url)
        self.clock = clock
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"Authorization": authorization, "Accept": "application/json", "User-Agent": "ob3-issuer"},
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """`path` under the API root; an absolute URL (a `next_page_url`) only on the same origin."""
        if path.startswith(("http://", "https://")):
            if _origin(path) != self.origin:
                raise MirrorRejected(f"{self.label} pointed to another host ({urlsplit(path).hostname}); not followed")
            return path
        return self.base_url + path

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict[str, Any] | None = None) -> Reply:
        url = self.url(path)
        try:
            with self.client.stream(method, url, json=json_body, params=params) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise MirrorUnavailable(f"{self.label}'s answer was larger than {MAX_BODY_BYTES} bytes")
                status, headers = response.status_code, response.headers
        except httpx.TimeoutException as error:
            raise MirrorUnavailable(f"{self.label} did not answer in time ({type(error).__name__})") from None
        except httpx.HTTPError as error:
            raise MirrorUnavailable(f"{self.label} could not be reached ({type(error).__name__})") from None
        reply = Reply(status, bytes(body), self.label)
        if status in (429, 503):
            wait = retry_after(headers.get("retry-after"), self.clock())
            if wait is not None:
                raise RetryLater(wait, f"{self.label} asked us to wait {wait:.0f} s (HTTP {status})")
        if status == 408 or status == 429 or status >= 500:
            raise MirrorUnavailable(f"{self.label} answered HTTP {status}: {reply.message}")
        if status in (401, 403):
            raise MirrorRejected(
                f"{self.label} refused our credentials (HTTP {status}): {reply.message}; check the token, "
                "then retry the mirror"
            )
        return reply


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port
