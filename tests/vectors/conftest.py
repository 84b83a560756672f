from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from verifier.loader import DocumentLoader

DATA = Path(__file__).parent / "data"


def load(relative: str) -> Any:
    return json.loads((DATA / relative).read_text("utf-8"))


def text(relative: str) -> str:
    return (DATA / relative).read_text("utf-8")


@pytest.fixture(scope="session")
def test_loader() -> DocumentLoader:
    """Pinned contexts plus the two test-only ones the W3C vectors need."""
    return DocumentLoader(include_test_contexts=True)
