"""Settings refuse unsafe production values at start-up, and derive the did:web authority correctly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from issuer.settings import Settings


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(keys_dir=tmp_path / "keys", _env_file=None, **values)  # type: ignore[arg-type]


def test_production_needs_a_master_key_and_https(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="MASTER_KEY"):
        _settings(tmp_path, env="production", base_url="https://badges.example.edu")
    with pytest.raises(ValidationError, match="https"):
        _settings(tmp_path, env="production", base_url="http://badges.example.edu", master_key="x" * 43)
    ok = _settings(tmp_path, env="production", base_url="https://badges.example.edu", master_key="x" * 43)
    assert ok.master_key is not None and "x" * 43 not in repr(ok)  # the secret never shows in a repr


def test_did_web_authority(tmp_path: Path) -> None:
    assert _settings(tmp_path, base_url="http://localhost:8000").host == "localhost%3A8000"
    prefixed = _settings(tmp_path, base_url="https://example.edu/badges/")
    assert (prefixed.host, prefixed.base_path, prefixed.base_url) == (
        "example.edu",
        "/badges",
        "https://example.edu/badges",
    )
    with pytest.raises(ValidationError):
        _settings(tmp_path, base_url="ftp://example.edu")


def test_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISSUER_NAME", "From The Environment")
    monkeypatch.setenv("ISSUER_MAX_BATCH_ROWS", "12")
    settings = Settings(_env_file=None)
    assert (settings.name, settings.max_batch_rows) == ("From The Environment", 12)
