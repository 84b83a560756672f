"""Outbound fetching for the verifier: the `Fetcher` protocol and the one bounded HTTP implementation.

Every network read the verifier makes (did:web documents, JWKS, status lists, credentials by URL) goes through
a `Fetcher`, injected by the caller; the default refuses the network entirely (offline by default).
"""

from __future__ import annotations

from typing import Protocol

from .errors import FetchError


class Fetcher(Protocol):
    def __call__(self, url: str, *, accept: str = "application/json") -> bytes:
        """Return the body of a successful GET of `url`, or raise `FetchError`."""
        ...


def offline_fetcher(url: str, *, accept: str = "application/json") -> bytes:
    """The default: no network at all."""
    raise FetchError(f"network access is disabled; cannot fetch {url}", code="offline")
