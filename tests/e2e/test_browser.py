"""The verification page in a real browser (Debian's chromium driven by Playwright) against `issuer serve`.

Each verdict state is shown by a real credential: valid, revoked (through the API), expired (issued with a
validUntil seconds ahead), tampered (our credential with the learner's name changed, pasted into the form) and
could-not-check (a foreign issuer whose status list is gone). Screenshots of every state, desktop and phone, go
to test-artifacts/.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.served import BIN, running_issuer
from tests.http_server import LocalServer
from tests.issuer_kit import TestIssuer

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
XSS_NAME = "<script>alert(1)</script>"
XSS_DESCRIPTION = 'Escaped <img src=x onerror="alert(2)"> & shown as text.'
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}}

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


class Installation:
    """A running `issuer serve` with an admin key, plus the credentials the tests look at."""

    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base = base
        token = subprocess.run(
            [str(BIN / "issuer"), "api-keys", "create", "--scopes", "admin"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        self.headers = {"Authorization": f"Bearer {token}"}
        achievement = self.post(
            "/api/v1/achievements",
            {
                "name": "Data Analysis with Python",
                "description": "Cleaned, analysed and visualised a real public data set, and explained the findings "
                "to a non-specialist audience.",
                "criteria": {"narrative": "Complete all eight modules and pass the capstone project review."},
                "achievementType": "Certificate",
            },
        )
        self.achievement_id = str(achievement["id"])

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.base}{path}", headers=self.headers, json=body, timeout=30)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    def issue(self, name: str, **extra: Any) -> dict[str, Any]:
        body = {"achievement_id": self.achievement_id, "format": "both"} | extra
        return self.post("/api/v1/credentials", body | {"recipient": {"email": "learner@example.org", "name": name}})


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    # the form verifies our own and a local foreign issuer's credentials: private addresses allowed
    home = tmp_path_factory.mktemp("installation")
    with running_issuer(home, "Northwind Institute", verify_allow_private="true", verify_fetch_timeout="3") as (
        base,
        env,
    ):
        yield Installation(base, env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of every alert/confirm/prompt the page opened: there must be none."""
    return []


@pytest.fixture
def page(browser: Any, dialogs: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()

    def record(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    yield page
    context.close()
    assert not dialogs, f"a dialog fired: {dialogs}"


def _axe_script() -> str:
    """axe-core, as the axe-playwright-python package ships it (no network)."""
    spec = importlib.util.find_spec("axe_playwright_python")
    assert spec is not None and spec.origin is not None, "pip install axe-playwright-python"
    return (Path(spec.origin).parent / "axe.min.js").read_text(encoding="utf-8")


def _screenshots(page: Any, state: str) -> None:
    """Save the page as it is now on desktop and on a phone, and audit both with axe-core (WCAG 2.1 AA)."""
    ARTIFACTS.mkdir(exist_ok=True)
    for label, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=str(ARTIFACTS / f"page-{state}-{label}.png"), full_page=True)
        page.evaluate(_axe_script())
        violations = page.evaluate("options => axe.run(document, options).then(r => r.violations)", WCAG_AA)
        found = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in violations]
        assert not found, f"{state} on {label}: {found}"
    page.set_viewport_size(VIEWPORTS["desktop"])


def _verdict(page: Any) -> str:
    return str(page.locator("#verdict-title").inner_text()).strip()


def _statuses(page: Any) -> dict[str, str]:
    """Check id -> its status, read from the list's classes (check--passed, check--failed, ...)."""
    items = page.locator(".checks > li")
    return {
        str(items.nth(i).get_attribute("data-check")): str(items.nth(i).get_attribute("class")).split("check--")[1]
        for i in range(items.count())
    }


def test_valid_credential(installation: Installation, page: Any) -> None:
    issued = installation.issue("Ada Lovelace")
    page.goto(f"{installation.base}/c/{issued['id']}")
    assert _verdict(page) == "Valid"
    assert page.locator("h1").inner_text() == "Data Analysis with Python"
    assert "Awarded to Ada Lovelace" in page.locator(".awarded").inner_text()
    assert page.locator(".verdict--valid").count() == 1
    assert page.locator(".checks > li.check--passed").count() == page.locator(".checks > li").count() >= 9
    assert page.locator("img[alt='QR code linking to this page']").evaluate("img => img.naturalWidth") > 0
    assert page.get_by_role("link", name="Add to LinkedIn profile").count() == 1
    _screenshots(page, "valid")


def test_revoked_credential(installation: Installation, page: Any) -> None:
    issued = installation.issue("Grace Hopper")
    installation.post(f"/api/v1/credentials/{issued['id']}/revoke", {"reason": "issued in error"})
    page.goto(f"{installation.base}/c/{issued['id']}")
    assert _verdict(page) == "Revoked"
    assert page.locator(".verdict--revoked").count() == 1
    assert _statuses(page)["status"] == "failed"
    assert page.get_by_role("link", name="Add to LinkedIn profile").count() == 0
    _screenshots(page, "revoked")


