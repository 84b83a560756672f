"""/api/v1/jobs: the outbox for operators: list jobs (the dead letters with `state=failed`), read one, retry one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, QueryParameter
from sqlmodel import Session

from .. import audit
from ..auth import require
from ..db.engine import session_scope
from ..db.tables import Job
from ..errors import NotFound
from ..services import ActorDep, ServicesDep
from . import jobs

JobState = Literal["pending", "running", "succeeded", "failed"]


def view(row: Job) -> dict[str, Any]:
    def when(moment: Any) -> str | None:
        return audit.iso_z(moment) if moment is not None else None

    return {
        "id": row.id,
        "kind": row.kind,
        "subject": row.subject,
        "dedupeKey": row.dedupe_key,
        "state": row.state,
        "attempts": row.attempts,
        "maxAttempts": row.max_attempts,
        "runAfter": when(row.run_after),
        "lockedBy": row.locked_by,
        "lockedUntil": when(row.locked_until),
        "lastError": row.last_error,
        "payload": row.payload,
        "result": row.result,
        "createdAt": when(row.created_at),
        "updatedAt": when(row.updated_at),
        "finishedAt": when(row.finished_at),
    }


class JobsController(Controller):
    path = "/api/v1/jobs"
    tags = ["jobs"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @get("/", guards=[require("admin")], sync_to_thread=True)
    def list_jobs(
        self,
        services: ServicesDep,
        job_state: Annotated[JobState | None, QueryParameter(name="state")] = None,  # `state` is Litestar's
        kind: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Newest first. `state=failed` lists the dead letters with their last error."""
        with Session(services.engine) as session:
            total, rows = jobs.list_jobs(session, state=job_state, kind=kind, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": [view(r) for r in rows]}

    @get("/{job_id:int}", guards=[require("admin")], sync_to_thread=True)
    def read(self, job_id: FromPath[int], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            row = session.get(Job, job_id)
        if row is None:
            raise NotFound(f"no job {job_id}")
        return view(row)

    @post("/{job_id:int}/retry", guards=[require("admin")], sync_to_thread=True, status_code=200)
    def retry(self, job_id: FromPath[int], services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
        """A failed job runs again soon with a fresh set of attempts (404 unknown, 409 not failed)."""
        with session_scope(services.engine) as session:
            row = jobs.retry(session, job_id)
            audit.append(
                session,
                actor=actor,
                action="job.retried",
                subject=f"job:{job_id}",
                data={"kind": row.kind, "job_subject": row.subject, "last_error": row.last_error},
            )
            return view(row)
