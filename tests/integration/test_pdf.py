"""PDF certificates through the service (SQLite and PostgreSQL): opened, read, scanned and verified as a person
or a verifier would; and the certificate template sandbox, which refuses files, the network and runaway work."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from litestar.testing import TestClient
from PIL import Image
from pypdf import PdfReader, PdfWriter

from issuer.app import create_app
from issuer.delivery.artifacts import ArtifactsController
from issuer.delivery.pdf import CertificateError, check_template, render_certificate
from issuer.services import Services
from issuer.settings import Settings
from verifier import VerifyOptions, verify_credential
from verifier.__main__ import main as ob3_verify
from verifier.errors import InvalidCredential
from verifier.pdf import extract_from_pdf

from .conftest import BASE, ClientFetcher, problem

ARABIC, CHINESE, ACCENTS = "فاطمة الزهراء", "王小明", "Zoë Ångström-Núñez Ţîrcă"
A4_LANDSCAPE, LETTER_LANDSCAPE = (841.89, 595.28), (792.0, 612.0)


@pytest.fixture
def client(settings: Settings, services: Services) -> Iterator[TestClient[Any]]:
    """The app, with the artefact routes registered if `create_app` does not register them yet."""
    app = create_app(settings, services)
    if not any(route.path == "/c/{credential_id:str}/certificate.pdf" for route in app.routes):
        app.register(ArtifactsController)
    with TestClient(app, base_url=BASE) as client:
        yield client


def issue(client: TestClient[Any], admin: dict[str, str], achievement_id: str, name: str) -> dict[str, Any]:
    body = {"achievement_id": achievement_id, "recipient": {"email": "learner@example.org", "name": name}}
    response = client.post("/api/v1/credentials", headers=admin, json=body)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def certificate(client: TestClient[Any], credential_id: str, **params: str) -> bytes:
    response = client.get(f"/c/{credential_id}/certificate.pdf", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith('attachment; filename="data-analysis-')
    assert response.content.startswith(b"%PDF-1.7")
    return response.content


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    return " ".join(reader.pages[0].extract_text().split())


def test_names_in_any_script_are_printed(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    for name in ("Ada Lovelace", ACCENTS, ARABIC, CHINESE):
        issued = issue(client, admin, achievement_id, name)
        text = text_of(certificate(client, issued["id"]))
        assert name in text, text
        assert "Data Analysis" in text and "Analysed real data with care." in text
        assert "Example Institute" in text and f"issuer.test/c/{issued['id']}" in text


def test_a_recipient_known_only_by_did(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    body = {"achievement_id": achievement_id, "recipient": {"did": "did:example:learner-7"}}
    issued = client.post("/api/v1/credentials", headers=admin, json=body).json()
    assert "This certifies that the holder of this credential has been awarded" in text_of(
        certificate(client, issued["id"])
    )


def test_a_120_character_name_stays_on_the_page(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    name = (
        "Maximiliana Anastasia Wilhelmina Josefina Carolina Benedikta von Hohenzollern Sigmaringen und Habsburg "
        "Lothringen y Cruz"
    )
    assert len(name) == 120
    pdf = certificate(client, issue(client, admin, achievement_id, name)["id"])
    assert name in text_of(pdf)
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    width, height = float(page.mediabox.width), float(page.mediabox.height)
    placed: list[tuple[float, float]] = []

    def where(text: str, _cm: Any, tm: Any, _font: Any, _size: Any) -> None:
        if text.strip() and any(part in text for part in ("Maximiliana", "Lothringen")):
            placed.append((tm[4], tm[5]))

    page.extract_text(visitor_text=where)
    assert placed and all(0 < x < width and 0 < y < height for x, y in placed), placed


def test_scripts_and_template_syntax_in_names_are_text(
    client: TestClient[Any], admin: dict[str, str], services: Services
) -> None:
    hostile = "<script>alert(1)</script> {{ 7*7 }} {% for x in range(3) %}x{% endfor %}"
    achievement = client.post(
        "/api/v1/achievements",
        headers=admin,
        json={
            "name": "Safety {{ 7*7 }}",
            "description": "<img src=x onerror=alert(1)> {{ ''.__class__ }} {% include '/etc/passwd' %}",
            "criteria": {"narrative": "Pass."},
        },
    )
    assert achievement.status_code == 201, achievement.text
    text = text_of(certificate_any(client, issue(client, admin, achievement.json()["id"], hostile)["id"]))
    assert hostile in text
    assert "Safety {{ 7*7 }}" in text
    assert "<img src=x onerror=alert(1)> {{ ''.__class__ }} {% include '/etc/passwd' %}" in text


def certificate_any(client: TestClient[Any], credential_id: str) -> bytes:
    response = client.get(f"/c/{credential_id}/certificate.pdf")
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.skipif(
    shutil.which("pdftoppm") is None and os.environ.get("CI") != "true",
    reason="pdftoppm (Debian poppler-utils) is not installed; under CI=true this fails instead",
)
def test_the_printed_qr_code_opens_the_verification_page(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, tmp_path: Path
) -> None:
    credential_id = issue(client, admin, achievement_id, "Ada Lovelace")["id"]
    (tmp_path / "c.pdf").write_bytes(certificate(client, credential_id))
    subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile", "c.pdf", "page"], cwd=tmp_path, check=True)
    with Image.open(tmp_path / "page.png") as page:
        codes = zxingcpp.read_barcodes(page)
    assert [code.text for code in codes] == [f"{BASE}/c/{credential_id}"]


def test_the_embedded_credential_is_the_stored_one_and_verifies(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    issued = issue(client, admin, achievement_id, "Ada Lovelace")
    pdf = certificate(client, issued["id"])
    embedded = json.loads(extract_from_pdf(pdf))
    stored = client.get(f"/credentials/{issued['id']}", headers={"Accept": "application/ld+json"}).json()
    assert embedded == stored == issued["credential"]
    options = VerifyOptions(fetcher=ClientFetcher(client), allow_http_loopback=True, strict_keys=True)
    assert verify_credential(embedded, options).verdict.value == "valid"
    report = verify_credential(pdf, options)  # the PDF itself, as `ob3-verify certificate.pdf` reads it
    assert report.verdict.value == "valid", report.to_dict()["checks"]
    parse = report.check("parse")
    assert parse is not None and "PDF" in parse.detail


def test_ob3_verify_reads_a_certificate(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str, tmp_path: Path, capsys: Any
) -> None:
    """Offline, our did:web cannot be resolved, so the verdict is "could not check"; what matters here is that
    the CLI takes a PDF and finds the credential in it."""
    path = tmp_path / "certificate.pdf"
    path.write_bytes(certificate(client, issue(client, admin, achievement_id, "Ada Lovelace")["id"]))
    assert ob3_verify([str(path), "--offline", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    parse = next(check for check in report["checks"] if check["id"] == "parse")
    assert parse["status"] == "passed" and "PDF" in parse["detail"], parse
    assert report["credential"]["credentialSubject"]["achievement"]["name"] == "Data Analysis"


def test_pdf_a_3b_with_the_credential_as_associated_file(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    pdf = certificate(client, issue(client, admin, achievement_id, "Ada Lovelace")["id"])
    reader = PdfReader(io.BytesIO(pdf))
    root: Any = reader.trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    assert 'pdfaid:part="3"' in xmp and 'pdfaid:conformance="B"' in xmp
    intent = root["/OutputIntents"][0].get_object()
    assert intent["/S"] == "/GTS_PDFA1" and "sRGB" in intent["/OutputConditionIdentifier"]
    associated = [ref.get_object() for ref in root["/AF"]]
    assert len(associated) == 1
    spec = associated[0]
    assert spec["/UF"] == spec["/F"] == "credential.json" and spec["/AFRelationship"] == "/Source"
    assert spec["/EF"]["/F"].get_object()["/Subtype"] == "/application/json"
    assert set(reader.attachments) == {"credential.json"}
    assert reader.metadata is not None and reader.metadata.title == "Data Analysis — Ada Lovelace"


def test_paper_sizes(client: TestClient[Any], admin: dict[str, str], achievement_id: str) -> None:
    credential_id = issue(client, admin, achievement_id, "Ada Lovelace")["id"]
    for params, size in (({}, A4_LANDSCAPE), ({"paper": "Letter"}, LETTER_LANDSCAPE)):
        box = PdfReader(io.BytesIO(certificate(client, credential_id, **params))).pages[0].mediabox
        assert (float(box.width), float(box.height)) == pytest.approx(size, abs=0.1)
    problem(client.get(f"/c/{credential_id}/certificate.pdf?paper=A3"), 422, "validation")


def test_rendered_once_and_again_after_a_reissue(
    client: TestClient[Any], admin: dict[str, str], achievement_id: str
) -> None:
    credential_id = issue(client, admin, achievement_id, "Ada Lovelace")["id"]
    first = client.get(f"/c/{credential_id}/certificate.pdf")
    assert client.get(f"/c/{credential_id}/certificate.pdf").content == first.content
    etag = first.headers["etag"]
    unchanged = client.get(f"/c/{credential_id}/certificate.pdf", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    client.patch(f"/api/v1/achievements/{achievement_id}", headers=admin, json={"name": "Data Analysis II"})
    assert client.post(f"/api/v1/credentials/{credential_id}/reissue", headers=admin).status_code == 200
    again = client.get(f"/c/{credential_id}/certificate.pdf", headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    assert "Data Analysis II" in text_of(again.content)
    assert json.loads(extract_from_pdf(again.content))["credentialSubject"]["achievement"]["name"] == "Data Analysis II"


def test_unknown_credential(client: TestClient[Any]) -> None:
    for path in ("certificate.pdf", "badge.png", "badge.svg"):
        problem(client.get(f"/c/nope/{path}"), 404, "not-found")


# ---------------------------------------------------------------------------------- uploaded templates (sandbox)

CREDENTIAL: dict[str, Any] = {
    "id": "http://issuer.test/credentials/c1",
    "type": ["VerifiableCredential", "OpenBadgeCredential"],
    "issuer": {"id": "did:web:issuer.test", "type": ["Profile"], "name": "Example Institute"},
    "validFrom": "2026-11-27T10:00:00Z",
    "name": "Data Analysis",
    "credentialSubject": {
        "type": ["AchievementSubject"],
        "identifier": [
            {"type": "IdentityObject", "identityType": "name", "hashed": False, "identityHash": "{{ 7*7 }} <b>Ada</b>"}
        ],
        "achievement": {"id": "http://issuer.test/achievements/a", "type": ["Achievement"], "name": "Data Analysis"},
    },
}


def render(template: str) -> str:
    pdf = render_certificate(CREDENTIAL, verify_url="http://issuer.test/c/c1", template=template)
    assert json.loads(extract_from_pdf(pdf)) == CREDENTIAL
    return text_of(pdf)


def test_an_uploaded_template_renders_values_as_text() -> None:
    template = """<html><head><style>@page { size: A5 } h1 { color: #123; font-family: "EB Garamond 12" }</style>
    </head><body><h1>{{ recipient_name }}</h1><p>{{ achievement_name|upper }} · {{ issued_on }}</p>
    {% for part in ["a", "b"] %}<i>{{ part }}</i>{% endfor %}<img src="{{ qr_src }}" style="width: 30mm">
    <img src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/%3E"></body></html>"""
    text = render(template)
    assert "{{ 7*7 }} <b>Ada</b>" in text and "DATA ANALYSIS · 27 November 2026" in text and "ab" in text


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{{ cycler.__init__.__globals__.os }}", "unsafe"),
        ("{{ recipient_name.__class__ }}", "unsafe"),
        ("{% include '/etc/passwd' %}", "/etc/passwd"),
        ("{% extends 'file:///etc/passwd' %}", "etc/passwd"),
        ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "steps"),
        ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}", "steps"),
        ("{{ 'x' * 10000000 }}", "longer"),
        ("{{ '%099999999d' % 1 }}", "format"),
        ("{{ 'x'|center(100000000) }}", "limited"),
        ("{% if %}", "compile"),
        ('<img src="file:///etc/passwd">', "refused"),
        ('<img src="https://images.example.com/logo.png">', "refused"),
        ('<link rel="stylesheet" href="file:///etc/passwd">', "refused"),
        ("<style>@import url(http://127.0.0.1:9/x.css);</style>", "refused"),
        ('<style>@font-face { font-family: x; src: url("file:///etc/passwd") }</style>', "refused"),
        ('<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/hostname"/></svg>', "refused"),
        ('<base href="file:///etc/"><img src="passwd">', "refused"),
        ("<p>page</p>" * 5 + '<p style="page-break-before: always">two</p>', "pages"),
    ],
)
def test_an_uploaded_template_cannot_escape_the_sandbox(template: str, why: str) -> None:
    with pytest.raises(CertificateError, match=why):
        render(template)


