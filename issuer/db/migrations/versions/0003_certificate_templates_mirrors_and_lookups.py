"""certificate templates, mirrors, re-issue links and learner lookups

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirrors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("credential_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("service", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("synced_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["credential_id"], ["credentials.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id", "service", name="one_mirror_per_service"),
    )
    with op.batch_alter_table("mirrors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mirrors_credential_id"), ["credential_id"], unique=False)

    with op.batch_alter_table("achievements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("certificate_template", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("mirror", sa.JSON(), nullable=True))

    with op.batch_alter_table("completion_events", schema=None) as batch_op:
        batch_op.create_index("completion_events_by_state", ["source_id", "state"], unique=False)

    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replaces_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_foreign_key("credentials_replaces_fk", "credentials", ["replaces_id"], ["id"])
        batch_op.create_index("credentials_learner_key", ["learner_key"], unique=False)
    # Expression index (autogenerate cannot see these): prerequisite checks match emails case-insensitively.
    op.create_index("credentials_recipient_email_lower", "credentials", [sa.text("lower(recipient_email)")])


def downgrade() -> None:
    op.drop_index("credentials_recipient_email_lower", table_name="credentials")
    with op.batch_alter_table("credentials", schema=None) as batch_op:
        batch_op.drop_index("credentials_learner_key")
        batch_op.drop_constraint("credentials_replaces_fk", type_="foreignkey")
        batch_op.drop_column("replaces_id")

    with op.batch_alter_table("completion_events", schema=None) as batch_op:
        batch_op.drop_index("completion_events_by_state")

    with op.batch_alter_table("achievements", schema=None) as batch_op:
        batch_op.drop_column("mirror")
        batch_op.drop_column("certificate_template")

    with op.batch_alter_table("mirrors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mirrors_credential_id"))
    op.drop_table("mirrors")
