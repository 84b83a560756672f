"""PDF certificates: a signed credential rendered as a PDF/A-3b page that carries the credential itself.

The HTML comes from a Jinja2 template run in `sandbox.CertificateSandbox` (values are variables, never template
source, and autoescaped); WeasyPrint lays it out with a URL fetcher that serves `data:` URIs and refuses
everything else, so no template can read a file or reach the network. One `FontConfiguration` and the parsed
stylesheets are shared by every render (research/perf.md §5: a fresh pair per PDF costs ~30 ms and leaks about
0.26 MiB each), and renders are serialised by a lock because Pango's font map is not thread-safe.

Fonts come from Debian packages through fontconfig, by family name: EB Garamond (Latin, Greek, Cyrillic),
Amiri (Arabic), Droid Sans Fallback (Chinese, Japanese, Korean), DejaVu for anything else. Pango falls back along
the `font-family` list per character and applies the bidirectional algorithm, so a name in any of those scripts
is shaped and ordered correctly.

The signed credential JSON is embedded as `credential.json` (AFRelationship /Source: the data the page shows),
which makes the PDF itself verifiable (`ob3-verify certificate.pdf`, see `verifier/pdf.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import threading
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes, urlsplit

from jinja2 import Template, TemplateError

from .qr import qr_svg
from .sandbox import CertificateSandbox, render_sandboxed

Paper = Literal["A4", "Letter"]
PAPERS: tuple[Paper, ...] = ("A4", "Letter")
TEMPLATES = Path(__file__).parent / "templates" / "certificate"
MAX_TEMPLATE_BYTES = 200_000
MAX_PAGES = 1  # a certificate is one page; anything longer is a layout fault worth reporting
MAX_DATA_URI_BYTES = 2_000_000
ATTACHMENT_NAME = "credential.json"
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
_DATA_URI = re.compile(r"data:(?P<type>[^,;]*)(?P<params>(?:;[^,;]*)*),(?P<data>.*)", re.DOTALL | re.IGNORECASE)
_IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


class CertificateError(ValueError):
    """A certificate template cannot be rendered: a syntax or sandbox error, a refused resource, too many pages."""


# ------------------------------------------------------------------------------------------------ the engine


class _Engine:
    """WeasyPrint and what every render shares: imported on first use (the import alone takes ~0.4 s)."""

    def __init__(self) -> None:
        import weasyprint  # type: ignore[import-untyped]
        from weasyprint.css import ColorProfile  # type: ignore[import-untyped]
        from weasyprint.text.fonts import FontConfiguration  # type: ignore[import-untyped]
        from weasyprint.urls import URLFetcher, URLFetcherResponse  # type: ignore[import-untyped]

        class DataOnlyFetcher(URLFetcher):  # type: ignore[misc]
            """Serves `data:` URIs and refuses every other URL, failing the render (not just the image).

            Refusals are also written down, because WeasyPrint swallows every error while it draws an SVG.
            """

            def __init__(self) -> None:
                super().__init__(fail_on_errors=True, allowed_protocols=("data",))
                self.refused: list[str] = []

            def fetch(self, url: str, headers: Any = None) -> Any:
                try:
                    media_type, body = parse_data_uri(url)
                except ValueError as error:
                    self.refused.append(str(error))
                    raise
                return URLFetcherResponse(url, body, {"Content-Type": media_type})

        self.weasyprint = weasyprint
        self.fetcher = DataOnlyFetcher()
        self.fonts = FontConfiguration()
        self.lock = threading.Lock()
        css = (TEMPLATES / "default.css").read_text("utf-8")
        self.default_css = weasyprint.CSS(string=css, url_fetcher=self.fetcher, font_config=self.fonts)
        # PDF/A's output intent. WeasyPrint's own 'srgb' intent opens (and leaks) its ICC file on every write
        # and parses it again each time; one profile, read once, serves every document instead.
        icc = (Path(weasyprint.__file__).parent / "pdf" / "sRGB2014.icc").read_bytes()
        self.srgb = ColorProfile(io.BytesIO(icc), "sRGB2014.icc", "relative-colorimetric", (["r"], ["g"], ["b"]))
        self.page_css = {
            paper: weasyprint.CSS(string=f"@page {{ size: {paper} landscape; margin: 0 }}", url_fetcher=self.fetcher)
            for paper in PAPERS
        }


@cache
def _engine() -> _Engine:
    return _Engine()


_SANDBOX = CertificateSandbox()


@cache
def _default_template() -> Template:
    return _SANDBOX.compile_template((TEMPLATES / "default.html").read_text("utf-8"))


@lru_cache(maxsize=64)
def _compiled(source: str) -> Template:
    try:
        return _SANDBOX.compile_template(source)
    except TemplateError as error:
        raise CertificateError(f"the template does not compile: {error}") from None


def parse_data_uri(url: str) -> tuple[str, bytes]:
    """(media type, bytes) of a `data:` URI (RFC 2397); ValueError for anything else."""
    match = _DATA_URI.fullmatch(url)
    if not match:
        scheme = urlsplit(url).scheme or "relative"
        raise ValueError(f"{scheme} resources are refused in certificates (only data: URIs): {url[:200]}")
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    try:
        if "base64" in params:
            data = base64.b64decode(unquote_to_bytes(match["data"]), validate=False)
        else:
            data = unquote_to_bytes(match["data"])
    except (binascii.Error, ValueError):
        raise ValueError("malformed data: URI") from None
    if len(data) > MAX_DATA_URI_BYTES:
        raise ValueError("data: URI too large")
    return (match["type"].strip().lower() or "text/plain"), data


def image_data_uri(image: bytes) -> str:
    """A `data:` URI for a logo given as PNG, JPEG, GIF or SVG bytes (sniffed, never trusted by name)."""
    media_type = next((t for magic, t in _IMAGE_TYPES.items() if image.startswith(magic)), None)
    if media_type is None and b"<svg" in image[:4096]:
        media_type = "image/svg+xml"
    if media_type is None:
        raise ValueError("the logo must be a PNG, JPEG, GIF or SVG image")
    return f"data:{media_type};base64,{base64.b64encode(image).decode('ascii')}"


# ------------------------------------------------------------------------------------------------ the facts


def certificate_context(
    credential: Mapping[str, Any],
    *,
    verify_url: str,
    paper: Paper = "A4",
    logo: bytes | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """What a certificate template sees. Every value is plain data from the credential (escaped on output);
    the `*_size` values are points, already scaled by `scale`."""
    subject = _first(credential.get("credentialSubject"))
    achievement = _obj(subject.get("achievement"))
    issuer = _obj(credential.get("issuer")) or {"id": credential.get("issuer")}
    name = _recipient_name(subject)
    shown = name or "the holder of this credential"
    title = _text(achievement.get("name")) or _text(credential.get("name"))
    description = _text(achievement.get("description"))
    issued = _date(credential.get("awardedDate")) or _date(credential.get("validFrom"))
    until = _date(credential.get("validUntil"))
    return {
        "recipient_name": name,  # "" when the credential names no one (a DID-only recipient)
        "recipient_display": shown,
        "recipient_dir": text_direction(shown),
        "name_size": round(name_font_size(shown) * scale, 1),
        "achievement_name": title,
        "achievement_dir": text_direction(title),
        "achievement_size": round(achievement_font_size(title) * scale, 1),
        "achievement_description": description,
        "description_dir": text_direction(description),
        "description_size": round(description_font_size(description) * scale, 1),
        "achievement_type": _text(achievement.get("achievementType")),
        "criteria": _text(_obj(achievement.get("criteria")).get("narrative")),
        "issuer_name": _text(issuer.get("name")) or _text(issuer.get("id")),
        "issuer_url": _text(issuer.get("url")),
        "logo_src": image_data_uri(logo) if logo else None,
        "issued_on": human_date(issued),
        "issued_iso": issued.strftime("%Y-%m-%d") if issued else "",
        "valid_until": human_date(until) if until else "",
        "credential_id": _text(credential.get("id")),
        "verify_url": verify_url,
        "short_url": re.sub(r"^https?://", "", verify_url),
        "qr_src": "data:image/svg+xml;base64," + base64.b64encode(qr_svg(verify_url)).decode("ascii"),
        "paper": paper,
        "credential": credential,
    }


def name_font_size(name: str) -> float:
    """Points for the learner's name so that it fits: one line when it can, at most three at the smallest.

    Width is estimated from the text (East Asian wide characters count double): ~600 pt of line at about half
    an em per narrow character. Real widths vary by font, so the estimate keeps a margin; the page-count check
    in `render_certificate` catches what it misses.
    """
    units = max(1.0, _width_units(name))
    one_line = 600 / (0.5 * units)
    if one_line >= 20:
        return round(min(48.0, one_line), 1)
    return round(max(11.0, min(20.0, 3 * 600 / (0.55 * units))), 1)


def achievement_font_size(title: str) -> float:
    """Points for the achievement's name: 24 on one line, smaller over two or three."""
    units = max(1.0, _width_units(title))
    one_line = 590 / (0.5 * units)
    if one_line >= 18:
        return round(min(24.0, one_line), 1)
    return round(max(12.0, min(18.0, 2 * 590 / (0.55 * units))), 1)


