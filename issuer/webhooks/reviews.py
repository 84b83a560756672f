"""The review queue: completions the rules held for a person. Approve issues (the audit log records who overrode
which findings, and which learner fields they corrected); reject declines with a reason the learner can be told.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy import update
from sqlmodel import Session, col, func, select

from .. import audit
from ..auth import require
from ..db.engine import session_scope
from ..db.tables import Achievement, Review, utcnow
from ..db.tables import CompletionEvent as EventRow
from ..delivery import declines
from ..errors import Conflict, NotFound, ValidationFailed
from ..issuance.credential import timestamp
from ..issuance.rules import AchievementRules
from ..services import ActorDep, Services, ServicesDep
from ..validation import LongText, Name
from .event import CompletionEvent
from .service import event_view, issue_for


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApproveIn(_Strict):
    """Optional corrections (a missing or mistyped name or email) and a note kept with the review."""

    note: LongText | None = Field(None, max_length=2000)
    email: EmailStr | None = None
    name: Name | None = None


class RejectIn(_Strict):
    reason: LongText = Field(max_length=2000)


def review_view(services: Services, review: Review, event: EventRow) -> dict[str, Any]:
    return {
        "id": review.id,
        "state": review.state,
        "achievement_id": review.achievement_id,
        "created_at": timestamp(review.created_at),
        "decided_by": review.decided_by,
        "decided_at": timestamp(review.decided_at) if review.decided_at else None,
        "reason": review.reason,
        "held_because": [
            f["detail"] for f in (event.decision or {}).get("findings", []) if f.get("status") == "review"
        ],
        "event": event_view(services, event, None),
    }


def _load(session: Session, review_id: str) -> tuple[Review, EventRow]:
    review = session.get(Review, review_id)
    if review is None:
        raise NotFound(f"no review {review_id!r}")
    event = session.get(EventRow, review.event_id)
    assert event is not None
    return review, event


class ReviewsController(Controller):
    path = "/api/v1/reviews"
    tags = ["lms"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @get("/", guards=[require("admin")], sync_to_thread=True)
    def list_reviews(
        self,
        services: ServicesDep,
        review_state: Annotated[
            Literal["pending", "approved", "rejected"] | None, QueryParameter(name="state")
        ] = "pending",
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> dict[str, Any]:
        conditions = [] if review_state is None else [col(Review.state) == review_state]
        with Session(services.engine) as session:
            total = session.exec(select(func.count()).select_from(Review).where(*conditions)).one()
            rows = session.exec(
                select(Review, EventRow)
                .join(EventRow, col(EventRow.id) == col(Review.event_id))
                .where(*conditions)
                .order_by(col(Review.created_at), col(Review.id))
                .offset(offset)
                .limit(limit)
            ).all()
            items = [review_view(services, review, event) for review, event in rows]
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @get("/{review_id:str}", guards=[require("admin")], sync_to_thread=True)
    def read_review(self, review_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            return review_view(services, *_load(session, review_id))

    @post("/{review_id:str}/approve", guards=[require("admin")], sync_to_thread=True, status_code=200)
    def approve(
        self, review_id: FromPath[str], data: JSONBody[ApproveIn], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        return approve(services, review_id, data, actor=actor)

    @post("/{review_id:str}/reject", guards=[require("admin")], sync_to_thread=True, status_code=200)
    def reject(
        self, review_id: FromPath[str], data: JSONBody[RejectIn], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        return reject(services, review_id, data.reason, actor=actor)


def approve(services: Services, review_id: str, data: ApproveIn, *, actor: str) -> dict[str, Any]:
    """Issue despite the findings that held it. The credential's idempotency key is the event's, so approving
    twice (or racing another reviewer) still makes one credential."""
    with Session(services.engine) as session:
        review, row = _load(session, review_id)
        achievement = session.get(Achievement, review.achievement_id)
        assert achievement is not None
    if review.state != "pending":
        raise Conflict(f"review {review_id} is already {review.state}")
    corrected = sorted(k for k in ("email", "name") if getattr(data, k) is not None)
    event = CompletionEvent.from_json(row.event)
    event = replace(event, email=str(data.email) if data.email else event.email, name=data.name or event.name)
    missing = [k for k in ("email", "name") if not getattr(event, k)]
    if missing:
        raise ValidationFailed(
            f"the learner has no {' or '.join(missing)}; give it in the approval",
            errors=[{"field": k, "message": "required to issue"} for k in missing],
        )
    rules = AchievementRules.model_validate(achievement.rules or {})
    credential = issue_for(services, row.id, event, review.achievement_id, rules, actor=actor).credential
    overrode = [
        {"criterion": f["criterion"], "status": f["status"]}
        for f in (row.decision or {}).get("findings", [])
        if f.get("status") != "met"
    ]
    now = utcnow()
    with session_scope(services.engine) as session:
        changed = session.exec(
            update(Review)
            .where(col(Review.id) == review_id, col(Review.state) == "pending")
            .values(state="approved", decided_by=actor, decided_at=now, reason=data.note)
        ).rowcount
        if changed == 1:
            decision = (row.decision or {}) | {
                "override": {"by": actor, "at": timestamp(now), "approved": True, "corrected": corrected},
            }
            session.exec(
                update(EventRow)
                .where(col(EventRow.id) == row.id, col(EventRow.state) == "held")
                .values(state="issued", credential_id=credential.id, decision=decision, decided_at=now)
            )
            audit.append(
                session,
                actor=actor,
                action="review.approved",
                subject=review_id,
                data={
                    "event": row.id,
                    "achievement": review.achievement_id,
                    "credential": credential.id,
                    "overrode": overrode,
                    "corrected": corrected,
                },
            )
    with Session(services.engine) as session:
        return review_view(services, *_load(session, review_id)) | {"credential_id": credential.id}


def reject(services: Services, review_id: str, reason: str, *, actor: str) -> dict[str, Any]:
    now = utcnow()
    with session_scope(services.engine) as session:
        review, row = _load(session, review_id)
        changed = session.exec(
            update(Review)
            .where(col(Review.id) == review_id, col(Review.state) == "pending")
            .values(state="rejected", decided_by=actor, decided_at=now, reason=reason)
        ).rowcount
        if changed != 1:
            raise Conflict(f"review {review_id} is already {review.state}")
        decision = (row.decision or {}) | {
            "override": {"by": actor, "at": timestamp(now), "approved": False, "reason": reason},
        }
        session.exec(
            update(EventRow)
            .where(col(EventRow.id) == row.id, col(EventRow.state) == "held")
            .values(state="declined", decision=decision, decided_at=now)
        )
        audit.append(
            session,
            actor=actor,
            action="review.rejected",
            subject=review_id,
            data={"event": row.id, "achievement": review.achievement_id, "reason": reason},
        )
        declines.enqueue_decline_email(session, services.settings, row.id, row.event)  # the learner is told why
    with Session(services.engine) as session:
        return review_view(services, *_load(session, review_id))
