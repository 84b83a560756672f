"""The service under test: a real app on a fresh database (SQLite and PostgreSQL), driven over HTTP."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar.testing import TestClient
from sqlmodel import Session

from issuer.app import build_services, create_app
from issuer.auth import create_api_key
from issuer.db.engine import session_scope
from issuer.keyring import ensure_keys
from issuer.profiles import ensure_default_issuer
from issuer.services import Services
from issuer.settings import Settings
from verifier.errors import FetchError

from .smtp_sink import Sink, serve

BASE = "http://issuer.test"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        base_url=BASE,
        name="Example Institute",
        database_url=database_url,
        keys_dir=tmp_path / "keys",
        master_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        jobs_embedded=False,  # tests run jobs explicitly
        _env_file=None,
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    services = build_services(settings)
    with session_scope(services.engine) as session:
        issuer = ensure_default_issuer(session, settings)
        ensure_keys(session, issuer, services.master_key)
    yield services
    services.engine.dispose()


@pytest.fixture
def client(settings: Settings, services: Services) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(settings, services), base_url=BASE) as client:
        yield client


def token_with(services: Services, *scopes: str) -> str:
    with session_scope(services.engine) as session:
        _, token = create_api_key(session, name="test", scopes=list(scopes))
    return token


@pytest.fixture
def admin(services: Services) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_with(services, 'admin')}"}


@pytest.fixture
def achievement_id(client: TestClient[Any], admin: dict[str, str]) -> str:
    response = client.post(
        "/api/v1/achievements",
        headers=admin,
        json={
            "name": "Data Analysis",
            "description": "Analysed real data with care.",
            "criteria": {"narrative": "Pass the final project."},
            "achievementType": "Certificate",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


class ClientFetcher:
    """A verifier Fetcher that fetches through the running app (our public endpoints), as a verifier would."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client

    def __call__(self, url: str, *, accept: str = "application/json") -> bytes:
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}".replace("https://", "http://") != BASE:
            raise FetchError(f"not ours: {url}")
        response = self.client.get(parts.path, headers={"Accept": accept})
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code} for {url}")
        return response.content


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem response and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = json.loads(response.text)
    assert body["type"] == f"urn:ob3-issuer:problem:{slug}", body
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def count(services: Services, table: Any) -> int:
    from sqlmodel import func, select

    with Session(services.engine) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it is sent; modules that send email point their
    `settings` at it with `smtp_settings`."""
    sink = Sink()
    controller = serve(sink)
    yield sink
    controller.stop()
