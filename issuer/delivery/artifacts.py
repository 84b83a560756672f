"""Public downloads of a credential as artefacts: `/c/{id}/certificate.pdf`, `/c/{id}/badge.png`, `/c/{id}/badge.svg`.

Each is made from the stored, signed credential on first request and kept in an in-process LRU cache (64 MB) keyed
by the credential id and a digest of its document, so a re-issue (new proof, new validFrom) renders afresh and
nothing stale is served. A certificate's key also names its achievement's certificate template (read from the
database on every request: one indexed lookup), so uploading, changing or removing the template is seen at once by
every process; entries for the old template are never hit again and age out of the LRU. Rendering is deterministic,
so several worker processes each holding their own copy agree byte for byte, and the ETag (the same digest) lets
browsers and proxies revalidate for free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

from cachetools import LRUCache, TTLCache
from litestar import Controller, Request, Response, get
from litestar.params import FromPath, QueryParameter
from sqlmodel import Session, col, select

from verifier.fetch import HttpFetcher

from ..db.tables import Achievement, Credential
from ..errors import NotFound
from ..services import Services, ServicesDep
from .baking import MAX_IMAGE_BYTES, BadgeImage, achievement_image, baked_png, baked_svg, png_as_svg
from .pdf import CertificateError, Paper, render_certificate, template_digest

log = logging.getLogger(__name__)

CACHE_BYTES = 64 * 1024 * 1024
_SVG_HEADERS = {  # an SVG from someone else's server, served from our origin: never let it run as a page
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox",
    "X-Content-Type-Options": "nosniff",
}


class _Cache:
    """A byte-bounded LRU shared by the request threads. `make` says whether its result may be kept: not when
    it had to fall back because someone else's server failed (the next request tries again)."""

    def __init__(self, max_bytes: int) -> None:
        self._items: LRUCache[tuple[str, ...], bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)
        self._lock = threading.Lock()

    def get_or_make(self, key: tuple[str, ...], make: Callable[[], tuple[bytes, bool]]) -> bytes:
        with self._lock:
            found = self._items.get(key)
        if found is not None:
            return found
        made, keep = make()  # outside the lock: two first requests may both render; the results are identical
        if keep and len(made) <= CACHE_BYTES // 8:
            with self._lock:
                self._items[key] = made
        return made

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
        with _IMAGES_LOCK:
            _IMAGES.clear()
            _FAILED.clear()


CACHE = _Cache(CACHE_BYTES)
# Images fetched from their URLs: kept 5 minutes (a cohort of a thousand credentials costs one fetch, and a
# changed image is picked up soon); a failure is remembered for a minute so a dead server is not asked per request.
_IMAGES: TTLCache[str, BadgeImage] = TTLCache(maxsize=256, ttl=300)
_FAILED: TTLCache[str, bool] = TTLCache(maxsize=256, ttl=60)
_IMAGES_LOCK = threading.Lock()


