"""indexes that let "which credentials does this learner hold" read only the learner's own entries

Deciding an LMS completion asks which of the achievements at stake the learner already holds, by learner key or
by email (`webhooks/service.py`, `_learner_credentials`). PostgreSQL's planner answered both branches through
indexes led by the achievement (on every fresh database, before statistics): the email branch through the
achievement's index, reading every credential of the achievement, and the learner branch through the whole of
one_active_credential_per_learner (achievement, learner). Each decision cost more as a cohort grew (1 ms at 1,000
credentials). Now: an index on (lower(email), achievement), replacing the one on the email alone (it serves
lookups by email too), and one_active_credential_per_learner with the learner first (the same uniqueness).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_ACTIVE = sa.text("learner_key IS NOT NULL AND revoked_at IS NULL")


def _one_active_per_learner(columns: list[str]) -> None:
    op.drop_index("one_active_credential_per_learner", table_name="credentials")
    op.create_index(
        "one_active_credential_per_learner",
        "credentials",
        columns,
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def upgrade() -> None:
    op.create_index(
        "credentials_email_achievement", "credentials", [sa.text("lower(recipient_email)"), "achievement_id"]
    )
    op.drop_index("credentials_recipient_email_lower", table_name="credentials")
    _one_active_per_learner(["learner_key", "achievement_id"])


def downgrade() -> None:
    _one_active_per_learner(["achievement_id", "learner_key"])
    op.create_index("credentials_recipient_email_lower", "credentials", [sa.text("lower(recipient_email)")])
    op.drop_index("credentials_email_achievement", table_name="credentials")
