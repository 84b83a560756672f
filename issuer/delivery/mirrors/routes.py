"""The mirror endpoints: an achievement's mapping (`GET`/`PUT /api/v1/achievements/{id}/mirror`) and a
credential's failed mirrors queued again (`POST /api/v1/credentials/{id}/mirror/retry`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post, put
from litestar.params import FromPath, JSONBody
from sqlmodel import Session

from ... import audit
from ...auth import require
from ...db.engine import session_scope
from ...db.tables import Achievement, utcnow
from ...errors import NotFound
from ...services import ActorDep, ServicesDep
from . import service
from .mapping import SERVICES, MirrorMapping


def mapping_view(services: ServicesDep, row: Achievement) -> dict[str, Any]:
    on = service.configured(services.settings)
    return {
        "achievement_id": row.id,
        "mirror": row.mirror,
        "configured": {name: name in on for name in SERVICES},  # which services have a token set
    }


class MirrorsController(Controller):
    path = "/api/v1"
    tags = ["mirrors"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @get("/achievements/{achievement_id:str}/mirror", guards=[require("read")], sync_to_thread=True)
    def read_mapping(self, achievement_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            row = session.get(Achievement, achievement_id)
        if row is None:
            raise NotFound(f"no achievement {achievement_id!r}")
        return mapping_view(services, row)

    @put("/achievements/{achievement_id:str}/mirror", guards=[require("admin")], sync_to_thread=True)
    def set_mapping(
        self, achievement_id: FromPath[str], data: JSONBody[MirrorMapping], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        """Replaces the mapping (`{}` or nulls: not mirrored). Credentials issued from now on follow it."""
        with session_scope(services.engine) as session:
            row = session.get(Achievement, achievement_id)
            if row is None:
                raise NotFound(f"no achievement {achievement_id!r}")
            before, row.mirror, row.updated_at = row.mirror, data.to_json(), utcnow()
            session.add(row)
            audit.append(
                session,
                actor=actor,
                action="achievement.mirror_set",
                subject=row.id,
                data={"before": before, "after": row.mirror},
            )
            return mapping_view(services, row)

    @post(
        "/credentials/{credential_id:str}/mirror/retry", guards=[require("admin")], sync_to_thread=True, status_code=200
    )
    def retry(self, credential_id: FromPath[str], services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
        """The credential's failed mirrors go back to `pending` with a job each (404 unknown, 409 none failed)."""
        with session_scope(services.engine) as session:
            service.retry(session, credential_id, actor=actor)
        return {"id": credential_id, "mirrors": service.views(services.engine, credential_id)}
