"""/api/v1/achievements/{id}/certificate-template: an achievement's own certificate template (HTML + CSS).

PUT stores one after `pdf.check_template` has rendered it with a sample credential in both paper sizes inside the
sandbox (no file or network access, `data:` URIs only, one page, a budget of steps and time): a template that
fails is a 422 saying why, and nothing is stored. GET shows the template in use (the default's source, with its
stylesheet inlined, when the achievement has none), DELETE goes back to the default. Every change is audited
with the template's SHA-256 (not its text). Certificates already rendered are not stale: their cache key names
the template (`artifacts._pdf_key`), so the next request renders with the new one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from litestar import Controller, Request, Response, delete, get, put
from litestar.params import FromPath, RawBody
from sqlmodel import Session

from .. import audit
from ..auth import require
from ..db.engine import session_scope
from ..db.tables import Achievement, utcnow
from ..errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from ..services import ActorDep, ServicesDep
from .pdf import MAX_TEMPLATE_BYTES, CertificateError, check_template, default_template_source

_HTML_HEADERS = {  # an administrator's HTML, served from our origin: shown as a document, never run as a page
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
    "X-Content-Type-Options": "nosniff",
}


def view(achievement_id: str, template: str | None) -> dict[str, Any]:
    source = template if template is not None else default_template_source()
    return {
        "achievementId": achievement_id,
        "custom": template is not None,
        "sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "bytes": len(source.encode("utf-8")),
        "maxBytes": MAX_TEMPLATE_BYTES,
        "template": source,
    }


def template_from(body: bytes, content_type: str) -> str:
    """The template text from a text/html body or a JSON `{"template": "..."}`; problems are 4xx."""
    media = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    if media == "application/json":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadRequest(f"the body is not valid JSON: {error.msg} at line {error.lineno}") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("template"), str) or len(parsed) != 1:
            raise BadRequest('send {"template": "<the HTML>"} (one string field), or the HTML itself as text/html')
        text = parsed["template"]
    elif media not in ("text/html", "text/plain"):
        raise UnsupportedMediaType('send the template as text/html, or as application/json {"template": "..."}')
    size = len(text.encode("utf-8"))
    if size > MAX_TEMPLATE_BYTES:
        raise PayloadTooLarge(f"a certificate template is at most {MAX_TEMPLATE_BYTES:,} bytes; this one has {size:,}")
    if not text.strip():
        raise ValidationFailed("the template is empty", errors=[{"field": "template", "message": "empty"}])
    return text


def _achievement(session: Session, achievement_id: str) -> Achievement:
    row = session.get(Achievement, achievement_id)
    if row is None:
        raise NotFound(f"no achievement {achievement_id!r}")
    return row


def _digest(template: str | None) -> str | None:
    return None if template is None else hashlib.sha256(template.encode("utf-8")).hexdigest()


class CertificateTemplateController(Controller):
    path = "/api/v1/achievements/{achievement_id:str}/certificate-template"
    tags = ["achievements"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @get("/", guards=[require("admin")], sync_to_thread=True)
    def read(
        self, achievement_id: FromPath[str], services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        """JSON (`custom`, `sha256`, `bytes`, `maxBytes`, `template`); the bare HTML with `Accept: text/html`."""
        with Session(services.engine) as session:
            template = _achievement(session, achievement_id).certificate_template
        shown = view(achievement_id, template)
        if request.accept.best_match(["application/json", "text/html"], default="application/json") == "text/html":
            return Response(shown["template"], media_type="text/html; charset=utf-8", headers=_HTML_HEADERS)
        return Response(shown)

    @put("/", guards=[require("admin")], sync_to_thread=True, status_code=200)
    def replace(
        self,
        achievement_id: FromPath[str],
        services: ServicesDep,
        actor: ActorDep,
        request: Request[Any, Any, Any],
        body: RawBody,
    ) -> dict[str, Any]:
        """Check, then store. 422 (`validation`) with the reason when the template cannot be rendered."""
        template = template_from(body, request.headers.get("content-type", ""))
        with Session(services.engine) as session:
            _achievement(session, achievement_id)  # 404 before the (slower) check
        try:
            check_template(template)
        except CertificateError as error:
            raise ValidationFailed(
                f"the certificate template was refused: {error}", errors=[{"field": "template", "message": str(error)}]
            ) from None
        with session_scope(services.engine) as session:
            row = _achievement(session, achievement_id)
            previous = row.certificate_template
            row.certificate_template, row.updated_at = template, utcnow()
            session.add(row)
            audit.append(
                session,
                actor=actor,
                action="achievement.certificate_template.set",
                subject=row.id,
                data={"sha256": _digest(template), "bytes": len(template.encode()), "previous": _digest(previous)},
            )
        return view(achievement_id, template)

    @delete("/", guards=[require("admin")], sync_to_thread=True, status_code=204)
    def remove(self, achievement_id: FromPath[str], services: ServicesDep, actor: ActorDep) -> None:
        """Back to the default template (also when there was none: 204 either way)."""
        with session_scope(services.engine) as session:
            row = _achievement(session, achievement_id)
            previous = row.certificate_template
            if previous is None:
                return
            row.certificate_template, row.updated_at = None, utcnow()
            session.add(row)
            audit.append(
                session,
                actor=actor,
                action="achievement.certificate_template.removed",
                subject=row.id,
                data={"previous": _digest(previous)},
            )
