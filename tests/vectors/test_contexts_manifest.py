"""The pinned contexts are exactly the bytes the manifest promises, and nothing else is loadable."""

from __future__ import annotations

import hashlib
import json

import pytest

from verifier.errors import CannotCheck
from verifier.loader import DocumentLoader, contexts_dir


def test_every_manifest_entry_matches_its_file() -> None:
    folder = contexts_dir()
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))["contexts"]
    assert "https://www.w3.org/ns/credentials/v2" in manifest
    assert "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json" in manifest
    for url, entry in manifest.items():
        digest = hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
        assert digest == entry["sha256"], url


def test_credentials_v2_digest_is_the_one_printed_in_the_rec() -> None:
    raw = (contexts_dir() / "credentials-v2.jsonld").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == "59955ced6697d61e03f2b2556febe5308ab16842846f5b586d7f1f7adec92734"


def test_unknown_and_test_only_contexts_are_refused_by_default() -> None:
    loader = DocumentLoader()
    with pytest.raises(CannotCheck, match="not one of the pinned contexts"):
        loader("https://example.com/my-context.jsonld")
    with pytest.raises(CannotCheck):
        loader("https://www.w3.org/ns/credentials/examples/v2")
    assert DocumentLoader(include_test_contexts=True)("https://www.w3.org/ns/credentials/examples/v2")["document"]
