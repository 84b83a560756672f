"""/api/v1/achievements: create, read, list, update."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlmodel import Session, col, func, select

from .. import audit
from ..auth import require
from ..db.engine import session_scope
from ..db.tables import Achievement, utcnow
from ..errors import NotFound, ValidationFailed
from ..issuance.credential import timestamp
from ..profiles import get_issuer
from ..services import ActorDep, ServicesDep
from .schemas import AchievementIn, AchievementPatch, stored_fields, to_ob3


def view(services: ServicesDep, row: Achievement) -> dict[str, Any]:
    url = f"{services.settings.base_url}/achievements/{row.id}"
    return {
        "id": row.id,
        "url": url,
        "issuerId": row.issuer_id,
        "validForDays": row.valid_for_days,
        "rules": row.rules,
        "achievement": to_ob3(url, row.data),
        "createdAt": timestamp(row.created_at),
        "updatedAt": timestamp(row.updated_at),
    }


class AchievementsController(Controller):
    path = "/api/v1/achievements"
    tags = ["achievements"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @post("/", guards=[require("admin")], sync_to_thread=True, status_code=201)
    def create(self, data: JSONBody[AchievementIn], services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
        with session_scope(services.engine) as session:
            issuer = get_issuer(session, data.issuerId)
            row = Achievement(
                id=uuid.uuid4().hex[:16],
                issuer_id=issuer.id,
                name=data.name,
                data=stored_fields(data),
                valid_for_days=data.validForDays,
                rules=data.rules.to_json() if data.rules else None,
            )
            session.add(row)
            session.flush()
            audit.append(
                session,
                actor=actor,
                action="achievement.created",
                subject=row.id,
                data={"name": row.name, "issuer": issuer.id},
            )
            return view(services, row)

    @get("/", guards=[require("read")], sync_to_thread=True)
    def list_achievements(
        self,
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> dict[str, Any]:
        with Session(services.engine) as session:
            total = session.exec(select(func.count()).select_from(Achievement)).one()
            rows = session.exec(
                select(Achievement)
                .order_by(col(Achievement.created_at), col(Achievement.id))
                .offset(offset)
                .limit(limit)
            ).all()
            return {"total": total, "limit": limit, "offset": offset, "items": [view(services, r) for r in rows]}

    @get("/{achievement_id:str}", guards=[require("read")], sync_to_thread=True)
    def read(self, achievement_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            row = session.get(Achievement, achievement_id)
            if row is None:
                raise NotFound(f"no achievement {achievement_id!r}")
            return view(services, row)

    @patch("/{achievement_id:str}", guards=[require("admin")], sync_to_thread=True)
    def update(
        self, achievement_id: FromPath[str], data: JSONBody[AchievementPatch], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        with session_scope(services.engine) as session:
            row = session.get(Achievement, achievement_id)
            if row is None:
                raise NotFound(f"no achievement {achievement_id!r}")
            changes = stored_fields(data)
            for required in ("name", "description", "criteria"):
                if required in changes and changes[required] is None:
                    raise ValidationFailed(
                        f"{required} cannot be removed", errors=[{"field": required, "message": "required"}]
                    )
            row.data = {**row.data, **changes}
            if "name" in changes:
                row.name = changes["name"]
            if "validForDays" in data.model_fields_set:
                row.valid_for_days = data.validForDays
            if "rules" in data.model_fields_set:
                row.rules = data.rules.to_json() if data.rules else None
            row.updated_at = utcnow()
            session.add(row)
            audit.append(
                session,
                actor=actor,
                action="achievement.updated",
                subject=row.id,
                data={"fields": sorted(data.model_fields_set)},
            )
            return view(services, row)
