"""The verification page for people: `/c/{id}` (the QR target) with its QR codes and downloads, and `/verify` for a
credential from any issuer (pasted, uploaded or fetched by URL).

Every verdict comes from the real verifier (`verification.py`); this module only turns a report and the credential
it read into a page. Templates autoescape everything: values from a credential are never trusted as markup, and
links and images are only rendered for http(s) URLs (images also for `data:image/...`).

A stored credential's report is reused while nothing it depends on has changed: the document, its revocation, the
issuer's keys (all read from the database on every request, so every process sees a change at once) and the
clock (an entry expires at the credential's next validFrom/validUntil boundary, and after a minute regardless).
The page says when the checks ran.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.params import FromPath, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig
from sqlalchemy import Text, bindparam, cast
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from verifier import Status, Verdict, VerificationReport

from ..blocking import run_blocking
from ..db.engine import reader
from ..db.tables import Credential, SigningKey
from ..delivery.linkedin import add_to_profile_url
from ..delivery.qr import qr_png, qr_svg
from ..errors import BadRequest, NotFound
from ..services import Services, ServicesDep
from .verification import MAX_SUBMITTED_BYTES, verify_stored, verify_submitted, verify_url

TEMPLATES = Path(__file__).parent / "templates"
# Learners share these links on purpose, and link previews (Open Graph) work regardless; but a page naming a
# person should not turn up when someone searches for that name unless the person chose it, and we have no such
# opt-in. So: noindex (meta tag and header), previews yes.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; img-src 'self' https: http: data:; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}
_FORM_LIMIT = MAX_SUBMITTED_BYTES + 64_000  # a 2 MB badge image plus the multipart envelope
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]", re.IGNORECASE)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip


@functools.cache
def environment() -> Environment:
    """Jinja2 over `templates/`, autoescaping every template, failing loudly on an undefined name (one per
    process: the pages render through Litestar's engine and, for cached stored pages, directly)."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, auto_reload=False,
    )  # fmt: skip
    environment.filters["human_date"] = human_date
    return environment


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment()))


def render_credential_page(
    services: Services, credential_id: str, *, headers: dict[str, str] | None = None
) -> Response[str]:
    """The verification page of a stored credential (also what `/credentials/{id}` serves for text/html).

    Raises NotFound for an unknown id."""
    return Response(
        _stored_page(services, credential_id), media_type=MediaType.HTML, headers=PAGE_HEADERS | (headers or {})
    )


REPORT_TTL = 60.0  # seconds a report is reused at most, even when nothing it depends on has visibly changed
_PAGES: OrderedDict[tuple[str, str, str], tuple[str, float, str]] = OrderedDict()
_PAGES_LOCK = threading.Lock()
_CACHE_SIZE = 2048


_CREDENTIAL = Credential.__table__.c  # type: ignore[attr-defined]
_PAGE_STATE = sa_select(  # statements built once: constructing them costs more than running them
    cast(_CREDENTIAL.document, Text), _CREDENTIAL.recipient_name, _CREDENTIAL.revoked_at,
    _CREDENTIAL.jwt.is_not(None), _CREDENTIAL.issuer_id,
).where(_CREDENTIAL.id == bindparam("credential"))  # fmt: skip
_KEY_STATES = (
    sa_select(col(SigningKey.id), col(SigningKey.status))
    .where(col(SigningKey.issuer_id) == bindparam("issuer"))
    .order_by(col(SigningKey.id))
)


