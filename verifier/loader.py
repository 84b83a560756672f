"""JSON-LD document loading from the pinned contexts only.

A credential may name a context only if `contexts/manifest.json` maps its URL to a file whose sha256 matches;
anything else is refused (never fetched), so a verifier's result cannot change because a server changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from .errors import CannotCheck


class UnknownContext(CannotCheck):
    """A context URL that is not pinned: processing refuses it rather than fetching it."""


def contexts_dir() -> Path:
    """The pinned contexts: inside the installed package (wheel), or at the repository root (checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "contexts", here.parent / "contexts"):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise RuntimeError("pinned JSON-LD contexts not found (expected contexts/manifest.json)")


@cache
def _pinned() -> tuple[Mapping[str, dict[str, Any]], Mapping[str, dict[str, Any]]]:
    """(production contexts, test-only contexts), each URL -> parsed JSON, digests checked once."""
    folder = contexts_dir()
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))["contexts"]
    normal: dict[str, dict[str, Any]] = {}
    test_only: dict[str, dict[str, Any]] = {}
    for url, entry in manifest.items():
        raw = (folder / entry["file"]).read_bytes()
        if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise RuntimeError(f"pinned context {entry['file']} does not match its sha256 in manifest.json")
        (test_only if entry.get("test_only") else normal)[url] = json.loads(raw)
    return normal, test_only


class DocumentLoader:
    """A pyld-compatible document loader over the pinned contexts (plus `extra` ones a caller adds)."""

    def __init__(
        self, *, include_test_contexts: bool = False, extra: Mapping[str, dict[str, Any]] | None = None
    ) -> None:
        normal, test_only = _pinned()
        self.documents: dict[str, dict[str, Any]] = dict(normal)
        if include_test_contexts:
            self.documents.update(test_only)
        if extra:
            self.documents.update(extra)

    def __contains__(self, url: object) -> bool:
        return url in self.documents

    def __iter__(self) -> Iterator[str]:
        return iter(self.documents)

    def __call__(self, url: str, options: object = None) -> dict[str, Any]:
        try:
            document = self.documents[url]
        except KeyError:
            raise UnknownContext(
                f"context {url} is not one of the pinned contexts; it is not fetched", code="unknown_context"
            ) from None
        return {"contextUrl": None, "documentUrl": url, "document": document}


def default_loader() -> DocumentLoader:
    return _default()


@cache
def _default() -> DocumentLoader:
    return DocumentLoader()
