"""Public documents, no authentication: DID documents, JWKS, credentials, profiles, achievements, status lists."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.params import FromPath
from sqlmodel import Session, select

from ..achievements.schemas import to_ob3
from ..db.tables import Achievement, Credential, Issuer
from ..errors import NotAcceptable, NotFound
from ..profiles import profile_of
from ..publication import installation_jwks, issuer_did_document
from ..services import ServicesDep
from ..status.service import TTL_MS, list_etag, signed_status_list
from .page import render_credential_page

_CACHE_SHORT = {"Cache-Control": "public, max-age=300"}
_JSON_TYPES = ("application/ld+json", "application/vc+ld+json", "application/json")
_JWT_TYPES = ("application/jwt", "application/vc+jwt", "text/plain")


class PublicController(Controller):
    tags = ["public"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @get("/.well-known/did.json", sync_to_thread=True)
    def default_did(self, services: ServicesDep) -> Response[dict[str, Any]]:
        with Session(services.engine) as session:
            issuer = session.exec(select(Issuer).where(Issuer.is_default == True)).first()  # noqa: E712
            if issuer is None:
                raise NotFound("this installation has no default issuer yet")
            return Response(
                issuer_did_document(session, issuer), media_type="application/did+json", headers=_CACHE_SHORT
            )

    @get("/issuers/{issuer_id:str}/did.json", sync_to_thread=True)
    def issuer_did(self, issuer_id: FromPath[str], services: ServicesDep) -> Response[dict[str, Any]]:
        with Session(services.engine) as session:
            issuer = session.get(Issuer, issuer_id)
            if issuer is None or issuer.is_default:
                raise NotFound(f"no issuer {issuer_id!r} with a path-based DID")
            return Response(
                issuer_did_document(session, issuer), media_type="application/did+json", headers=_CACHE_SHORT
            )

    @get("/.well-known/jwks.json", sync_to_thread=True)
    def jwks(self, services: ServicesDep) -> Response[dict[str, Any]]:
        with Session(services.engine) as session:
            return Response(installation_jwks(session), media_type="application/jwk-set+json", headers=_CACHE_SHORT)

    @get("/issuers/{issuer_id:str}", sync_to_thread=True)
    def issuer_profile(self, issuer_id: FromPath[str], services: ServicesDep) -> Response[dict[str, Any]]:
        with Session(services.engine) as session:
            issuer = session.get(Issuer, issuer_id)
        if issuer is None:
            raise NotFound(f"no issuer {issuer_id!r}")
        profile = {
            "@context": [
                "https://www.w3.org/ns/credentials/v2",
                "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
            ],
            **profile_of(issuer),
        }
        return Response(profile, media_type="application/ld+json", headers=_CACHE_SHORT)

    @get("/achievements/{achievement_id:str}", sync_to_thread=True)
    def achievement(self, achievement_id: FromPath[str], services: ServicesDep) -> Response[dict[str, Any]]:
        with Session(services.engine) as session:
            row = session.get(Achievement, achievement_id)
        if row is None:
            raise NotFound(f"no achievement {achievement_id!r}")
        url = f"{services.settings.base_url}/achievements/{row.id}"
        body = {
            "@context": [
                "https://www.w3.org/ns/credentials/v2",
                "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
            ],
            **to_ob3(url, row.data),
        }
        return Response(body, media_type="application/ld+json", headers=_CACHE_SHORT)

    @get("/status/{list_id:int}", sync_to_thread=True)
    def status_list(
        self, list_id: FromPath[int], services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        """The signed list, with an ETag and a max-age equal to its ttl; 304 when the client's copy is current."""
        headers = {"Cache-Control": f"public, max-age={TTL_MS // 1000}"}
        with Session(services.engine) as session:
            etag = list_etag(session, list_id)[3]
            if etag in _etags(request.headers.get("if-none-match")):
                return Response(None, status_code=304, headers=headers | {"ETag": etag})
            signed = signed_status_list(session, services.settings, services.master_key, list_id)
        return Response(signed.body, media_type="application/vc+ld+json", headers=headers | {"ETag": signed.etag})

    @get("/credentials/{credential_id:str}", sync_to_thread=True)
    def credential(
        self, credential_id: FromPath[str], services: ServicesDep, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        with Session(services.engine) as session:
            row = session.get(Credential, credential_id)
        if row is None:
            raise NotFound(f"no credential {credential_id!r}")
        offered = [*_JSON_TYPES, "text/html", *(_JWT_TYPES if row.jwt else ())]
        accept = request.headers.get("accept", "").strip()
        chosen = request.accept.best_match(offered) if accept and accept != "*/*" else "application/ld+json"
        headers = {"Vary": "Accept", "Cache-Control": "no-cache"}
        if chosen is None:
            raise NotAcceptable(
                "this credential is available as application/ld+json, application/json, text/html"
                + (", application/jwt and text/plain" if row.jwt else "")
            )
        if chosen in _JWT_TYPES:
            return Response(row.jwt, media_type=chosen, headers=headers)
        if chosen == "text/html":
            return render_credential_page(services, credential_id, headers=headers)
        return Response(row.document, media_type=chosen, headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
