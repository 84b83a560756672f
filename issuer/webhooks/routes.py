"""`POST /webhooks/{source}` (LMS deliveries) and the admin API for sources, course mappings and events.

A delivery is authenticated by its source's adapter before anything is stored; a forged, unsigned or stale one
gets 401 and changes nothing. A genuine one is stored with its job and answered 202 with the event id, so the
LMS's timeout (10-15 s) is never at risk: deciding and signing happen in the background job.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from .. import audit
from ..auth import require
from ..blocking import run_blocking
from ..db.engine import reader, session_scope
from ..db.rows import models_of, select_models
from ..db.tables import Achievement, CourseMapping, LmsSource, Review
from ..db.tables import CompletionEvent as EventRow
from ..errors import Conflict, NotFound, ValidationFailed
from ..issuance.credential import timestamp
from ..services import ActorDep, Services, ServicesDep
from ..validation import ShortText, Slug
from . import inline
from .adapters import Inbound, Unauthenticated, adapter_for, registry
from .service import accept, event_view, mapping_of, open_secrets, requeue_unmapped, seal_secrets, source_of
from .talentlms import interval_of, schedule

log = logging.getLogger("issuer.webhooks")

WEBHOOK_MAX_BYTES = 256 * 1024  # Docebo's 25-event groups are a few kB; nothing legitimate comes near this
PLATFORMS = ("moodle", "canvas", "teachable", "thinkific", "docebo", "openedx", "generic", "talentlms")
Platform = Literal["moodle", "canvas", "teachable", "thinkific", "docebo", "openedx", "generic", "talentlms"]
Secret = Annotated[str, Field(min_length=16, max_length=512)]
NEEDS_SECRET = ("moodle", "teachable", "thinkific", "docebo", "openedx", "generic")
EventState = Literal["received", "issued", "held", "declined", "ignored", "unmapped", "failed"]


# --------------------------------------------------------------------------------------------- deliveries


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["lms"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @post("/{source_id:str}", request_max_body_size=WEBHOOK_MAX_BYTES, include_in_schema=True)
    async def receive(
        self, source_id: FromPath[str], request: Request[Any, Any, Any], services: ServicesDep
    ) -> Response[dict[str, Any]]:
        """Authenticate, normalize, store: 202 with the event id (200 for a duplicate or an ignored event)."""
        inbound = Inbound(
            body=await request.body(),
            headers={k.lower(): v for k, v in request.headers.items()},
            query={k: v for k, v in request.query_params.items()},
        )
        return await run_blocking(services.engine, receive, services, source_id, inbound)


_SOURCE = select_models(LmsSource).where(col(LmsSource.id) == bindparam("b_source"))  # built once


def receive(services: Services, source_id: str, inbound: Inbound) -> Response[dict[str, Any]]:
    with reader(services.engine).connect() as connection:  # a read-only snapshot, no ORM session (hot path)
        found = connection.execute(_SOURCE, {"b_source": source_id}).first()
    row: LmsSource | None = models_of(found, LmsSource)[0] if found is not None else None
    if row is None or not row.enabled or row.platform not in registry():
        raise NotFound(f"no webhook source {source_id!r}")
    source = source_of(services.master_key, row)
    try:
        parsed = adapter_for(row.platform).receive(inbound, source, services.issuance.clock())
    except Unauthenticated as error:
        log.warning("webhook %s refused: %s", source_id, error.detail)
        raise
    if not parsed.events:
        return Response({"status": "ignored", "reason": parsed.ignored}, status_code=200)
    now = inline.admit(services, len(parsed.events))  # decide here, right after the 202, when this process may
    try:
        accepted = accept(services, parsed.events, defer=inline.GRACE if now else None)
    except BaseException:
        if now:
            inline.release(len(parsed.events))
        raise
    if now:
        inline.release(sum(1 for a in accepted if a.duplicate))
        inline.submit(services, [(a.row, source) for a in accepted if a.row is not None])
    fresh = any(not a.duplicate for a in accepted)
    first = accepted[0].event_id
    body = {
        "status": "accepted" if fresh else "duplicate",
        "id": first,
        "events": [{"id": a.event_id, "duplicate": a.duplicate} for a in accepted],
    }
    return Response(body, status_code=202 if fresh else 200, headers={"Location": f"/api/v1/lms/events/{first}"})


# --------------------------------------------------------------------------------------------- sources


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceIn(_Strict):
    """A webhook source. Secrets are write-only: they are sealed at rest and never returned."""

    id: Slug
    platform: Platform
    secrets: list[Secret] = Field(default_factory=list, max_length=5, description="current first; others in rotation")
    signing_secrets: list[Secret] = Field(default_factory=list, max_length=5, description="Teachable HMAC keys")
    api_token: Secret | None = Field(None, description="the LMS API token, for enrichment or polling")
    config: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @model_validator(mode="after")
    def _complete(self) -> SourceIn:
        check_source(self.platform, self.config, self.secrets, self.signing_secrets, self.api_token)
        return self


class SourcePatch(_Strict):
    """Only the fields given change; `secrets` given replace all secrets (rotation: send new and old)."""

    secrets: list[Secret] | None = Field(None, min_length=1, max_length=5)
    signing_secrets: list[Secret] | None = Field(None, max_length=5)
    api_token: Secret | None = None
    config: dict[str, Any] | None = None
    enabled: bool | None = None


def check_source(
    platform: str, config: dict[str, Any], secrets: list[str], signing: list[str], api_token: str | None
) -> None:
    """Refuse a configuration that could never authenticate a delivery (or poll), naming what is missing."""

    def fail(field: str, message: str) -> None:
        raise ValueError(f"{field}: {message}")

    if platform in NEEDS_SECRET and not secrets:
        fail("secrets", f"a {platform} source needs at least one secret")
    age = config.get("max_age_seconds")
    if age is not None and (not isinstance(age, int | float) or isinstance(age, bool) or not 1 <= age <= 7 * 86400):
        fail("config.max_age_seconds", "must be a number of seconds from 1 to 604800")
    if platform == "canvas":
        keys = config.get("jwks", {}).get("keys") if isinstance(config.get("jwks"), dict) else None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) and k.get("kid") for k in keys):
            fail("config.jwks", "Canvas needs its key set ({'keys': [...]}, each key with a kid)")
    if platform == "generic":
        scheme = config.get("scheme", "standard")
        if scheme not in ("standard", "stripe"):
            fail("config.scheme", "must be standard or stripe")
        if scheme == "standard":
            for secret in secrets:
                try:
                    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
                except (binascii.Error, ValueError):
                    raw = b""
                if not 24 <= len(raw) <= 64:
                    fail("secrets", "Standard Webhooks secrets are whsec_ + base64 of 24 to 64 random bytes")
    if platform == "teachable" and config.get("signature_header") and not signing:
        fail("signing_secrets", "signature_header is set, so the HMAC key is needed")
    if platform == "talentlms" and (not (config.get("domain") or config.get("base_url")) or not api_token):
        fail("config", "TalentLMS needs config.domain (or base_url) and api_token")


def source_view(services: Services, row: LmsSource) -> dict[str, Any]:
    sealed = open_secrets(services.master_key, row)
    return {
        "id": row.id,
        "platform": row.platform,
        "enabled": row.enabled,
        "config": row.config,
        "webhook_url": None if row.platform == "talentlms" else f"{services.settings.base_url}/webhooks/{row.id}",
        "secrets_configured": len(sealed.get("secrets") or ()),
        "signing_secrets_configured": len(sealed.get("signing_secrets") or ()),
        "api_token_configured": bool(sealed.get("api_token")),
        "cursor": row.cursor,
        "created_at": timestamp(row.created_at),
    }


class MappingIn(_Strict):
    course_id: ShortText = Field(min_length=1, max_length=255)
    achievement_id: str = Field(min_length=1, max_length=64)


def mapping_view(row: CourseMapping) -> dict[str, Any]:
    return {
        "id": row.id,
        "source_id": row.source_id,
        "course_id": row.course_id,
        "achievement_id": row.achievement_id,
        "created_at": timestamp(row.created_at),
    }


def _source(session: Session, source_id: str) -> LmsSource:
    row = session.get(LmsSource, source_id)
    if row is None:
        raise NotFound(f"no LMS source {source_id!r}")
    return row


class LmsController(Controller):
    path = "/api/v1/lms"
    tags = ["lms"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @post("/sources", guards=[require("admin")], sync_to_thread=True, status_code=201)
    def create_source(self, data: JSONBody[SourceIn], services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
        values = {"secrets": data.secrets, "signing_secrets": data.signing_secrets, "api_token": data.api_token}
        row = LmsSource(
            id=data.id,
            platform=data.platform,
            config=data.config,
            enabled=data.enabled,
            encrypted_secret=seal_secrets(services.master_key, data.id, values),
        )
        try:
            with session_scope(services.engine) as session:
                session.add(row)
                session.flush()
                if row.platform == "talentlms" and row.enabled:
                    schedule(session, row.id, interval_of(row))
                audit.append(
                    session, actor=actor, action="lms.source.created", subject=row.id, data={"platform": row.platform}
                )
        except IntegrityError:
            raise Conflict(f"a source {data.id!r} exists already") from None
        return source_view(services, row)

    @get("/sources", guards=[require("admin")], sync_to_thread=True)
    def list_sources(self, services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            rows = session.exec(select(LmsSource).order_by(col(LmsSource.id))).all()
            return {"items": [source_view(services, r) for r in rows]}

    @get("/sources/{source_id:str}", guards=[require("admin")], sync_to_thread=True)
    def read_source(self, source_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            return source_view(services, _source(session, source_id))

    @patch("/sources/{source_id:str}", guards=[require("admin")], sync_to_thread=True)
    def update_source(
        self, source_id: FromPath[str], data: JSONBody[SourcePatch], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        with session_scope(services.engine) as session:
            row = _source(session, source_id)
            values = open_secrets(services.master_key, row)
            for name in ("secrets", "signing_secrets", "api_token"):
                if name in data.model_fields_set:
                    values[name] = getattr(data, name)
            config = data.config if data.config is not None else row.config
            try:
                check_source(
                    row.platform,
                    config,
                    values.get("secrets") or [],
                    values.get("signing_secrets") or [],
                    values.get("api_token"),
                )
            except ValueError as error:
                field = str(error).split(":", 1)[0]
                raise ValidationFailed(str(error), errors=[{"field": field, "message": str(error)}]) from None
            row.config = config
            if data.enabled is not None:
                row.enabled = data.enabled
            row.encrypted_secret = seal_secrets(services.master_key, row.id, values)
            session.add(row)
            if row.platform == "talentlms" and row.enabled:
                schedule(session, row.id, interval_of(row))  # (re)starts polling; the slot dedupes a running chain
            audit.append(
                session,
                actor=actor,
                action="lms.source.updated",
                subject=row.id,
                data={"fields": sorted(data.model_fields_set)},
            )
            return source_view(services, row)

    # ----------------------------------------------------------------------------------------- mappings

    @get("/sources/{source_id:str}/mappings", guards=[require("admin")], sync_to_thread=True)
    def list_mappings(self, source_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            _source(session, source_id)
            rows = session.exec(
                select(CourseMapping).where(CourseMapping.source_id == source_id).order_by(col(CourseMapping.course_id))
            ).all()
            return {"items": [mapping_view(r) for r in rows]}

    @post("/sources/{source_id:str}/mappings", guards=[require("admin")], sync_to_thread=True, status_code=201)
    def create_mapping(
        self, source_id: FromPath[str], data: JSONBody[MappingIn], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        """The mapping, and `requeued_events`: the ids of the events of this course that were waiting for it
        (state `unmapped`), now queued to be decided, in the same transaction."""
        try:
            with session_scope(services.engine) as session:
                mapping_of(session, source_id, data.course_id, lock="update")  # orders this against parking
                _source(session, source_id)
                if session.get(Achievement, data.achievement_id) is None:
                    raise ValidationFailed(
                        f"achievement_id {data.achievement_id!r} does not exist",
                        errors=[{"field": "achievement_id", "message": "no such achievement"}],
                    )
                row = CourseMapping(source_id=source_id, course_id=data.course_id, achievement_id=data.achievement_id)
                session.add(row)
                session.flush()
                audit.append(
                    session,
                    actor=actor,
                    action="lms.mapping.created",
                    subject=source_id,
                    data={"course": row.course_id, "achievement": row.achievement_id},
                )
                requeued = requeue_unmapped(session, row, actor=actor)
                return mapping_view(row) | {"requeued_events": requeued}
        except IntegrityError:
            raise Conflict(f"course {data.course_id!r} is already mapped on source {source_id!r}") from None

    @delete("/sources/{source_id:str}/mappings/{mapping_id:int}", guards=[require("admin")], sync_to_thread=True)
    def delete_mapping(
        self, source_id: FromPath[str], mapping_id: FromPath[int], services: ServicesDep, actor: ActorDep
    ) -> None:
        with session_scope(services.engine) as session:
            row = session.get(CourseMapping, mapping_id)
            if row is None or row.source_id != source_id:
                raise NotFound(f"no mapping {mapping_id} on source {source_id!r}")
            session.delete(row)
            audit.append(
                session,
                actor=actor,
                action="lms.mapping.deleted",
                subject=source_id,
                data={"course": row.course_id, "achievement": row.achievement_id},
            )

    # ----------------------------------------------------------------------------------------- events

    @get("/events", guards=[require("admin")], sync_to_thread=True)
    def list_events(
        self,
        services: ServicesDep,
        source_id: FromQuery[str | None] = None,
        event_state: Annotated[EventState | None, QueryParameter(name="state")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> dict[str, Any]:
        conditions = []
        if source_id is not None:
            conditions.append(col(EventRow.source_id) == source_id)
        if event_state is not None:
            conditions.append(col(EventRow.state) == event_state)
        with Session(services.engine) as session:
            total = session.exec(select(func.count()).select_from(EventRow).where(*conditions)).one()
            rows = session.exec(
                select(EventRow)
                .where(*conditions)
                .order_by(col(EventRow.received_at).desc(), col(EventRow.id))
                .offset(offset)
                .limit(limit)
            ).all()
            reviews = _reviews_of(session, [r.id for r in rows])
            items = [event_view(services, r, reviews.get(r.id)) for r in rows]
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @get("/events/{event_id:str}", guards=[require("admin")], sync_to_thread=True)
    def read_event(self, event_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            row = session.get(EventRow, event_id)
            if row is None:
                raise NotFound(f"no completion event {event_id!r}")
            return event_view(services, row, _reviews_of(session, [row.id]).get(row.id))


def _reviews_of(session: Session, event_ids: list[str]) -> dict[str, Review]:
    if not event_ids:
        return {}
    rows = session.exec(select(Review).where(col(Review.event_id).in_(event_ids))).all()
    return {r.event_id: r for r in rows}