def _stored_page(services: Services, credential_id: str) -> str:
    """The page's HTML: rendered from a fresh report, or reused while nothing it shows can have changed.

    What it depends on is read on every request (two indexed queries, the document as stored text, hashed
    rather than parsed): the document, the name it was issued under, whether there is a JWT, its revocation and
    the issuer's keys. A change to any of them, in any process, shows at once."""
    with reader(services.engine).connect() as connection:
        found = connection.execute(_PAGE_STATE, {"credential": credential_id}).first()
        if found is None:
            raise NotFound(f"no credential {credential_id!r}")
        document_text, recipient_name, revoked_at, has_jwt, issuer_id = found
        keys = connection.execute(_KEY_STATES, {"issuer": issuer_id}).all()
    state = json.dumps(
        [hashlib.sha256(document_text.encode()).hexdigest(), recipient_name, str(revoked_at), bool(has_jwt)]
        + [list(k) for k in keys]
    )
    key = (services.settings.database_url, services.settings.base_url, credential_id)
    now = time.time()
    with _PAGES_LOCK:
        cached = _PAGES.get(key)
        if cached is not None and cached[0] == state and now < cached[1]:
            _PAGES.move_to_end(key)
            return cached[2]
    stored = verify_stored(services, credential_id)
    checked_at = datetime.now(UTC).replace(microsecond=0)
    html = (
        environment()
        .get_template("credential.html")
        .render(_report_context(services, stored.report, stored.credential, checked_at=checked_at))
    )
    boundaries = [_date(stored.credential.document.get(name)) for name in ("validFrom", "validUntil")]
    expires = min([now + REPORT_TTL, *(b.timestamp() for b in boundaries if b is not None and b.timestamp() > now)])
    with _PAGES_LOCK:
        _PAGES[key] = (state, expires, html)
        _PAGES.move_to_end(key)
        while len(_PAGES) > _CACHE_SIZE:
            _PAGES.popitem(last=False)
    return html


class PageController(Controller):
    tags = ["verification page"]  # noqa: RUF012 (Litestar declares it as a plain attribute)
    include_in_schema = False

    @get("/c/{credential_id:str}")
    async def page(self, credential_id: FromPath[str], services: ServicesDep) -> Response[str] | Template:
        try:
            return await run_blocking(services.engine, render_credential_page, services, credential_id)
        except NotFound:
            return _not_found(services)

    @get("/c/{credential_id:str}/qr.svg", sync_to_thread=True)
    def qr_code_svg(self, credential_id: FromPath[str], services: ServicesDep) -> Response[bytes]:
        url = page_url(services, _stored(services, credential_id).id)
        return Response(qr_svg(url), media_type="image/svg+xml", headers=_QR_HEADERS)

    @get("/c/{credential_id:str}/qr.png", sync_to_thread=True)
    def qr_code_png(
        self,
        credential_id: FromPath[str],
        services: ServicesDep,
        scale: Annotated[int, QueryParameter(ge=1, le=40)] = 8,
    ) -> Response[bytes]:
        url = page_url(services, _stored(services, credential_id).id)
        return Response(qr_png(url, scale), media_type="image/png", headers=_QR_HEADERS)

    @get("/c/{credential_id:str}/credential.json", sync_to_thread=True)
    def download_json(self, credential_id: FromPath[str], services: ServicesDep) -> Response[dict[str, Any]]:
        row = _stored(services, credential_id)
        return Response(row.document, media_type="application/ld+json", headers=_download(row, "json"))

    @get("/c/{credential_id:str}/credential.jwt", sync_to_thread=True)
    def download_jwt(self, credential_id: FromPath[str], services: ServicesDep) -> Response[str]:
        row = _stored(services, credential_id)
        if not row.jwt:
            raise NotFound(f"credential {credential_id!r} was not issued as a VC-JWT")
        return Response(row.jwt, media_type="application/jwt", headers=_download(row, "jwt"))

    @get("/verify")
    async def verify_form(self, services: ServicesDep) -> Template:
        return _form_page(services)

    @post("/verify", request_max_body_size=_FORM_LIMIT, status_code=200)
    async def verify_submission(self, request: Request[Any, Any, Any], services: ServicesDep) -> Template:
        """Exactly one of: `credential` (pasted JSON or JWT), `file` (JSON, JWT, PNG, SVG) or `url`."""
        try:
            form = await request.form()
        except HTTPException as error:
            too_big = error.status_code == 413
            message = (
                "The submission is larger than 2 MB." if too_big else "The form could not be read: please try again."
            )
            return _form_page(services, error=message, field="credential-file", status=error.status_code)
        text = _field_text(form.get("credential"))
        url = _field_text(form.get("url")).strip()
        upload = form.get("file")
        data = await upload.read() if isinstance(upload, UploadFile) else b""
        given = [name for name, value in (("text", text.strip()), ("file", data), ("url", url)) if value]
        state = {"text": text, "url": url}
        if len(given) != 1:
            message = (
                "Paste a credential, choose a file, or enter a web address."
                if not given
                else "Give the credential one way only: paste it, upload a file, or enter a web address."
            )
            return _form_page(services, error=message, field="credential-text", status=400, **state)
        field = {"text": "credential-text", "file": "credential-file", "url": "credential-url"}[given[0]]
        if url and not url.lower().startswith(("https://", "http://")):
            return _form_page(services, error=_BAD_URL, field=field, status=400, **state)
        try:
            if url:
                report = await asyncio.to_thread(verify_url, services, url)
            else:
                report = await asyncio.to_thread(verify_submitted, services, data or text.strip())
        except BadRequest as error:
            return _form_page(services, error=_sentence(error.detail), field=field, status=400, **state)
        parse = report.check("parse")
        if report.credential is None or (parse is not None and parse.status is not Status.PASSED):
            detail = parse.detail if parse is not None else "the input is not a credential"
            return _form_page(services, error=_sentence(detail), field=field, status=400, **state)
        return _report_page(services, report, None)