def description_font_size(description: str) -> float:
    units = _width_units(description)
    return 12.5 if units <= 260 else 11.0 if units <= 420 else 10.0 if units <= 700 else 9.0


def text_direction(text: str) -> Literal["ltr", "rtl"]:
    """The direction of the first strong character (Unicode bidi P2/P3)."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind in ("R", "AL"):
            return "rtl"
        if kind == "L":
            return "ltr"
    return "ltr"


def human_date(moment: datetime | None) -> str:
    return f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}" if moment else ""


def _width_units(text: str) -> float:
    return sum(2.0 if unicodedata.east_asian_width(c) in ("W", "F") else 1.0 for c in text)


def _recipient_name(subject: Mapping[str, Any]) -> str:
    identifiers = subject.get("identifier")
    for entry in identifiers if isinstance(identifiers, list) else []:
        if not (isinstance(entry, dict) and entry.get("identityType") == "name" and entry.get("hashed") is False):
            continue
        if name := _text(entry.get("identityHash")):
            return name
    return _text(subject.get("name"))


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(value: Any) -> dict[str, Any]:
    return _obj(value[0] if isinstance(value, list) and value else value)


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


# ------------------------------------------------------------------------------------------------ rendering

_INTENT = "ob3-srgb"  # the key of the shared sRGB output intent (see _Engine)
# Successive tries for the default template when the text does not fit above the signatures: font scale, and
# how much of the description to keep (the full text stays in the credential, which the PDF carries).
_FITTING: tuple[tuple[float, int | None], ...] = ((1.0, None), (0.85, None), (0.85, 900), (0.7, 500), (0.5, 200))


def render_certificate(
    credential: Mapping[str, Any],
    *,
    verify_url: str,
    paper: Paper = "A4",
    template: str | None = None,
    logo: bytes | None = None,
) -> bytes:
    """The certificate of a signed credential as PDF/A-3b bytes, with the credential JSON embedded.

    `template` is an uploaded per-achievement template (HTML with its own <style>); None uses the default, whose
    text is made smaller (and a very long description shortened) until it fits above the signatures.
    Raises `CertificateError` when a template cannot be rendered (the caller may fall back to the default).
    """
    if paper not in PAPERS:
        raise ValueError(f"paper must be one of {', '.join(PAPERS)}")
    if template is not None and len(template.encode("utf-8")) > MAX_TEMPLATE_BYTES:
        raise CertificateError(f"the template is larger than {MAX_TEMPLATE_BYTES:,} bytes")
    compiled = _default_template() if template is None else _compiled(template)
    engine = _engine()
    stylesheets = [engine.page_css[paper]] + ([engine.default_css] if template is None else [])
    tries = _FITTING if template is None else _FITTING[:1]
    for attempt, (scale, keep) in enumerate(tries, start=1):
        context = certificate_context(credential, verify_url=verify_url, paper=paper, logo=logo, scale=scale)
        if keep is not None and len(context["achievement_description"]) > keep:
            context["achievement_description"] = context["achievement_description"][:keep].rsplit(" ", 1)[0] + " …"
        try:
            html = render_sandboxed(compiled, context)
        except TemplateError as error:
            raise CertificateError(f"the template failed: {error}") from None
        except Exception as error:  # `{{ 1 / 0 }}`, `{{ 'a' + 1 }}`: the uploaded template's fault, not ours
            if template is None:
                raise
            raise CertificateError(f"the template failed: {type(error).__name__}: {error}") from None
        with engine.lock:
            document = _layout(engine, html, stylesheets, hints=template is not None)
            if template is None and attempt < len(tries) and not _fits(document):
                continue
            if len(document.pages) > MAX_PAGES:
                raise CertificateError(f"the certificate takes {len(document.pages)} pages; it must fit on one")
            pdf = _write(engine, document, credential, context)
            if engine.fetcher.refused:
                raise CertificateError(f"the template refers to a refused resource: {engine.fetcher.refused[0]}")
            return pdf
    raise AssertionError("unreachable: the last try always writes")  # pragma: no cover


SAMPLE_CREDENTIAL: dict[str, Any] = {
    "id": "https://issuer.example/credentials/00000000-0000-4000-8000-000000000000",
    "type": ["VerifiableCredential", "OpenBadgeCredential"],
    "issuer": {"id": "did:web:issuer.example", "type": ["Profile"], "name": "Example Institute of Technology"},
    "validFrom": "2026-01-31T09:00:00Z",
    "validUntil": "2029-01-31T09:00:00Z",
    "name": "Certified Data Analyst",
    "credentialSubject": {
        "type": ["AchievementSubject"],
        "identifier": [
            {"type": "IdentityObject", "identityType": "name", "hashed": False, "identityHash": "Zoë Ångström-Núñez"}
        ],
        "achievement": {
            "id": "https://issuer.example/achievements/data-analyst",
            "type": ["Achievement"],
            "name": "Certified Data Analyst",
            "description": "Cleaned, analysed and presented three real data sets, and passed the final assessment.",
            "criteria": {"narrative": "Complete all modules and pass the final assessment."},
            "achievementType": "Certificate",
        },
    },
}


def default_template_source() -> str:
    """The default template as one self-contained document (its stylesheet inlined): what `GET …/certificate-
    template` shows for an achievement without its own, and a starting point for writing one."""
    html = (TEMPLATES / "default.html").read_text("utf-8")
    css = (TEMPLATES / "default.css").read_text("utf-8")
    return html.replace("</head>", f"<style>\n{css}</style>\n</head>", 1)


def template_digest(template: str | None) -> str:
    """Names a template in cache keys and ETags: "default", or the first 32 hex digits of its SHA-256."""
    return "default" if template is None else hashlib.sha256(template.encode("utf-8")).hexdigest()[:32]


def check_template(template: str) -> None:
    """Validate an uploaded template before it is stored: it must compile in the sandbox and render a sample
    credential on one page, in both paper sizes, touching nothing but `data:` URIs. Raises `CertificateError`."""
    for paper in PAPERS:
        render_certificate(
            SAMPLE_CREDENTIAL, verify_url="https://issuer.example/c/sample", paper=paper, template=template
        )


def _layout(engine: _Engine, html: str, stylesheets: list[Any], *, hints: bool = False) -> Any:
    """Lay the HTML out; `hints` honours HTML attributes such as `width=` (what authors of templates expect)."""
    engine.fetcher.refused.clear()
    try:
        return engine.weasyprint.HTML(string=html, url_fetcher=engine.fetcher).render(
            stylesheets=stylesheets,
            font_config=engine.fonts,
            color_profiles={_INTENT: engine.srgb},
            output_intent=_INTENT,
            presentational_hints=hints,
        )
    except engine.weasyprint.urls.FatalURLFetchingError as error:
        raise CertificateError(f"the template refers to a resource that is refused: {error.__cause__}") from None


def _fits(document: Any) -> bool:
    """Whether the default template's text (`main`) ends above its signatures row (pinned to the bottom)."""
    if len(document.pages) > 1:
        return False
    boxes: dict[str, Any] = {}
    for box in document.pages[0]._page_box.descendants(placeholders=True):
        element = getattr(box, "element", None)
        classes = (element.get("class") or "").split() if element is not None and hasattr(element, "get") else []
        for name in ("main", "signatures"):
            if name in classes:
                boxes.setdefault(name, box)
    if len(boxes) < 2:
        return False  # the signatures were pushed off the page (absolute boxes do not paginate)
    main, footer = boxes["main"], boxes["signatures"]
    return bool(main.position_y + main.margin_height() <= footer.position_y - 8)  # 8 px ≈ 2 mm of air