class ArtifactsController(Controller):
    tags = ["public"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @get("/c/{credential_id:str}/certificate.pdf", sync_to_thread=True)
    def certificate(
        self,
        credential_id: FromPath[str],
        services: ServicesDep,
        request: Request[Any, Any, Any],
        paper: Annotated[Literal["A4", "Letter"], QueryParameter(description="page size, landscape")] = "A4",
    ) -> Response[bytes]:
        """The certificate as PDF/A-3b, with the signed credential embedded as `credential.json`."""
        row, template = _stored(services, credential_id, with_template=True)
        key = _pdf_key(row, paper, template)
        if _not_modified(request, key):
            return _response(b"", key, row, "application/pdf", "pdf", status=304)
        body = CACHE.get_or_make(key, lambda: _render_pdf(services, row, paper, template))
        return _response(body, key, row, "application/pdf", "pdf")

    @get("/c/{credential_id:str}/badge.png", sync_to_thread=True)
    def badge_png(
        self, credential_id: FromPath[str], services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """The achievement's image as PNG with the credential baked in (OB 3.0 iTXt `openbadgecredential`)."""
        row, _ = _stored(services, credential_id)
        key = ("png", row.id, _digest(row))
        if _not_modified(request, key):
            return _response(b"", key, row, "image/png", "png", status=304)
        body = CACHE.get_or_make(key, lambda: _bake(services, row, "png"))
        return _response(body, key, row, "image/png", "png")

    @get("/c/{credential_id:str}/badge.svg", sync_to_thread=True)
    def badge_svg(
        self, credential_id: FromPath[str], services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """The achievement's image as SVG with the credential baked in (`<openbadges:credential>`)."""
        row, _ = _stored(services, credential_id)
        key = ("svg", row.id, _digest(row))
        if _not_modified(request, key):
            return _response(b"", key, row, "image/svg+xml", "svg", status=304, extra=_SVG_HEADERS)
        body = CACHE.get_or_make(key, lambda: _bake(services, row, "svg"))
        return _response(body, key, row, "image/svg+xml", "svg", extra=_SVG_HEADERS)


# ------------------------------------------------------------------------------------------------ making them


def certificate_pdf(services: Services, row: Credential, paper: Paper = "A4") -> bytes:
    """The certificate of a stored credential, with its achievement's template, from the cache when it is there
    (also the mailer's PDF source: `mailer.use_pdf_source(certificate_pdf)`)."""
    template = certificate_template(services, row.achievement_id)
    return CACHE.get_or_make(_pdf_key(row, paper, template), lambda: _render_pdf(services, row, paper, template))


def certificate_template(services: Services, achievement_id: str) -> str | None:
    """The achievement's uploaded certificate template, or None for the default."""
    with Session(services.engine) as session:
        return session.exec(select(Achievement.certificate_template).where(Achievement.id == achievement_id)).first()


def _pdf_key(row: Credential, paper: Paper, template: str | None) -> tuple[str, ...]:
    return ("pdf", row.id, _digest(row), paper, template_digest(template))


def _render_pdf(services: Services, row: Credential, paper: Paper, template: str | None) -> tuple[bytes, bool]:
    """The achievement's template with the issuer's logo; when that fails (a template that passed its check with
    the sample credential but overflows one page for this learner, a logo the fetcher refuses), the same without
    the logo, then the default template: a certificate is always made, and the fallback is logged."""
    verify_url = f"{services.settings.base_url}/c/{row.id}"
    issuer = row.document.get("issuer")
    logo, complete = _image(services, issuer.get("image") if isinstance(issuer, dict) else None)
    tries: list[tuple[str | None, BadgeImage | None]] = []
    for candidate in ((template, logo), (template, None), (None, logo), (None, None)):
        if candidate not in tries:
            tries.append(candidate)
    for number, (use, image) in enumerate(tries, start=1):
        try:
            pdf = render_certificate(
                row.document, verify_url=verify_url, paper=paper, template=use, logo=image.data if image else None
            )
        except CertificateError as error:
            if number == len(tries):
                raise
            what = ("the achievement's template" if use is not None else "the default template") + (
                " with the logo" if image else ""
            )
            log.warning("certificate for %s failed with %s; trying without: %s", row.id, what, error)
            continue
        return pdf, complete
    raise AssertionError("unreachable: the last try returns or raises")  # pragma: no cover


def _bake(services: Services, row: Credential, kind: Literal["png", "svg"]) -> tuple[bytes, bool]:
    payload = json.dumps(row.document, ensure_ascii=False, separators=(",", ":"))
    achievement = _achievement(row.document)
    name = achievement.get("name") if isinstance(achievement.get("name"), str) else row.document.get("name")
    name = name if isinstance(name, str) else ""
    image, complete = _image(services, achievement.get("image"))
    if kind == "svg":
        svg = image.data if image and image.kind == "svg" else png_as_svg(image.data) if image else None
        bake = lambda: baked_svg(payload, svg, achievement_name=name)  # noqa: E731
    else:
        if image and image.kind == "svg":
            log.info("achievement image of %s is SVG; badge.png uses the default image (no rasteriser)", row.id)
        png = image.data if image and image.kind == "png" else None
        bake = lambda: baked_png(payload, png, achievement_name=name)  # noqa: E731
    return _baked_or_default(bake, row, kind, name, payload), complete


def _baked_or_default(
    bake: Callable[[], bytes], row: Credential, kind: Literal["png", "svg"], name: str, payload: str
) -> bytes:
    try:
        return bake()
    except ValueError as error:  # the fetched image is not one we can bake into (bad CRC, not UTF-8, ...)
        log.warning("achievement image of %s cannot be baked (%s); using the default image", row.id, error)
        maker = baked_svg if kind == "svg" else baked_png
        return maker(payload, None, achievement_name=name)


def _image(services: Services, image: object) -> tuple[BadgeImage | None, bool]:
    """(the image, whether that is the whole answer): (None, True) when there is no image to get, (None, False)
    when there is one but it could not be had (fetch failed, not PNG/SVG, too large; logged)."""
    url = image.get("id") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        return None, True
    with _IMAGES_LOCK:
        if url in _IMAGES:
            return _IMAGES[url], True
        if url in _FAILED:
            return None, False
    settings = services.settings
    with HttpFetcher(
        timeout=settings.verify_fetch_timeout,
        max_bytes=MAX_IMAGE_BYTES,
        allow_private=settings.verify_allow_private,
        allow_http_loopback=settings.verify_allow_private,
        user_agent="ob3-issuer",
    ) as fetcher:
        found = achievement_image(url, fetcher)
    with _IMAGES_LOCK:
        if found is None:
            _FAILED[url] = True
        else:
            _IMAGES[url] = found
    return found, found is not None


# ------------------------------------------------------------------------------------------------ plumbing


def _stored(services: Services, credential_id: str, *, with_template: bool = False) -> tuple[Credential, str | None]:
    """The credential, and (when asked) its achievement's certificate template, in one round trip."""
    with Session(services.engine) as session:
        if with_template:
            found = session.exec(
                select(Credential, Achievement.certificate_template)
                .join(Achievement, col(Achievement.id) == col(Credential.achievement_id))
                .where(Credential.id == credential_id)
            ).first()
            row, template = found if found is not None else (None, None)
        else:
            row, template = session.get(Credential, credential_id), None
    if row is None:
        raise NotFound(f"no credential {credential_id!r}")
    return row, template


def _achievement(document: dict[str, Any]) -> dict[str, Any]:
    subject = document.get("credentialSubject")
    subject = subject[0] if isinstance(subject, list) and subject else subject
    achievement = subject.get("achievement") if isinstance(subject, dict) else None
    return achievement if isinstance(achievement, dict) else {}


def _digest(row: Credential) -> str:
    """Changes whenever the signed document does (a re-issue re-signs it)."""
    canonical = json.dumps(row.document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _etag(key: tuple[str, ...]) -> str:
    return '"' + hashlib.sha256("\0".join(key).encode("utf-8")).hexdigest()[:32] + '"'


def _not_modified(request: Request[Any, Any, Any], key: tuple[str, ...]) -> bool:
    header = request.headers.get("if-none-match")
    return bool(header) and _etag(key) in {tag.strip().removeprefix("W/") for tag in str(header).split(",")}


def _response(
    body: bytes,
    key: tuple[str, ...],
    row: Credential,
    media_type: str,
    extension: str,
    *,
    status: int = 200,
    extra: dict[str, str] | None = None,
) -> Response[bytes]:
    name = re.sub(r"[^a-z0-9]+", "-", str(row.document.get("name", "credential")).lower()).strip("-")[:60]
    safe_id = re.sub(r"[^A-Za-z0-9._-]+", "-", row.id)
    headers = {
        "Content-Disposition": f'attachment; filename="{name or "credential"}-{safe_id}.{extension}"',
        "Cache-Control": "no-cache",
        "ETag": _etag(key),
        **(extra or {}),
    }
    return Response(body, media_type=media_type, headers=headers, status_code=status)
