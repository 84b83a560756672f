"""/api/v1/issuers: issuer profiles. Each has its own did:web and keys; the default one is made by `issuer init`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, EmailStr
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from .. import audit
from ..auth import require
from ..db.engine import session_scope
from ..db.tables import Issuer
from ..errors import Conflict, NotFound
from ..keyring import ensure_keys
from ..profiles import did_for, profile_of
from ..services import ActorDep, Services, ServicesDep
from ..validation import LongText, Name, Slug, Url


class IssuerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Slug
    name: Name
    url: Url | None = None
    email: EmailStr | None = None
    description: LongText | None = None
    image: Url | None = None


class IssuerPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    url: Url | None = None
    email: EmailStr | None = None
    description: LongText | None = None
    image: Url | None = None


def view(services: Services, issuer: Issuer) -> dict[str, Any]:
    return {
        "id": issuer.id,
        "did": issuer.did,
        "default": issuer.is_default,
        "profile": profile_of(issuer),
        "url": f"{services.settings.base_url}/issuers/{issuer.id}",
    }


class IssuersController(Controller):
    path = "/api/v1/issuers"
    tags = ["issuers"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @post("/", guards=[require("admin")], sync_to_thread=True, status_code=201)
    def create(self, data: JSONBody[IssuerIn], services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
        try:
            with session_scope(services.engine) as session:
                if session.get(Issuer, data.id) is not None:
                    raise Conflict(f"issuer {data.id!r} already exists")
                issuer = Issuer(
                    id=data.id,
                    did=did_for(services.settings, data.id, default=False),
                    name=data.name,
                    url=data.url,
                    email=str(data.email) if data.email else None,
                    description=data.description,
                    image=data.image,
                )
                session.add(issuer)
                session.flush()
                keys = ensure_keys(session, issuer, services.master_key)
                audit.append(
                    session,
                    actor=actor,
                    action="issuer.created",
                    subject=issuer.id,
                    data={"did": issuer.did, "keys": [k.id for k in keys]},
                )
                return view(services, issuer)
        except IntegrityError:
            raise Conflict(f"issuer {data.id!r} already exists") from None

    @get("/", guards=[require("read")], sync_to_thread=True)
    def list_issuers(self, services: ServicesDep) -> list[dict[str, Any]]:
        with Session(services.engine) as session:
            return [view(services, i) for i in session.exec(select(Issuer).order_by(col(Issuer.created_at))).all()]

    @get("/{issuer_id:str}", guards=[require("read")], sync_to_thread=True)
    def read(self, issuer_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            issuer = session.get(Issuer, issuer_id)
        if issuer is None:
            raise NotFound(f"no issuer {issuer_id!r}")
        return view(services, issuer)

    @patch("/{issuer_id:str}", guards=[require("admin")], sync_to_thread=True)
    def update(
        self, issuer_id: FromPath[str], data: JSONBody[IssuerPatch], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        with session_scope(services.engine) as session:
            issuer = session.get(Issuer, issuer_id)
            if issuer is None:
                raise NotFound(f"no issuer {issuer_id!r}")
            changes = data.model_dump(exclude_unset=True, mode="json")
            if "name" in changes and changes["name"] is None:
                changes.pop("name")
            for field, value in changes.items():
                setattr(issuer, field, value)
            session.add(issuer)
            audit.append(
                session, actor=actor, action="issuer.updated", subject=issuer.id, data={"fields": sorted(changes)}
            )
            return view(services, issuer)