def test_templates_are_checked_before_they_are_stored() -> None:
    check_template("<h1>{{ recipient_name }}</h1><p>{{ achievement_name }}</p><img src='{{ qr_src }}' width=90>")
    with pytest.raises(CertificateError, match="unsafe"):
        check_template("{{ achievement_name.__class__.__base__ }}")
    with pytest.raises(CertificateError, match="refused"):
        check_template('<img src="https://tracker.example/pixel.gif">')


def test_an_oversized_template_is_refused() -> None:
    with pytest.raises(CertificateError, match="larger than"):
        render("x" * 200_001)


# ---------------------------------------------------------------------------------- reading PDFs (verifier/pdf.py)


def pdf_with(*files: tuple[str, bytes], encrypt: bool = False) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(100, 100)
    for name, data in files:
        writer.add_attachment(name, data)
    if encrypt:
        writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_extracting_from_other_pdfs() -> None:
    assert extract_from_pdf(pdf_with(("credential.json", b'{"id": "x"}'))) == '{"id": "x"}'
    cases: list[tuple[bytes, str, str]] = [
        (pdf_with(), "not_baked", "no embedded credential.json"),
        (pdf_with(("invoice.xml", b"<x/>")), "not_baked", "no embedded credential.json"),
        (pdf_with(("credential.json", b"{}"), ("credential.json", b"{}")), "pdf_corrupt", "2 times"),
        (pdf_with(("credential.json", b"{}"), encrypt=True), "pdf_encrypted", "encrypted"),
        (pdf_with(("credential.json", b"\xff\xfe{")), "pdf_corrupt", "not UTF-8"),
        (b"%PDF-1.7\n%%EOF", "pdf_corrupt", "could not be read"),
        (b"GIF89a", "pdf_corrupt", "not a PDF"),
    ]
    for data, code, detail in cases:
        with pytest.raises(InvalidCredential, match=detail) as caught:
            extract_from_pdf(data)
        assert caught.value.code == code
    parse = verify_credential(pdf_with()).check("parse")
    assert parse is not None and parse.status.value == "failed"
