"""The tables. Uniqueness that matters (idempotency keys, status indexes, one active key) is a constraint here,
never an application check, so concurrent requests and several processes cannot break it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint, column, func, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Issuer(SQLModel, table=True):
    __tablename__ = "issuers"
    __table_args__ = (
        Index(
            "one_default_issuer",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    id: str = Field(primary_key=True, max_length=64)  # slug: path segment of its did:web
    did: str = Field(unique=True, max_length=512)
    name: str = Field(max_length=500)
    url: str | None = Field(default=None, max_length=2000)
    email: str | None = Field(default=None, max_length=320)
    description: str | None = Field(default=None, sa_column=Column(Text))
    image: str | None = Field(default=None, max_length=2000)
    is_default: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class SigningKey(SQLModel, table=True):
    __tablename__ = "signing_keys"
    __table_args__ = (
        Index(
            "one_active_key_per_issuer_and_algorithm",
            "issuer_id",
            "algorithm",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=64)  # the DID URL fragment, e.g. "ed25519-3f9a…"
    issuer_id: str = Field(foreign_key="issuers.id", index=True, max_length=64)
    algorithm: str = Field(max_length=16)  # Ed25519 | RS256 | ES256
    status: str = Field(default="active", max_length=16)  # active | retired | compromised
    public_jwk: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    public_key_multibase: str | None = Field(default=None, max_length=200)
    encrypted_private_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    retired_at: datetime | None = None
    compromised_at: datetime | None = None


class Achievement(SQLModel, table=True):
    __tablename__ = "achievements"

    id: str = Field(primary_key=True, max_length=64)
    issuer_id: str = Field(foreign_key="issuers.id", index=True, max_length=64)
    name: str = Field(max_length=500)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # the OB3 Achievement fields as given
    valid_for_days: int | None = None
    rules: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # issuance rules for LMS events
    # An uploaded certificate template (HTML with inline CSS, rendered in the Jinja sandbox); none = the default.
    certificate_template: str | None = Field(default=None, sa_column=Column(Text))
    # Where its credentials are mirrored: {"credly": {"organization_id", "badge_template_id"},
    # "accredible": {"group_id"}}; none = not mirrored.
    mirror: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StatusList(SQLModel, table=True):
    __tablename__ = "status_lists"

    id: int | None = Field(default=None, primary_key=True)
    issuer_id: str = Field(foreign_key="issuers.id", index=True, max_length=64)
    purpose: str = Field(default="revocation", max_length=16)
    size: int = 131_072
    created_at: datetime = Field(default_factory=utcnow)


class Credential(SQLModel, table=True):
    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("status_list_id", "status_index", name="one_owner_per_status_index"),
        # A learner holds at most one active credential per achievement when it comes from automation (the
        # learner key is set only then, and only when the achievement does not allow repeats).
        Index(  # learner first: "what does this learner hold" finds their entries without a full index scan (0005)
            "one_active_credential_per_learner",
            "learner_key",
            "achievement_id",
            unique=True,
            sqlite_where=text("learner_key IS NOT NULL AND revoked_at IS NULL"),
            postgresql_where=text("learner_key IS NOT NULL AND revoked_at IS NULL"),
        ),
        # Prerequisite checks and "what does this learner hold" look credentials up by learner, and by email and
        # achievement (one index on both, or PostgreSQL may scan all of an achievement's credentials: 0005).
        Index("credentials_learner_key", "learner_key"),
        Index("credentials_email_achievement", func.lower(column("recipient_email")), "achievement_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    issuer_id: str = Field(foreign_key="issuers.id", index=True, max_length=64)
    achievement_id: str = Field(foreign_key="achievements.id", index=True, max_length=64)
    learner_key: str | None = Field(default=None, max_length=128)
    recipient_name: str | None = Field(default=None, max_length=500)
    recipient_email: str | None = Field(default=None, max_length=320)  # for delivery only; erasable
    recipient_did: str | None = Field(default=None, max_length=2000)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    jwt: str | None = Field(default=None, sa_column=Column(Text))
    status_list_id: int = Field(foreign_key="status_lists.id")
    status_index: int
    valid_from: datetime
    valid_until: datetime | None = None
    idempotency_key: str | None = Field(default=None, unique=True, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    revoked_at: datetime | None = None
    revocation_reason: str | None = Field(default=None, max_length=1000)
    # Set on a credential issued anew in place of a revoked one (revocation itself is never undone).
    replaces_id: str | None = Field(default=None, foreign_key="credentials.id", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)  # the public prefix of the token
    name: str = Field(max_length=200)
    secret_hash: str = Field(max_length=64)  # sha256 of the whole token (tokens are 256-bit random)
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class AuditRecord(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64, index=True)
    subject: str | None = Field(default=None, max_length=512, index=True)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(unique=True, max_length=64)


# ---------------------------------------------------------------------------------------------- background jobs


class Job(SQLModel, table=True):
    """Outbox rows written in the same transaction as what caused them (a credential, a decision).

    `dedupe_key` is unique, so enqueueing the same follow-up twice (a retried request, a re-run) makes one job.
    A worker claims a job by setting `locked_until` (a lease); a crashed worker's lease runs out and another
    worker takes the job over, so every job runs until it succeeds or is dead-lettered, never lost.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("jobs_ready", "state", "run_after"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64, index=True)
    subject: str | None = Field(default=None, max_length=128, index=True)
    dedupe_key: str = Field(unique=True, max_length=255)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="pending", max_length=16)  # pending | running | succeeded | failed
    attempts: int = 0
    max_attempts: int = 8
    run_after: datetime = Field(default_factory=utcnow)
    locked_by: str | None = Field(default=None, max_length=128)
    locked_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


