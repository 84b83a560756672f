"""Settings: one value, built from ISSUER_* environment variables (and `.env`) or directly in tests.

Nothing reads the environment at import time; `Settings()` does, when the CLI or a server process asks for it.
"""

from __future__ import annotations

from email.utils import parseaddr
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

    # Email (issuer/delivery/mailer.py). Without smtp_host no email is sent and no email job is enqueued.
    smtp_host: str | None = Field(None, description="SMTP relay host; unset disables email")
    smtp_port: int = Field(587, ge=1, le=65535, description="587 for starttls, 465 for tls")
    smtp_security: Literal["starttls", "tls", "none"] = Field("starttls", description="how the connection is secured")
    smtp_username: str | None = Field(None, description="SMTP AUTH user (with smtp_password)")
    smtp_password: SecretStr | None = None
    smtp_from: str | None = Field(None, description='From header, e.g. "Example Academy <badges@example.edu>"')
    smtp_timeout: float = Field(30.0, gt=0, description="seconds per SMTP connect/command")
    email_templates_dir: Path | None = Field(
        None, description="searched before the built-in email templates; an <issuer_id>/ folder overrides per issuer"
    )

    # Background jobs (issuer/delivery/jobs.py).
    jobs_embedded: bool = Field(True, description="run a job worker thread in each server process")
    jobs_poll_interval: float = Field(1.0, gt=0, description="seconds an idle worker waits before looking again")
    jobs_lease_seconds: int = Field(
        300, ge=1, description="a running job is taken over when its worker is silent this long"
    )
    jobs_batch_size: int = Field(10, ge=1, le=1000, description="jobs claimed per round trip")

    # Mirrors on Credly and Accredible (issuer/mirrors/). Without a token that service is not mirrored to.
    credly_token: SecretStr | None = Field(None, description="the Credly organization's authorization token")
    credly_base_url: str = Field("https://sandbox-api.credly.com/v1", description="production: api.credly.com/v1")
    accredible_api_key: SecretStr | None = Field(None, description="the Accredible API key")
    accredible_base_url: str = Field(
        "https://sandbox.api.accredible.com/v1", description="production: https://api.accredible.com/v1 (EU: eu.api…)"
    )
    accredible_revoke: Literal["expire", "delete"] = Field(
        "expire", description="what a revocation does to the Accredible credential (Accredible has no revoke)"
    )
    mirror_timeout: float = Field(15.0, gt=0, description="seconds per request to Credly or Accredible")

    @field_validator("credly_base_url", "accredible_base_url")
    @classmethod
    def _api_root(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("a mirror base URL must be an http(s) URL without query or fragment")
        if not parts.path.rstrip("/").endswith("/v1"):
            raise ValueError("a mirror base URL is the API root, ending in /v1")
        return value.rstrip("/")

    @field_validator("base_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("base_url must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _smtp_is_complete(self) -> Settings:
        if not self.smtp_host:
            return self
        if not self.smtp_from or "@" not in parseaddr(self.smtp_from)[1]:
            raise ValueError('smtp_from must be an address such as "Example Academy <badges@example.edu>"')
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password go together")
        return self

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        """Refuse unsafe production values at start-up rather than at the first request."""
        if self.env == "production":
            if not self.base_url.startswith("https://"):
                raise ValueError("in production base_url must be https (did:web requires it)")
            if self.master_key is None and not (self.keys_dir / "master.key").is_file():
                raise ValueError("in production ISSUER_MASTER_KEY (or keys/master.key) must be given")
            if any(u.startswith("http://") for u in (self.credly_base_url, self.accredible_base_url)):
                raise ValueError("in production the Credly and Accredible base URLs must be https (tokens travel)")
            if self.smtp_host and self.smtp_username and self.smtp_security == "none":
                raise ValueError("in production SMTP credentials must not travel unencrypted: use starttls or tls")
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
