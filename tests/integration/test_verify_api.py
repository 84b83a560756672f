"""POST /api/v1/verify for each input form, and bad input as problem+json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from issuer.app import create_app
from issuer.services import Services
from issuer.settings import Settings
from tests.http_server import LocalServer

from .conftest import BASE, problem

FIXTURES = Path(__file__).parent.parent / "vectors" / "data" / "ob3-validator-fixtures"


def _verified(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["checks"][0]["id"] == "parse"
    return body


def test_each_input_form(client: TestClient[Any]) -> None:
    simple = (FIXTURES / "simple.json").read_bytes()
    as_json = _verified(client.post("/api/v1/verify", content=simple, headers={"Content-Type": "application/json"}))
    assert as_json["verified"] and as_json["format"] == "json"
    jwt = (FIXTURES / "expected-extractions" / "simple-jwt.png.itxt-text").read_text()
    as_text = _verified(client.post("/api/v1/verify", content=jwt, headers={"Content-Type": "text/plain"}))
    assert as_text["verified"] and as_text["format"] == "jwt"
    upload = client.post(
        "/api/v1/verify", files={"file": ("badge.png", (FIXTURES / "simple-json.png").read_bytes(), "image/png")}
    )
    assert _verified(upload)["format"] == "png"
    raw_svg = client.post(
        "/api/v1/verify", content=(FIXTURES / "simple-jwt.svg").read_bytes(), headers={"Content-Type": "image/svg+xml"}
    )
    assert _verified(raw_svg)["verified"]
    expired = _verified(
        client.post(
            "/api/v1/verify",
            content=(FIXTURES / "simple-err-expired.json").read_bytes(),
            headers={"Content-Type": "application/json"},
        )
    )
    assert (expired["verified"], expired["verdict"]) == (False, "expired")


def test_our_own_credentials_verify_against_what_we_publish(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    issued = client.post(
        "/api/v1/credentials",
        headers=admin,
        json={"achievement_id": achievement_id, "format": "both", "recipient": {"did": "did:example:ada"}},
    ).json()
    report = _verified(client.post("/api/v1/verify", json=issued["credential"]))
    assert report["verdict"] == "valid", report["checks"]
    assert _verified(client.post("/api/v1/verify", content=issued["jwt"], headers={"Content-Type": "text/plain"}))[
        "verified"
    ]
    tampered = issued["credential"] | {"name": "Something else"}
    assert _verified(client.post("/api/v1/verify", json=tampered))["verdict"] == "invalid"
    by_url = _verified(client.post("/api/v1/verify", json={"url": issued["url"]}))
    assert by_url["verified"]


def test_url_fetching_is_bounded_and_refuses_private_addresses(
    settings: Settings, services: Services, client: TestClient[Any]
) -> None:
    with LocalServer() as site:
        site.json("/badge.json", (FIXTURES / "simple.json").read_bytes())
        url = f"{site.base}/badge.json"
        refused = problem(client.post("/api/v1/verify", json={"url": url}), 400, "bad-request")
        assert "could not fetch" in refused["detail"]
        assert site.requests == []  # refused before any connection
        permissive = settings.model_copy(update={"verify_allow_private": True})
        site.json("/big.json", b" " * 3_000_000)
        with TestClient(create_app(permissive, replace(services, settings=permissive)), base_url=BASE) as local:
            assert _verified(local.post("/api/v1/verify", json={"url": url}))["verified"]
            too_big = problem(local.post("/api/v1/verify", json={"url": f"{site.base}/big.json"}), 400, "bad-request")
            assert "too large" in too_big["detail"] or "bytes" in too_big["detail"]


def test_bad_input(client: TestClient[Any]) -> None:
    problem(
        client.post("/api/v1/verify", content=b"", headers={"Content-Type": "application/json"}), 400, "bad-request"
    )
    problem(
        client.post("/api/v1/verify", content=b"{oops", headers={"Content-Type": "application/json"}),
        400,
        "bad-request",
    )
    problem(client.post("/api/v1/verify", json=[1, 2]), 400, "bad-request")
    problem(client.post("/api/v1/verify", json={"url": "file:///etc/passwd"}), 400, "bad-request")
    garbage = _verified(
        client.post("/api/v1/verify", content=b"\x00\x01garbage", headers={"Content-Type": "application/octet-stream"})
    )
    assert garbage["verified"] is False and garbage["checks"][0]["status"] == "failed"
    body = json.dumps({"@context": ["https://www.w3.org/ns/credentials/v2"], "evil": "<script>"})
    report = _verified(client.post("/api/v1/verify", content=body, headers={"Content-Type": "application/json"}))
    assert report["verified"] is False
