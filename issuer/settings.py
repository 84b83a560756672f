"""Settings: one value, built from ISSUER_* environment variables (and `.env`) or directly in tests.

Nothing reads the environment at import time; `Settings()` does, when the CLI or a server process asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISSUER_", env_file=".env", extra="ignore", frozen=True)

    base_url: str = Field("http://localhost:8000", description="public origin the credentials and DIDs live under")
    name: str = Field("Demo Issuer", description="the default issuer's name")
    database_url: str = Field("sqlite:///./data/issuer.db", description="SQLAlchemy URL: sqlite:/// or postgresql://")
    keys_dir: Path = Field(Path("./keys"), description="holds master.key in development")
    master_key: SecretStr | None = Field(None, description="base64url of 32 bytes; encrypts private keys at rest")
    env: Literal["development", "production"] = "development"
    max_body_bytes: int = Field(1_000_000, description="largest accepted request body")
    max_batch_rows: int = Field(5_000, description="largest accepted batch (JSON array items or CSV rows)")
    jwt_by_default: bool = Field(False, description="sign VC-JWT as well when a request does not say")
    verify_allow_private: bool = Field(
        False, description="let the verify API and page fetch from private/loopback addresses (testing only)"
    )
    verify_fetch_timeout: float = Field(5.0, description="seconds per outbound fetch when verifying submissions")

    @field_validator("base_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("base_url must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        """Refuse unsafe production values at start-up rather than at the first request."""
        if self.env == "production":
            if not self.base_url.startswith("https://"):
                raise ValueError("in production base_url must be https (did:web requires it)")
            if self.master_key is None and not (self.keys_dir / "master.key").is_file():
                raise ValueError("in production ISSUER_MASTER_KEY (or keys/master.key) must be given")
        return self

    @property
    def host(self) -> str:
        """The did:web authority: host, with the port percent-encoded when there is one."""
        parts = urlsplit(self.base_url)
        assert parts.hostname is not None
        return parts.hostname + (f"%3A{parts.port}" if parts.port else "")

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")
