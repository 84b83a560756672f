"""Issuing: dedupe, build, sign, self-verify, store and audit, in one transaction per credential.

The same service serves the admin API, batches, the CLI and (later) LMS events.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from verifier import VerifyOptions, verify_credential
from verifier.suites import eddsa_rdfc_2022, vc_jwt

from .. import audit
from ..achievements.schemas import to_ob3
from ..db.engine import session_scope
from ..db.tables import Achievement, Credential, Issuer, StatusList, utcnow
from ..delivery import mailer
from ..errors import Conflict, IdempotencyMismatch, IssuerError, NotFound, SigningFailed, ValidationFailed
from ..keyring import active_signers
from ..profiles import profile_of
from ..publication import LocalFetcher
from ..settings import Settings
from .credential import Recipient, build_credential, status_entry, timestamp
from .schemas import IssueRequest

STATUS_LIST_SIZE = 131_072
_INDEX_ATTEMPTS = 32


@dataclass(frozen=True)
class Issued:
    credential: Credential
    replayed: bool = False


@dataclass(frozen=True)
class RowOutcome:
    """One batch row: `credential` when issued, else `error` (a sentence saying what is wrong)."""

    row: int
    credential: Credential | None = None
    error: str | None = None
    replayed: bool = False


class IssuanceService:
    def __init__(
        self, engine: Engine, settings: Settings, master_key: bytes, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.master_key = master_key
        self.clock = clock

    # ------------------------------------------------------------------------------------------ one credential

    def issue(
        self,
        request: IssueRequest,
        *,
        actor: str,
        idempotency_key: str | None = None,
        learner_key: str | None = None,
    ) -> Issued:
        """`learner_key` (LMS automation): at most one active credential per learner and achievement; a second one
        raises IntegrityError from the index one_active_credential_per_learner (the caller answers it)."""
        fingerprint = _fingerprint(request)
        for _attempt in range(_INDEX_ATTEMPTS):
            if idempotency_key is not None:
                with Session(self.engine) as session:
                    existing = session.exec(
                        select(Credential).where(Credential.idempotency_key == idempotency_key)
                    ).first()
                if existing is not None:
                    return self._replay(existing, fingerprint)
            # Everything slow (reads, building, signing, self-verification) happens before the write transaction,
            # which then holds SQLite's write lock (or PostgreSQL's audit lock) only for the inserts and the commit.
            row, audit_data = self._prepare(
                request, idempotency_key=idempotency_key, fingerprint=fingerprint, learner_key=learner_key
            )
            try:
                with session_scope(self.engine) as session:
                    session.add(row)
                    session.flush()
                    audit.append(session, actor=actor, action="credential.issued", subject=row.id, data=audit_data)
                    mailer.enqueue_credential_email(session, self.settings, row)  # none when email is off
                return Issued(row)
            except IntegrityError as error:
                message = str(error.orig).lower()
                if idempotency_key is not None and ("idempotency" in message or self._taken(idempotency_key)):
                    # A concurrent twin with the same key committed first: answer with its credential. (SQLite
                    # names only the first constraint it trips, which may be the one-per-learner index.)
                    continue
                if "status" in message:
                    continue  # that status index was taken a moment ago: draw another and sign again
                raise
        raise SigningFailed("could not find a free status index; the status list is nearly full")

    def _taken(self, idempotency_key: str) -> bool:
        with Session(self.engine) as session:
            found = session.exec(select(Credential.id).where(Credential.idempotency_key == idempotency_key)).first()
        return found is not None

    def _replay(self, existing: Credential, fingerprint: str) -> Issued:
        if existing.request_hash != fingerprint:
            raise IdempotencyMismatch("this Idempotency-Key was already used for a different request")
        return Issued(existing, replayed=True)

    def _prepare(
        self, request: IssueRequest, *, idempotency_key: str | None, fingerprint: str, learner_key: str | None
    ) -> tuple[Credential, dict[str, Any]]:
        """The signed, self-verified credential row to insert, and its audit data. Reads only."""
        status_list = self._open_status_list(request.achievement_id)
        with Session(self.engine) as session:
            achievement = session.get(Achievement, request.achievement_id)
            if achievement is None:
                raise ValidationFailed(
                    f"achievement_id {request.achievement_id!r} does not exist",
                    errors=[{"field": "achievement_id", "message": "no such achievement"}],
                )
            issuer = session.get(Issuer, achievement.issuer_id)
            assert issuer is not None
            now = self.clock()
            valid_until = request.valid_until
            if valid_until is None and achievement.valid_for_days:
                valid_until = now + timedelta(days=achievement.valid_for_days)
            if valid_until is not None and valid_until <= now:
                raise ValidationFailed(
                    "valid_until must be in the future",
                    errors=[{"field": "valid_until", "message": "must be in the future"}],
                )
            credential_id = str(uuid.uuid4())
            recipient = Recipient(
                name=request.recipient.name,
                email=str(request.recipient.email) if request.recipient.email else None,
                did=request.recipient.did,
            )
            wanted = request.format or ("both" if self.settings.jwt_by_default else "ldp")
            index = secrets.randbelow(status_list.size)
            unsigned = build_credential(
                credential_id=self.credential_url(credential_id),
                issuer=profile_of(issuer),
                achievement=to_ob3(self.achievement_url(achievement.id), achievement.data),
                recipient=recipient,
                salt=secrets.token_hex(8),
                valid_from=now,
                valid_until=valid_until,
                status_entry=status_entry(self.status_list_url(status_list), index),
                results=[r.model_dump(exclude_none=True) for r in request.results or []],
                evidence=[e.model_dump(exclude_none=True) for e in request.evidence or []],
            )
            document, token = self._sign(session, issuer, unsigned, wanted, now)
        row = Credential(
            id=credential_id,
            issuer_id=issuer.id,
            achievement_id=achievement.id,
            recipient_name=recipient.name,
            recipient_email=recipient.email,
            recipient_did=recipient.did,
            document=document,
            jwt=token,
            status_list_id=status_list.id,  # type: ignore[arg-type]
            status_index=index,
            valid_from=now,
            valid_until=valid_until,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            learner_key=learner_key,
        )
        audit_data = {
            "achievement": achievement.id,
            "issuer": issuer.id,
            "format": wanted,
            "status_list": status_list.id,
            "status_index": index,
            "recipient": "did" if recipient.did else "email",
        }
        return row, audit_data

    def _sign(
        self, session: Session, issuer: Issuer, unsigned: dict[str, Any], wanted: str, now: datetime
    ) -> tuple[dict[str, Any], str | None]:
        signers = active_signers(session, issuer, self.master_key)
        document = eddsa_rdfc_2022.sign(unsigned, signers.ed25519, created=now)
        token = (
            vc_jwt.sign_jwt(document, signers.jwt_key, kid=signers.jwt_kid, alg=signers.jwt_alg)
            if wanted != "ldp"
            else None
        )
        options = VerifyOptions(
            now=now,
            fetcher=LocalFetcher(session, self.settings, self.master_key),
            allow_http_loopback=True,
            check_status=False,
            strict_keys=True,
        )
        for label, signed in (("Data Integrity", document), ("VC-JWT", token)):
            if signed is None:
                continue
            report = verify_credential(signed, options)
            if not report.verified:
                failed = next(c for c in report.checks if c.status.value in ("failed", "error"))
                raise SigningFailed(f"the {label} credential did not verify: {failed.id}: {failed.detail}")
        return document, token

    def _open_status_list(self, achievement_id: str) -> StatusList:
        """The issuer's current list, or a new one once it is half full (random draws stay cheap, collisions rare).

        Opening a list is its own short write; two processes opening one at once just make two lists."""
        with Session(self.engine) as session:
            achievement = session.get(Achievement, achievement_id)
            if achievement is None:
                raise ValidationFailed(
                    f"achievement_id {achievement_id!r} does not exist",
                    errors=[{"field": "achievement_id", "message": "no such achievement"}],
                )
            issuer_id = achievement.issuer_id
            current = session.exec(
                select(StatusList).where(StatusList.issuer_id == issuer_id).order_by(col(StatusList.id).desc())
            ).first()
            if current is not None:
                used = session.exec(select(func.count()).where(Credential.status_list_id == current.id)).one()
                if used < current.size // 2:
                    return current
        with session_scope(self.engine) as session:
            fresh = StatusList(issuer_id=issuer_id, size=STATUS_LIST_SIZE)
            session.add(fresh)
            session.flush()
            return fresh

    def reissue(self, credential_id: str, *, actor: str) -> Credential:
        """Same id, status entry, recipient and results; the issuer's and achievement's current wording; a new
        validFrom (OB 3.0: the newer validFrom wins) with the first award kept as awardedDate; a fresh proof."""
        with session_scope(self.engine) as session:
            row = session.get(Credential, credential_id)
            if row is None:
                raise NotFound(f"no credential {credential_id!r}")
            if row.revoked_at is not None:
                raise Conflict("this credential is revoked; re-issuing it is refused")
            if row.valid_until is not None and row.valid_until <= self.clock():
                raise Conflict("this credential has expired; issue a new one with a new valid_until")
            issuer = session.get(Issuer, row.issuer_id)
            achievement = session.get(Achievement, row.achievement_id)
            assert issuer is not None and achievement is not None
            now = self.clock()
            document = {k: v for k, v in row.document.items() if k != "proof"}
            document["awardedDate"] = document.get("awardedDate") or document["validFrom"]
            document["validFrom"] = timestamp(now)
            document["issuer"] = profile_of(issuer)
            document["credentialSubject"] = {
                **document["credentialSubject"],
                "achievement": to_ob3(self.achievement_url(achievement.id), achievement.data),
            }
            document["name"] = achievement.data["name"]
            signed, token = self._sign(session, issuer, document, "both" if row.jwt else "ldp", now)
            row.document, row.jwt, row.valid_from, row.updated_at = signed, token, now, now
            session.add(row)
            audit.append(
                session,
                actor=actor,
                action="credential.reissued",
                subject=row.id,
                data={"valid_from": timestamp(now), "achievement": achievement.id},
            )
            return row

    # ------------------------------------------------------------------------------------------ many

    def issue_batch(
        self, rows: list[dict[str, Any]], *, actor: str, defaults: dict[str, Any] | None = None
    ) -> list[RowOutcome]:
        """Each row is validated and issued on its own: one bad row never blocks the others."""
        outcomes = []
        for number, raw in enumerate(rows, start=1):
            key = raw.pop("idempotency_key", None) if isinstance(raw, dict) else None
            shared = {k: v for k, v in (defaults or {}).items() if k != "idempotency_key"}
            try:
                request = IssueRequest.model_validate({**shared, **raw} if isinstance(raw, dict) else raw)
                issued = self.issue(request, actor=actor, idempotency_key=key)
                outcomes.append(RowOutcome(number, issued.credential, replayed=issued.replayed))
            except ValidationError as error:
                outcomes.append(RowOutcome(number, error=_explain(error)))
            except IssuerError as error:  # client errors and server faults alike stay with their row
                outcomes.append(RowOutcome(number, error=error.detail))
        return outcomes

    # ------------------------------------------------------------------------------------------ URLs

    def credential_url(self, credential_id: str) -> str:
        return f"{self.settings.base_url}/credentials/{credential_id}"

    def achievement_url(self, achievement_id: str) -> str:
        return f"{self.settings.base_url}/achievements/{achievement_id}"

    def status_list_url(self, status_list: StatusList) -> str:
        return f"{self.settings.base_url}/status/{status_list.id}"


def _fingerprint(request: IssueRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _explain(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )
