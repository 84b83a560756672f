"""Baked badges through the service (SQLite and PostgreSQL): `/c/{id}/badge.png` and `/c/{id}/badge.svg` carry the
stored credential, verify, and fall back to the generated default image whenever the achievement's own image is
missing or cannot be used."""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from PIL import Image

from issuer.app import create_app
from issuer.delivery import artifacts
from issuer.delivery.artifacts import ArtifactsController
from issuer.delivery.baking import (
    BadgeImage,
    achievement_image,
    badge_colours,
    default_badge_png,
    default_badge_svg,
    png_as_svg,
)
from issuer.services import Services
from issuer.settings import Settings
from tests.http_server import LocalServer
from verifier import VerifyOptions, verify_credential
from verifier.baking import extract_from_png, extract_from_svg
from verifier.errors import FetchError

from .conftest import BASE, ClientFetcher


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Achievement images may come from the loopback test server."""
    return settings.model_copy(update={"verify_allow_private": True})


@pytest.fixture
def client(settings: Settings, services: Services) -> Iterator[TestClient[Any]]:
    app = create_app(settings, services)
    if not any(route.path == "/c/{credential_id:str}/badge.png" for route in app.routes):
        app.register(ArtifactsController)
    with TestClient(app, base_url=BASE) as client:
        yield client


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as server:
        yield server


def issue(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> dict[str, Any]:
    body = {"achievement_id": achievement_id, "recipient": {"email": "ada@example.org", "name": "Ada Lovelace"}}
    response = client.post("/api/v1/credentials", headers=admin, json=body)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def achievement_with_image(client: TestClient[Any], admin: dict[str, str], image: str) -> str:
    body = {"name": "Welding", "description": "Welds safely.", "criteria": {"narrative": "Pass."}, "image": image}
    response = client.post("/api/v1/achievements", headers=admin, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def download(client: TestClient[Any], credential_id: str, kind: str) -> bytes:
    response = client.get(f"/c/{credential_id}/badge.{kind}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith({"png": "image/png", "svg": "image/svg+xml"}[kind])
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert response.headers["content-disposition"].endswith(f'-{credential_id}.{kind}"')
    if kind == "svg":
        assert "sandbox" in response.headers["content-security-policy"]
    return response.content


def without_credential_chunk(png: bytes) -> bytes:
    """The PNG with its `openbadgecredential` iTXt chunk removed: the image that was baked into."""
    out, pos = [png[:8]], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        end = pos + 12 + length
        if not (png[pos + 4 : pos + 8] == b"iTXt" and png[pos + 8 :].startswith(b"openbadgecredential\0")):
            out.append(png[pos:end])
        pos = end
    return b"".join(out)


def verifies(client: TestClient[Any], data: bytes) -> None:
    options = VerifyOptions(fetcher=ClientFetcher(client), allow_http_loopback=True, strict_keys=True)
    report = verify_credential(data, options)
    assert report.verdict.value == "valid", report.to_dict()["checks"]


def test_badges_carry_the_stored_credential_and_verify(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    issued = issue(client, admin, achievement_id)
    stored = client.get(f"/credentials/{issued['id']}", headers={"Accept": "application/ld+json"}).json()
    png = download(client, issued["id"], "png")
    svg = download(client, issued["id"], "svg")
    assert json.loads(extract_from_png(png)) == stored == issued["credential"]
    assert json.loads(extract_from_svg(svg)) == stored
    verifies(client, png)
    verifies(client, svg)
    # no image on the achievement: the generated default, the same for every credential of the achievement
    assert without_credential_chunk(png) == default_badge_png("Data Analysis")
    assert svg.startswith(default_badge_svg("Data Analysis")[:40]) and b"<title>Data Analysis</title>" in svg
    assert client.get(f"/c/{issued['id']}/badge.png").content == png  # cached


def test_the_achievements_own_png_is_baked(client: TestClient[Any], admin: dict[str, str], server: LocalServer) -> None:
    image = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image, format="PNG")
    server.json("/welding.png", image.getvalue(), content_type="image/png")
    issued = issue(client, admin, achievement_with_image(client, admin, f"{server.base}/welding.png"))
    png = download(client, issued["id"], "png")
    assert without_credential_chunk(png) == image.getvalue()
    svg = download(client, issued["id"], "svg")  # a PNG-only achievement: its PNG inside an SVG
    assert b'width="64" height="48"' in svg
    assert base64.b64encode(image.getvalue()) in svg
    verifies(client, png)
    verifies(client, svg)


def test_the_achievements_own_svg_is_baked(client: TestClient[Any], admin: dict[str, str], server: LocalServer) -> None:
    art = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4"/></svg>'
    server.json("/welding.svg", art, content_type="image/svg+xml")
    issued = issue(client, admin, achievement_with_image(client, admin, f"{server.base}/welding.svg"))
    svg = download(client, issued["id"], "svg")
    assert b'<circle cx="5" cy="5" r="4"/>' in svg
    verifies(client, svg)
    png = download(client, issued["id"], "png")  # no rasteriser for SVG: the default image, still verifiable
    assert without_credential_chunk(png) == default_badge_png("Welding")
    verifies(client, png)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/missing.png", None),  # 404
        ("/not-an-image.png", b"<html>hello</html>"),
        ("/jpeg.png", b"\xff\xd8\xff\xe0" + b"\0" * 100),
        ("/big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 2_100_000),
        ("/corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),  # a PNG signature, then no valid chunks
    ],
)
def test_an_unusable_image_falls_back_to_the_default(
    client: TestClient[Any],
    admin: dict[str, str],
    server: LocalServer,
    path: str,
    body: bytes | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if body is not None:
        server.json(path, body, content_type="image/png")
    issued = issue(client, admin, achievement_with_image(client, admin, f"{server.base}{path}"))
    with caplog.at_level(logging.WARNING, logger="issuer.delivery"):
        png = download(client, issued["id"], "png")
    assert without_credential_chunk(png) == default_badge_png("Welding")
    assert json.loads(extract_from_png(png))["id"] == issued["credential"]["id"]
    assert any("default image" in record.getMessage() for record in caplog.records)


def test_a_badge_made_while_the_image_server_was_down_is_not_kept(
    client: TestClient[Any], admin: dict[str, str], server: LocalServer
) -> None:
    issued = issue(client, admin, achievement_with_image(client, admin, f"{server.base}/later.png"))
    assert without_credential_chunk(download(client, issued["id"], "png")) == default_badge_png("Welding")
    image = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(image, format="PNG")
    server.json("/later.png", image.getvalue(), content_type="image/png")
    artifacts._FAILED.clear()  # the minute during which a failed URL is not asked again
    assert without_credential_chunk(download(client, issued["id"], "png")) == image.getvalue()


# ---------------------------------------------------------------------------------------------------- units


def test_default_badges_are_clean_images() -> None:
    png = default_badge_png("数据分析")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (512, 512) and image.mode == "RGBA"
        corner, star = image.getpixel((2, 2)), image.getpixel((256, 214))
        assert isinstance(corner, tuple) and corner[3] == 0  # transparent corners
        assert isinstance(star, tuple) and star[:3] == (255, 255, 255)  # the star's centre
    svg = default_badge_svg("<Data & Analysis>\x01")
    assert b"<title>&lt;Data &amp; Analysis&gt;</title>" in svg and b"\x01" not in svg
    assert default_badge_svg("x", "#123456") != default_badge_svg("x")
    assert badge_colours("x", "#123456")[0] == "#123456"
    assert badge_colours("x", "red") == badge_colours("x")  # not #rrggbb: the palette decides


def test_png_as_svg_refuses_what_is_not_a_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        png_as_svg(b"GIF89a")


def test_achievement_image_sources(tmp_path: Path) -> None:
    png = default_badge_png("x")
    asked: list[str] = []

    def fetcher(url: str, *, accept: str = "") -> bytes:
        asked.append(url)
        if "fail" in url:
            raise FetchError("refused")
        return png

    assert achievement_image(None, fetcher) is None
    assert achievement_image({"type": "Image"}, fetcher) is None
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert achievement_image({"id": data_uri}, fetcher) == BadgeImage("png", png)
    assert asked == []  # data: URIs are decoded, never fetched
    assert achievement_image("https://images.example/a.png", fetcher) == BadgeImage("png", png)
    assert achievement_image("https://images.example/fail.png", fetcher) is None
    assert achievement_image("data:image/png;base64,not base64!", fetcher) is None
    assert achievement_image("data:text/plain," + "x" * 10, fetcher) is None
    assert zlib.crc32(png) == zlib.crc32(default_badge_png("x"))  # cached and deterministic