_QR_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
_BAD_URL = "Enter a web address that starts with https:// (or http://)."


def page_url(services: Services, credential_id: str) -> str:
    """The short URL a QR code holds."""
    return f"{services.settings.base_url}/c/{credential_id}"


def _stored(services: Services, credential_id: str) -> Credential:
    with Session(services.engine) as session:
        row = session.get(Credential, credential_id)
    if row is None:
        raise NotFound(f"no credential {credential_id!r}")
    return row


def _download(row: Credential, extension: str) -> dict[str, str]:
    name = re.sub(r"[^a-z0-9]+", "-", str(row.document.get("name", "credential")).lower()).strip("-")[:60]
    filename = f"{name or 'credential'}-{row.id}.{extension}"
    return {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-cache"}


def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sentence(detail: str) -> str:
    detail = detail.strip()
    return (detail[:1].upper() + detail[1:]).rstrip(".") + "." if detail else "The credential could not be read."


# ------------------------------------------------------------------------------------------------- rendering


def _base_context(services: Services) -> dict[str, Any]:
    base = services.settings.base_url
    return {"site_name": services.settings.name, "base_url": base, "verify_action": f"{base}/verify"}


def _form_page(
    services: Services,
    *,
    error: str | None = None,
    field: str | None = None,
    status: int = 200,
    text: str = "",
    url: str = "",
) -> Template:
    """The form alone; with an error, the message is announced (role=alert) and tied to the field it is about."""
    context = _base_context(services) | {"form": {"error": error, "field": field, "text": text, "url": url}}
    return Template("verify.html", context=context, headers=PAGE_HEADERS, status_code=status)


def _not_found(services: Services) -> Template:
    return Template("not_found.html", context=_base_context(services), headers=PAGE_HEADERS, status_code=404)


def _report_page(
    services: Services,
    report: VerificationReport,
    row: Credential | None,
    *,
    checked_at: datetime | None = None,
    headers: dict[str, str] | None = None,
) -> Template:
    context = _report_context(services, report, row, checked_at=checked_at)
    return Template("credential.html", context=context, headers=PAGE_HEADERS | (headers or {}))


def _report_context(
    services: Services, report: VerificationReport, row: Credential | None, *, checked_at: datetime | None = None
) -> dict[str, Any]:
    credential = report.credential or {}
    facts = credential_facts(credential, recipient=row.recipient_name if row is not None else None)
    verdict = report.verdict
    links = None
    if row is not None:
        url = page_url(services, row.id)
        linkedin = None
        if verdict not in (Verdict.REVOKED, Verdict.INVALID) and facts["issued"] is not None:
            linkedin = add_to_profile_url(
                name=facts["title"], organization=facts["issuer_name"], issued=facts["issued"],
                expires=facts["expires"], cert_url=url, cert_id=row.id,
            )  # fmt: skip
        links = {
            "page": url,
            "json": f"{url}/credential.json",
            "jwt": f"{url}/credential.jwt" if row.jwt else None,
            "qr_svg": f"{url}/qr.svg",
            "qr_png": f"{url}/qr.png",
            "linkedin": linkedin,
            "pdf": f"{url}/certificate.pdf",
            "baked_png": f"{url}/badge.png",
        }
    return _base_context(services) | {
        "facts": facts,
        "verdict": verdict.value,
        "checks": [c.to_dict() for c in report.checks],
        "checked_at": checked_at or datetime.now(UTC).replace(microsecond=0),
        "links": links,
        "form": {"error": None, "field": None, "text": "", "url": ""},
    }


def credential_facts(credential: dict[str, Any], *, recipient: str | None = None) -> dict[str, Any]:
    """What a person needs to know about a credential, as plain values; absent or malformed fields become None.

    `recipient` (the name we issued it under) wins over the name the credential states."""
    subject = _first(credential.get("credentialSubject"))
    achievement = _obj(subject.get("achievement"))
    issuer = credential.get("issuer")
    issuer_obj = issuer if isinstance(issuer, dict) else {"id": issuer}
    criteria = _obj(achievement.get("criteria"))
    image, image_alt = _image(achievement.get("image"))
    return {
        "title": _text(achievement.get("name")) or _text(credential.get("name")) or "Unnamed achievement",
        "description": _text(achievement.get("description")),
        "achievement_type": _humanize(_text(achievement.get("achievementType"))),
        "criteria": _text(criteria.get("narrative")),
        "criteria_url": _link(criteria.get("id")),
        "image": image,
        "image_alt": image_alt,
        "recipient": recipient or _subject_name(subject),
        "issuer_name": _text(issuer_obj.get("name")) or "an unnamed issuer",
        "issuer_url": _link(issuer_obj.get("url")),
        "issuer_logo": _image(issuer_obj.get("image"))[0],
        "issuer_domain": _domain(_text(issuer_obj.get("id")), _link(issuer_obj.get("url"))),
        "issuer_id": _text(issuer_obj.get("id")),
        "issued": _date(credential.get("awardedDate"))
        or _date(credential.get("validFrom"))
        or _date(credential.get("issuanceDate")),
        "expires": _date(credential.get("validUntil")) or _date(credential.get("expirationDate")),
        "valid_from": _date(credential.get("validFrom")) or _date(credential.get("issuanceDate")),
        "credential_id": _text(credential.get("id")),
    }


def human_date(moment: datetime | None, time: Literal["never", "auto", "always"] = "never") -> str:
    """A date for people: 5 March 2026; with time="always" 5 March 2026, 14:03 UTC; "auto" omits midnight."""
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    day = f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}"
    if time == "always" or (time == "auto" and (moment.hour, moment.minute, moment.second) != (0, 0, 0)):
        return f"{day}, {moment:%H:%M} UTC"
    return day


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first(value: Any) -> dict[str, Any]:
    return _obj(value[0] if isinstance(value, list) and value else value)


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _link(value: Any) -> str | None:
    text = _text(value)
    return text if text is not None and text.lower().startswith(("https://", "http://")) else None


