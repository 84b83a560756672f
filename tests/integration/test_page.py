"""The verification page, its QR codes and downloads, and the "verify another credential" form, on both databases.

QR codes are decoded back to the URL with zxing-cpp; SVGs are rasterised with resvg (a self-contained wheel).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import resvg_py
import zxingcpp
from litestar.testing import TestClient
from PIL import Image

from issuer.app import create_app
from issuer.delivery.linkedin import add_to_profile_url
from issuer.delivery.qr import qr_png, qr_svg
from issuer.public.page import credential_facts, human_date
from issuer.services import Services
from tests.http_server import LocalServer
from tests.issuer_kit import TestIssuer

from .conftest import BASE, problem

FIXTURES = Path(__file__).resolve().parents[1] / "vectors" / "data" / "ob3-validator-fixtures"
XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"
ALL_CHECKS = ["parse", "context", "type", "schema", "issuer_key", "signature", "issuance", "expiration", "status"]


class Page(HTMLParser):
    """What the tests read from a page: meta tags, links, the verdict, each check's status, form controls."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.links: dict[str, str] = {}  # link text -> href
        self.checks: dict[str, str] = {}  # check id -> status
        self.labels: dict[str, str] = {}  # for -> label text
        self.controls: dict[str, dict[str, str]] = {}  # id -> attributes
        self.verdict = ""
        self.h1: list[str] = []
        self._text: list[str] | None = None
        self._capture = ""
        self._href = ""
        self._label_for = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "meta" and ("property" in a or "name" in a):
            self.meta[a.get("property") or a["name"]] = a.get("content", "")
        elif tag == "li" and "data-check" in a:
            self.checks[a["data-check"]] = a["class"].split("check--")[1]
        elif tag in ("input", "textarea", "button", "select") and "id" in a:
            self.controls[a["id"]] = a | {"tag": tag}
        if tag == "a":
            self._start("a", a.get("href", ""))
        elif tag == "h1" or (tag == "p" and a.get("id") == "verdict-title"):
            self._start(tag)
        elif tag == "label":
            self._start("label")
            self._label_for = a.get("for", "")

    def _start(self, what: str, href: str = "") -> None:
        self._text, self._capture, self._href = [], what, href

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._text is None or tag != self._capture:
            return
        text = " ".join("".join(self._text).split())
        if tag == "a":
            self.links[text] = self._href
        elif tag == "h1":
            self.h1.append(text)
        elif tag == "p":
            self.verdict = text
        elif tag == "label":
            self.labels[self._label_for] = text
        self._text = None


def _issue(client: TestClient[Any], admin: dict[str, str], achievement_id: str, **extra: Any) -> dict[str, Any]:
    body = {"achievement_id": achievement_id, "recipient": {"email": "ada@example.org", "name": "Ada Lovelace"}}
    response = client.post("/api/v1/credentials", headers=admin, json=body | extra)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def _page(client: TestClient[Any], path: str, status: int = 200) -> tuple[Any, Page]:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return response, Page(response.text)


def _decode(png: bytes) -> str:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(results) == 1 and results[0].format == zxingcpp.BarcodeFormat.QRCode
    assert results[0].ec_level in ("M", "Q", "H"), results[0].ec_level
    return str(results[0].text)


# ------------------------------------------------------------------------------------------ the stored page


