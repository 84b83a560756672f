"""events ignored for an unmapped course (before 0003's `unmapped` state) wait for their mapping, or are decided

Before revision 0003 an event whose course had no mapping was concluded `ignored`, and creating the mapping later
did nothing for it. Such events now become `unmapped` (creating the mapping re-queues them), or, when their course
has been mapped since, go back to `received` with a fresh decision job.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_REASON = "is not mapped to an achievement on source"

events = sa.table(
    "completion_events",
    sa.column("id", sa.String),
    sa.column("source_id", sa.String),
    sa.column("event", sa.JSON),
    sa.column("state", sa.String),
    sa.column("decision", sa.JSON),
    sa.column("decided_at", UTCDateTime()),
)
mappings = sa.table("course_mappings", sa.column("source_id", sa.String), sa.column("course_id", sa.String))
jobs = sa.table(
    "jobs",
    sa.column("kind", sa.String),
    sa.column("subject", sa.String),
    sa.column("dedupe_key", sa.String),
    sa.column("payload", sa.JSON),
    sa.column("state", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("max_attempts", sa.Integer),
    sa.column("run_after", UTCDateTime()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    connection = op.get_bind()
    mapped = {
        (source, course) for source, course in connection.execute(sa.select(mappings.c.source_id, mappings.c.course_id))
    }
    ignored = connection.execute(
        sa.select(events.c.id, events.c.source_id, events.c.event, events.c.decision).where(events.c.state == "ignored")
    ).all()
    now = datetime.now(UTC).replace(microsecond=0)
    for event_id, source_id, event, decision in ignored:
        decision, event = _json(decision) or {}, _json(event) or {}
        if decision.get("outcome") != "ignored" or _OLD_REASON not in str(decision.get("reason", "")):
            continue  # ignored for another reason (a duplicate, a removed achievement): that decision stands
        course_id = str(event.get("course_id"))
        if (source_id, course_id) in mapped:
            connection.execute(
                events.update().where(events.c.id == event_id).values(state="received", decision=None, decided_at=None)
            )
            connection.execute(
                jobs.insert().values(
                    kind="process_completion",
                    subject=event_id,
                    dedupe_key=f"completion:{event_id}:0004",
                    payload={"event_id": event_id},
                    state="pending",
                    attempts=0,
                    max_attempts=8,
                    run_after=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            reason = (
                f"course {course_id!r} is not mapped to an achievement on source {source_id!r}; "
                "the event waits and is decided when the mapping is created"
            )
            connection.execute(
                events.update()
                .where(events.c.id == event_id)
                .values(state="unmapped", decision={"outcome": "unmapped", "reason": reason, "course_id": course_id})
            )


def downgrade() -> None:
    """Nothing to undo: `unmapped` events stay waiting (0003's code knows the state)."""