def _image(value: Any) -> tuple[str | None, str]:
    """(safe image URL or None, its caption for alt text)."""
    obj = value if isinstance(value, dict) else {"id": value}
    url = _text(obj.get("id"))
    if url is None or not (url.lower().startswith(("https://", "http://")) or _DATA_IMAGE.match(url)):
        return None, ""
    return url, _text(obj.get("caption")) or ""


def _subject_name(subject: dict[str, Any]) -> str | None:
    identifiers = subject.get("identifier")
    for entry in identifiers if isinstance(identifiers, list) else [identifiers]:
        entry = _obj(entry)
        if entry.get("identityType") == "name" and entry.get("hashed") is False:
            return _text(entry.get("identityHash"))
    return _text(subject.get("name"))


def _domain(issuer_id: str | None, url: str | None) -> str | None:
    """The host the issuer's key was published under (did:web), else the host of its web page."""
    if issuer_id and issuer_id.startswith("did:web:"):
        return unquote(issuer_id.removeprefix("did:web:").split(":")[0]) or None
    return urlsplit(url).netloc or None if url else None


def _date(value: Any) -> datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _humanize(kind: str | None) -> str | None:
    """An achievement type for people: LicensedProfession -> Licensed profession; "ext:" prefixes dropped."""
    if kind is None:
        return None
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", kind.removeprefix("ext:")).split()
    return " ".join([words[0], *(w.lower() for w in words[1:])]) if words else None