def test_the_page_of_a_valid_credential(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    issued = _issue(client, admin, achievement_id, format="both", valid_until="2099-06-30T00:00:00Z")
    response, page = _page(client, f"/c/{issued['id']}")
    assert page.verdict == "Valid" and 'class="verdict verdict--valid"' in response.text
    assert page.h1 == ["Data Analysis"]
    assert page.checks == dict.fromkeys(ALL_CHECKS, "passed")
    text = response.text
    for expected in ("Awarded to <strong>Ada Lovelace</strong>", "Analysed real data with care.",
                     "Pass the final project.", "Example Institute", "issuer.test", "30 June 2099", "Certificate",
                     datetime.now(UTC).strftime(" %Y")):  # fmt: skip
        assert expected in text, expected
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-robots-tag"] == "noindex" and page.meta["robots"] == "noindex"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "<script" not in text.lower()
    for label, href in {
        "Credential JSON-LD": f"{BASE}/c/{issued['id']}/credential.json",
        "Credential JWT": f"{BASE}/c/{issued['id']}/credential.jwt",
        "QR code PNG": f"{BASE}/c/{issued['id']}/qr.png",
    }.items():
        assert page.links[label] == href
    for control in ("credential-text", "credential-file", "credential-url"):
        assert page.labels[control] and page.controls[control]


def test_the_same_page_for_credentials_url_with_accept_html(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    issued = _issue(client, admin, achievement_id)
    response = client.get(f"/credentials/{issued['id']}", headers={"Accept": "text/html"})
    assert response.status_code == 200 and "Vary" in response.headers
    page = Page(response.text)
    assert page.verdict == "Valid" and page.meta["og:url"] == f"{BASE}/c/{issued['id']}"


def test_a_revoked_credential_says_revoked(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    issued = _issue(client, admin, achievement_id)
    assert _page(client, f"/c/{issued['id']}")[1].verdict == "Valid"  # and the report is cached now
    revoked = client.post(f"/api/v1/credentials/{issued['id']}/revoke", headers=admin, json={"reason": "in error"})
    assert revoked.status_code == 200, revoked.text
    response, page = _page(client, f"/c/{issued['id']}")
    assert page.verdict == "Revoked" and "verdict--revoked" in response.text
    assert page.checks["status"] == "failed" and page.checks["signature"] == "passed"
    assert "Add to LinkedIn profile" not in page.links
    assert "in error" not in response.text  # the reason is for the audit log, not the public page


def test_a_credential_expires_on_time_despite_the_cache(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    issued = _issue(client, admin, achievement_id, valid_until=until.isoformat())
    _, page = _page(client, f"/c/{issued['id']}")
    assert page.verdict == "Valid" and page.checks["expiration"] == "passed"
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.2)
    response, page = _page(client, f"/c/{issued['id']}")
    assert page.verdict == "Expired" and page.checks["expiration"] == "failed"
    assert "its validity ended on" in response.text


def test_every_value_from_the_credential_is_escaped(
    client: TestClient[Any], admin: dict[str, str], services: Services
) -> None:
    hostile = '"><img src=x onerror=alert(2)>'
    achievement = client.post(
        "/api/v1/achievements",
        headers=admin,
        json={
            "name": f"Safety {hostile}",
            "description": f"Described with {XSS}",
            "criteria": {"narrative": XSS, "id": "https://example.org/criteria"},
            "image": {"id": "https://example.org/badge.png", "caption": hostile},
        },
    ).json()
    issued = client.post(
        "/api/v1/credentials",
        headers=admin,
        json={"achievement_id": achievement["id"], "recipient": {"email": "x@example.org", "name": XSS}},
    ).json()
    response, page = _page(client, f"/c/{issued['id']}")
    assert XSS not in response.text and "<img src=x" not in response.text and "onerror=alert(2)>" not in response.text
    assert f"Awarded to <strong>{ESCAPED_XSS}</strong>" in response.text
    assert f"Described with {ESCAPED_XSS}" in response.text
    assert page.h1 == [f"Safety {hostile}"]  # the parser unescapes: the text is exactly what was given
    assert page.meta["og:title"] == f"Safety {hostile} · {XSS}"
    assert page.meta["og:image"] == "https://example.org/badge.png"


def test_open_graph_and_twitter_tags(client: TestClient[Any], admin: dict[str, str]) -> None:
    achievement = client.post(
        "/api/v1/achievements",
        headers=admin,
        json={
            "name": "First Aid",
            "description": "Basic life support.",
            "criteria": {"narrative": "Pass."},
            "image": "https://example.org/first-aid.png",
        },
    ).json()
    issued = _issue(client, admin, achievement["id"])
    _, page = _page(client, f"/c/{issued['id']}")
    assert page.meta["og:title"] == "First Aid · Ada Lovelace"
    assert page.meta["og:description"].startswith("First Aid awarded to Ada Lovelace by Example Institute on ")
    assert "valid" not in page.meta["og:description"].lower()  # previews are cached: they must not vouch
    assert page.meta["og:url"] == f"{BASE}/c/{issued['id']}"
    assert page.meta["og:image"] == page.meta["twitter:image"] == "https://example.org/first-aid.png"
    assert page.meta["og:type"] == "website" and page.meta["twitter:card"] == "summary"
    assert page.meta["og:site_name"] == "Example Institute"


def test_no_og_image_without_an_achievement_image(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    _, page = _page(client, f"/c/{_issue(client, admin, achievement_id)['id']}")
    assert "og:image" not in page.meta and "og:title" in page.meta


def test_the_linkedin_link(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    issued = _issue(client, admin, achievement_id, valid_until="2031-02-01T00:00:00Z")
    _, page = _page(client, f"/c/{issued['id']}")
    parts = urlsplit(page.links["Add to LinkedIn profile"])
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "www.linkedin.com", "/profile/add")
    query = {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    issued_at = datetime.fromisoformat(issued["valid_from"])
    assert query == {
        "startTask": "CERTIFICATION_NAME",
        "name": "Data Analysis",
        "organizationName": "Example Institute",
        "issueYear": str(issued_at.year),
        "issueMonth": str(issued_at.month),
        "expirationYear": "2031",
        "expirationMonth": "2",
        "certUrl": f"{BASE}/c/{issued['id']}",
        "certId": issued["id"],
    }


def test_add_to_profile_url_encodes_every_value() -> None:
    url = add_to_profile_url(
        name="Data & Analysis / Niveau 2 — ü?",
        organization="Ecole #1 + Co",
        issued=datetime(2026, 3, 1, 23, 30, tzinfo=UTC),
        cert_url="https://issuer.example/c/1?x=1&y=2",
        cert_id="1",
    )
    assert " " not in url and url.count("?") == 1 and "&y=" not in url
    query = parse_qs(urlsplit(url).query, strict_parsing=True)
    assert query["name"] == ["Data & Analysis / Niveau 2 — ü?"] and query["organizationName"] == ["Ecole #1 + Co"]
    assert query["certUrl"] == ["https://issuer.example/c/1?x=1&y=2"] and "expirationYear" not in query
    with_org = add_to_profile_url(name="X", organization="Y", issued=datetime(2026, 1, 1, tzinfo=UTC), cert_url="u",
                                  cert_id="1", organization_id=1337)  # fmt: skip
    assert "organizationId=1337" in with_org and "organizationName" not in with_org
    with pytest.raises(ValueError, match="timezone-aware"):
        add_to_profile_url(name="X", organization="Y", issued=datetime(2026, 1, 1), cert_url="u", cert_id="1")


def test_downloads(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    both = _issue(client, admin, achievement_id, format="both")
    json_download = client.get(f"/c/{both['id']}/credential.json")
    assert json_download.status_code == 200
    assert json_download.headers["content-type"].startswith("application/ld+json")
    assert json_download.headers["content-disposition"] == f'attachment; filename="data-analysis-{both["id"]}.json"'
    assert json_download.json() == both["credential"]
    jwt_download = client.get(f"/c/{both['id']}/credential.jwt")
    assert jwt_download.status_code == 200 and jwt_download.text == both["jwt"]
    assert jwt_download.headers["content-type"].startswith("application/jwt")
    assert jwt_download.headers["content-disposition"].endswith(f'-{both["id"]}.jwt"')
    ldp_only = _issue(client, admin, achievement_id, format="ldp")
    problem(client.get(f"/c/{ldp_only['id']}/credential.jwt"), 404, "not-found")
    _, page = _page(client, f"/c/{ldp_only['id']}")
    assert "Credential JWT" not in page.links
    problem(client.get("/c/missing/credential.json"), 404, "not-found")


def test_an_unknown_credential_gets_a_page_that_says_so(client: TestClient[Any]) -> None:
    _, page = _page(client, "/c/no-such-credential", status=404)
    assert page.h1 == ["Credential not found"] and page.meta["robots"] == "noindex"


def test_qr_codes_decode_to_the_page_url(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    issued = _issue(client, admin, achievement_id)
    url = f"{BASE}/c/{issued['id']}"
    png = client.get(f"/c/{issued['id']}/qr.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert "max-age" in png.headers["cache-control"]
    assert _decode(png.content) == url
    svg = client.get(f"/c/{issued['id']}/qr.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert _decode(resvg_py.svg_to_bytes(svg_string=svg.text, width=360, background="#ffffff")) == url
    small = client.get(f"/c/{issued['id']}/qr.png?scale=2")
    assert _decode(small.content) == url and len(small.content) < len(png.content)
    problem(client.get(f"/c/{issued['id']}/qr.png?scale=500"), 422, "validation")
    problem(client.get("/c/no-such-credential/qr.svg"), 404, "not-found")


def test_qr_functions_are_pure_and_cached() -> None:
    url = "https://badges.example.edu/c/0b8f3c4e-9d1a-4e57-8a38-3f1f6d2a9b7c"
    assert qr_svg(url) is qr_svg(url) and qr_png(url, 4) is qr_png(url, 4)
    assert _decode(qr_png(url, 4)) == url
    assert _decode(resvg_py.svg_to_bytes(svg_string=qr_svg(url).decode(), width=300, background="#ffffff")) == url
    with pytest.raises(ValueError, match="scale"):
        qr_png(url, 0)


# ------------------------------------------------------------------------------------- verify another one


@pytest.fixture
def private_client(services: Services) -> Iterator[TestClient[Any]]:
    """The app with `verify_allow_private`, so that the form may fetch from servers on 127.0.0.1."""
    settings = services.settings.model_copy(update={"verify_allow_private": True})
    relaxed = dataclasses.replace(services, settings=settings)
    with TestClient(create_app(settings, relaxed), base_url=BASE) as client:
        yield client


def _submit(client: TestClient[Any], status: int = 200, **fields: Any) -> tuple[Any, Page]:
    files = {k: v if isinstance(v, tuple) else (None, v) for k, v in fields.items()}
    response = client.post("/verify", files=files)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return response, Page(response.text)


def test_the_form_page(client: TestClient[Any]) -> None:
    response, page = _page(client, "/verify")
    assert page.h1 == ["Verify an Open Badge"]
    assert 'enctype="multipart/form-data"' in response.text and f'action="{BASE}/verify"' in response.text
    assert page.labels == {
        "credential-text": "Paste a credential",
        "credential-file": "Upload a file",
        "credential-url": "Enter its web address",
    }
    assert page.controls["credential-file"]["type"] == "file" and page.controls["credential-url"]["type"] == "url"


@pytest.mark.parametrize("name", ["simple-json.png", "simple-json.svg", "simple-jwt.png", "simple-jwt.svg"])
def test_uploaded_baked_badges(client: TestClient[Any], name: str) -> None:
    content_type = "image/png" if name.endswith(".png") else "image/svg+xml"
    response, page = _submit(client, file=(name, (FIXTURES / name).read_bytes(), content_type))
    assert page.verdict == "Valid", page.checks
    assert page.h1 == ["Teamwork"] and "Example Corp" in response.text
    assert "submitted for checking and is not stored here" in response.text
    assert "Share and download" not in response.text and "og:url" not in page.meta


def test_pasted_json_and_jwt(client: TestClient[Any]) -> None:
    _, page = _submit(client, credential=(FIXTURES / "simple.json").read_text())
    assert page.verdict == "Valid" and page.h1 == ["Teamwork"]
    token = (FIXTURES / "expected-extractions" / "simple-jwt.svg.verify-attr").read_text().strip()
    assert token.count(".") == 2
    _, page = _submit(client, credential=f"\n  {token}\n")
    assert page.verdict == "Valid" and page.checks["jwt_claims"] == "passed"


def test_a_tampered_credential_is_not_valid_and_still_escaped(client: TestClient[Any]) -> None:
    credential = json.loads((FIXTURES / "simple.json").read_text())
    credential["credentialSubject"]["achievement"]["name"] = XSS
    response, page = _submit(client, credential=json.dumps(credential))
    assert page.verdict == "Not valid" and page.checks["signature"] == "failed"
    assert XSS not in response.text and ESCAPED_XSS in response.text
    assert "none of it can be trusted" in response.text
    _, page = _submit(client, credential=(FIXTURES / "simple-err-proof-value.json").read_text())
    assert page.verdict == "Not valid" and page.checks["signature"] == "failed"


def test_a_url_from_another_issuer(private_client: TestClient[Any]) -> None:
    """The same report for anyone's credentials: valid, revoked and not-yet-valid from a foreign did:web issuer."""
    with LocalServer() as site:
        foreign = TestIssuer(site)
        site.json("/simple.json", (FIXTURES / "simple.json").read_bytes())
        site.json("/good.json", json.dumps(foreign.sign(foreign.credential(1, index=3))).encode())
        site.json("/revoked.json", json.dumps(foreign.sign(foreign.credential(2, index=9))).encode())
        future = foreign.sign(foreign.credential(4, index=5, validFrom="2999-01-01T00:00:00Z"))
        site.json("/future.json", json.dumps(future).encode())
        foreign.revoke(9)
        for path, verdict in [("/simple.json", "Valid"), ("/good.json", "Valid"), ("/revoked.json", "Revoked"),
                              ("/future.json", "Not yet valid")]:  # fmt: skip
            response, page = _submit(private_client, url=f"{site.base}{path}")
            assert page.verdict == verdict, (path, page.checks)
        assert "1 January 2999" in response.text


def test_bad_submissions_re_render_the_form_with_an_error(client: TestClient[Any]) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "Paste a credential, choose a file, or enter a web address.", "credential-text"),
        ({"credential": "   "}, "Paste a credential, choose a file, or enter a web address.", "credential-text"),
        ({"credential": "{}", "url": "https://example.org/x"}, "Give the credential one way only", "credential-text"),
        ({"credential": "not a credential"}, "The input is not a credential", "credential-text"),
        ({"credential": '{"a": '}, "The credential is not valid JSON", "credential-text"),
        ({"file": ("x.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")}, "PNG chunk", "credential-file"),
        ({"url": "ftp://example.org/badge.json"}, "starts with https://", "credential-url"),
        ({"url": "http://127.0.0.1:9/badge.json"}, "Could not fetch http://127.0.0.1:9/badge.json", "credential-url"),
    ]
    for fields, message, field in cases:
        response, page = _submit(client, status=400, **fields)
        assert page.h1 == ["Verify an Open Badge"]
        assert 'role="alert"' in response.text and message in response.text, (fields, response.text)
        assert page.controls[field].get("aria-invalid") == "true", fields
        assert f"{field}-error" in page.controls[field]["aria-describedby"]
        assert Page(response.text).meta["robots"] == "noindex"
    response, page = _submit(client, status=400, credential=XSS)
    assert XSS not in response.text and f">{ESCAPED_XSS}</textarea>" in response.text


def test_the_form_accepts_url_encoded_bodies_and_caps_uploads(client: TestClient[Any]) -> None:
    body = {"credential": (FIXTURES / "simple.json").read_text()}
    response = client.post("/verify", data=body)
    assert response.status_code == 200 and Page(response.text).verdict == "Valid"
    huge = b"\x89PNG\r\n\x1a\n" + bytes(2_200_000)
    response, page = _submit(client, status=413, file=("huge.png", huge, "image/png"))
    assert "larger than 2 MB" in response.text and page.controls["credential-file"]["aria-invalid"] == "true"


# ----------------------------------------------------------------------------------------------- the facts


def test_credential_facts_survive_malformed_credentials() -> None:
    facts = credential_facts({"issuer": "did:web:badges.example.edu:issuers:a", "credentialSubject": [7],
                              "validFrom": "not a date", "name": 5})  # fmt: skip
    assert facts["title"] == "Unnamed achievement" and facts["issued"] is None and facts["recipient"] is None
    assert facts["issuer_domain"] == "badges.example.edu" and facts["issuer_name"] == "an unnamed issuer"
    unsafe = credential_facts(
        {
            "issuer": {"id": "https://x.example", "url": "javascript:alert(1)", "image": "javascript:alert(1)"},
            "credentialSubject": {"achievement": {"name": "A", "image": {"id": "data:text/html,<b>x</b>"},
                                                  "criteria": {"id": "javascript:alert(1)"}}},
        }
    )  # fmt: skip
    assert unsafe["issuer_url"] is None and unsafe["issuer_logo"] is None and unsafe["image"] is None
    assert unsafe["criteria_url"] is None and unsafe["issuer_domain"] is None
    named = credential_facts({"credentialSubject": {"name": "Legacy Name", "achievement": {"achievementType":
                              "ext:LicensedProfession", "image": "data:image/png;base64,AAAA"}}})  # fmt: skip
    assert named["recipient"] == "Legacy Name" and named["achievement_type"] == "Licensed profession"
    assert named["image"] == "data:image/png;base64,AAAA"
    assert human_date(datetime(2026, 3, 5, 14, 3, tzinfo=UTC), "auto") == "5 March 2026, 14:03 UTC"
    assert human_date(datetime(2026, 3, 5, tzinfo=UTC), "auto") == "5 March 2026"