def test_expired_credential(installation: Installation, page: Any) -> None:
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    issued = installation.issue("Alan Turing", valid_until=until.isoformat().replace("+00:00", "Z"))
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.1)
    page.goto(f"{installation.base}/c/{issued['id']}")
    assert _verdict(page) == "Expired"
    assert page.locator(".verdict--expired").count() == 1
    assert _statuses(page)["expiration"] == "failed"
    _screenshots(page, "expired")


def test_tampered_credential_pasted_into_the_form(installation: Installation, page: Any) -> None:
    issued = installation.issue("Katherine Johnson")
    tampered = copy.deepcopy(issued["credential"])
    for identifier in tampered["credentialSubject"]["identifier"]:
        if identifier["identityType"] == "name":
            identifier["identityHash"] = "Mallory Impostor"
    page.goto(f"{installation.base}/verify")
    page.get_by_label("Paste a credential").fill(json.dumps(tampered, indent=2))
    page.get_by_role("button", name="Verify credential").click()
    assert _verdict(page) == "Not valid"
    assert page.locator(".verdict--invalid").count() == 1
    assert _statuses(page)["signature"] == "failed"
    assert "Mallory Impostor" in page.locator(".awarded").inner_text()
    _screenshots(page, "tampered")


def test_could_not_check_when_the_status_list_is_gone(installation: Installation, page: Any, tmp_path: Path) -> None:
    with LocalServer() as site:
        foreign = TestIssuer(site)
        credential = foreign.sign(foreign.credential(3))
        del site.routes["/status/1"]
        upload = tmp_path / "foreign-badge.json"
        upload.write_text(json.dumps(credential))
        page.goto(f"{installation.base}/verify")
        page.get_by_label("Upload a file").set_input_files(str(upload))
        page.get_by_role("button", name="Verify credential").click()
        assert _verdict(page) == "Could not be checked"
    assert page.locator(".verdict--could_not_check").count() == 1
    assert _statuses(page)["status"] == "error"
    _screenshots(page, "could-not-check")


def test_xss_in_names_is_shown_as_text(installation: Installation, page: Any, dialogs: list[str]) -> None:
    achievement = installation.post(
        "/api/v1/achievements",
        {"name": "<b>Bold</b> claims", "description": XSS_DESCRIPTION, "criteria": {"narrative": XSS_NAME}},
    )
    issued = installation.post(
        "/api/v1/credentials",
        {"achievement_id": achievement["id"], "recipient": {"email": "x@example.org", "name": XSS_NAME}},
    )
    page.goto(f"{installation.base}/c/{issued['id']}")
    assert page.locator(".awarded strong").inner_text() == XSS_NAME
    assert page.locator("h1").inner_text() == "<b>Bold</b> claims"
    assert page.locator(".description").inner_text() == XSS_DESCRIPTION
    assert page.locator("main script, main b, main img[src='x']").count() == 0
    assert page.evaluate("document.scripts.length") == 0
    page.wait_for_timeout(300)  # a dialog, if any script ran, would have opened by now
    assert not dialogs
    _screenshots(page, "xss")


def test_keyboard_navigation(installation: Installation, page: Any) -> None:
    issued = installation.issue("Mary Jackson")
    page.goto(f"{installation.base}/c/{issued['id']}")
    describe = """() => { const e = document.activeElement; const s = getComputedStyle(e);
        return {tag: e.tagName, id: e.id, cls: e.className, href: e.getAttribute('href') || '',
                text: (e.innerText || '').trim().split('\\n')[0], outline: s.outlineStyle, width: s.outlineWidth}; }"""
    order: list[dict[str, str]] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate(describe)
        assert focused["outline"] != "none" and float(focused["width"].removesuffix("px")) >= 2, focused
        order.append(focused)
        if focused["tag"] == "BUTTON":
            break
    assert order[0]["cls"] == "skip" and order[0]["text"] == "Skip to main content"
    hrefs = [f["href"] for f in order]
    downloads = [
        next(i for i, h in enumerate(hrefs) if h.startswith("https://www.linkedin.com/profile/add")),
        hrefs.index(f"{installation.base}/c/{issued['id']}/credential.json"),
        hrefs.index(f"{installation.base}/c/{issued['id']}/credential.jwt"),
        hrefs.index(f"{installation.base}/c/{issued['id']}/qr.png"),
    ]
    ids = [f["id"] for f in order]
    controls = [ids.index("credential-text"), ids.index("credential-file"), ids.index("credential-url")]
    assert downloads == sorted(downloads) and controls == sorted(controls)
    assert downloads[-1] < controls[0] < controls[-1] < len(order) - 1 and order[-1]["text"] == "Verify credential"
    # the skip link moves focus to the main content
    page.goto(f"{installation.base}/c/{issued['id']}")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_form_errors_are_announced(installation: Installation, page: Any) -> None:
    page.goto(f"{installation.base}/verify")
    page.get_by_label("Paste a credential").fill("this is not a credential")
    page.get_by_role("button", name="Verify credential").click()
    assert page.title().startswith("Error: ")
    alert = page.get_by_role("alert")
    assert "not a credential" in alert.inner_text()
    field = page.get_by_label("Paste a credential")
    assert field.get_attribute("aria-invalid") == "true"
    assert "credential-text-error" in str(field.get_attribute("aria-describedby"))
    assert field.input_value() == "this is not a credential"
    _screenshots(page, "form-error")