def _write(engine: _Engine, document: Any, credential: Mapping[str, Any], context: Mapping[str, Any]) -> bytes:
    payload = json.dumps(credential, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    created = _date(credential.get("validFrom"))
    metadata = document.metadata
    metadata.attachments = []  # only ours: a template's <link rel=attachment> could imitate credential.json
    parts = [context["achievement_name"], context["recipient_name"]]
    metadata.title = " — ".join(p for p in parts if p) or "Certificate"
    metadata.authors = [context["issuer_name"]] if context["issuer_name"] else []
    metadata.generator = "ob3-issuer"
    if created is not None:
        metadata.created = metadata.modified = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    attachment = engine.weasyprint.Attachment(
        string=payload,
        name=ATTACHMENT_NAME,
        description="The signed Open Badges 3.0 credential this certificate shows",
        relationship="Source",
        url_fetcher=engine.fetcher,
        created=created,
        modified=created,
    )
    try:
        pdf: bytes = document.write_pdf(
            pdf_variant="pdf/a-3b",
            output_intent=_INTENT,
            attachments=[attachment],
            pdf_identifier=hashlib.md5(payload, usedforsecurity=False).digest(),
            finisher=_list_attachment_once,
        )
    except engine.weasyprint.urls.FatalURLFetchingError as error:
        raise CertificateError(f"the template refers to a resource that is refused: {error.__cause__}") from None
    return pdf


def _list_attachment_once(_document: Any, pdf: Any) -> None:
    """WeasyPrint 70 puts the attachment in the catalog's /AF twice (once from the name tree, once from the
    file specification); PDF/A-3 wants each associated file listed once."""
    associated = pdf.catalog.get("AF")
    if associated:
        unique = list(dict.fromkeys(associated))
        associated.clear()
        associated.extend(unique)