# ---------------------------------------------------------------------------------------------- LMS automation


class LmsSource(SQLModel, table=True):
    """One configured webhook source (`POST /webhooks/{id}`): its platform, secret and settings."""

    __tablename__ = "lms_sources"

    id: str = Field(primary_key=True, max_length=64)
    platform: str = Field(
        max_length=32
    )  # moodle | canvas | teachable | thinkific | docebo | openedx | generic | talentlms
    encrypted_secret: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    cursor: str | None = Field(default=None, max_length=255)  # pollers: where the last poll stopped
    created_at: datetime = Field(default_factory=utcnow)


class CourseMapping(SQLModel, table=True):
    __tablename__ = "course_mappings"
    __table_args__ = (UniqueConstraint("source_id", "course_id", name="one_mapping_per_course"),)

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(foreign_key="lms_sources.id", max_length=64)
    course_id: str = Field(max_length=255)
    achievement_id: str = Field(foreign_key="achievements.id", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class CompletionEvent(SQLModel, table=True):
    """A normalized completion, stored before it is answered (202). `(source, external_id)` is unique: a
    duplicate delivery finds the first one instead of making a second credential."""

    __tablename__ = "completion_events"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id", name="one_event_per_delivery"),
        Index("completion_events_by_state", "source_id", "state"),
    )

    id: str = Field(primary_key=True, max_length=64)
    source_id: str = Field(foreign_key="lms_sources.id", max_length=64)
    external_id: str = Field(max_length=255)
    event: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default="received", max_length=16)  # received | issued | held | declined | ignored | failed
    decision: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    credential_id: str | None = Field(default=None, foreign_key="credentials.id", max_length=64)
    received_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None


class Review(SQLModel, table=True):
    """A held completion awaiting a person: approve (issues) or reject (with a reason)."""

    __tablename__ = "reviews"

    id: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(foreign_key="completion_events.id", unique=True, max_length=64)
    achievement_id: str = Field(foreign_key="achievements.id", max_length=64)
    state: str = Field(default="pending", max_length=16)  # pending | approved | rejected
    reason: str | None = Field(default=None, sa_column=Column(Text))
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------------------------------------- mirrors


class Mirror(SQLModel, table=True):
    """A copy of one of our credentials on Credly or Accredible. Ours stays the source of truth; this row says
    what the mirror holds: its id there, its state (pending | mirrored | failed | removed) and the last error."""

    __tablename__ = "mirrors"
    __table_args__ = (UniqueConstraint("credential_id", "service", name="one_mirror_per_service"),)

    id: int | None = Field(default=None, primary_key=True)
    credential_id: str = Field(foreign_key="credentials.id", index=True, max_length=64)
    service: str = Field(max_length=16)  # credly | accredible
    external_id: str | None = Field(default=None, max_length=255)
    state: str = Field(default="pending", max_length=16)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    synced_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
