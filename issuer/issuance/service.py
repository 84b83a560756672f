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
from sqlalchemy import Engine, bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from verifier import VerifyOptions, verify_credential
from verifier.suites import eddsa_rdfc_2022, vc_jwt

from .. import audit
from ..achievements.schemas import to_ob3
from ..db.engine import reader, session_scope
from ..db.rows import insert_row, models_of, select_models
from ..db.tables import Achievement, Credential, Issuer, utcnow
from ..delivery import mailer, mirrors, reminders
from ..errors import (
    Conflict,
    CredentialRevoked,
    IdempotencyMismatch,
    IssuerError,
    NotFound,
    SigningFailed,
    ValidationFailed,
)
from ..keyring import SigningMaterial, key_listing_column, key_listing_of, signing_material
from ..profiles import did_document_path, profile_of
from ..publication import LocalFetcher
from ..settings import Settings
from ..status.allocation import OpenList, StatusListChooser
from .credential import Recipient, build_credential, status_entry, timestamp
from .schemas import IssueRequest

_INDEX_ATTEMPTS = 32
BATCH_CHUNK = 100  # batch rows written per transaction
_BY_IDEMPOTENCY_KEY = select(Credential).where(col(Credential.idempotency_key) == bindparam("key"))
_ACHIEVEMENT_AND_ISSUER = {  # per dialect, built once: constructing the statement costs more than running it
    dialect: select_models(Achievement, Issuer)
    .add_columns(key_listing_column(dialect))
    .join(Issuer, col(Issuer.id) == col(Achievement.issuer_id))
    .where(col(Achievement.id) == bindparam("achievement"))
    for dialect in ("sqlite", "postgresql")
}


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
        self.status_lists = StatusListChooser(engine)

    # ------------------------------------------------------------------------------------------ one credential

    def issue(
        self,
        request: IssueRequest,
        *,
        actor: str,
        idempotency_key: str | None = None,
        learner_key: str | None = None,
        within: Callable[[Session, Credential], None] | None = None,
        looked_up: bool = False,
    ) -> Issued:
        """`learner_key` (LMS automation): at most one active credential per learner and achievement; a second one
        raises IntegrityError from the index one_active_credential_per_learner (the caller answers it).

        `within(session, credential)` runs inside the credential's own write transaction (an LMS event's decision
        is recorded with the credential it produced: one transaction, one commit); whatever it raises undoes the
        credential too. It does not run when an earlier credential is answered instead (`replayed`).
        `looked_up`: the caller has just found no credential with this idempotency key, so the first attempt skips
        that query (a twin committing meanwhile is still caught by the unique constraint and answered)."""
        fingerprint = _fingerprint(request)
        for attempt in range(_INDEX_ATTEMPTS):
            if idempotency_key is not None and not (looked_up and attempt == 0):
                with Session(reader(self.engine)) as session:
                    existing = session.exec(_BY_IDEMPOTENCY_KEY, params={"key": idempotency_key}).first()
                if existing is not None:
                    return self._replay(existing, fingerprint)
            # Everything slow (reads, building, signing, self-verification) happens before the write transaction,
            # which then holds SQLite's write lock (or PostgreSQL's audit lock) only for the inserts and the commit.
            row, audit_data = self._prepare(
                request, idempotency_key=idempotency_key, fingerprint=fingerprint, learner_key=learner_key
            )
            try:
                with session_scope(self.engine) as session:
                    self._write(session, row, audit_data, actor=actor, within=within)
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

    def _write(
        self,
        session: Session,
        row: Credential,
        audit_data: dict[str, Any],
        *,
        actor: str,
        within: Callable[[Session, Credential], None] | None = None,
    ) -> None:
        """The credential, the jobs that follow it, the caller's `within` and the audit record, in the caller's
        transaction. The audit record comes last: on PostgreSQL appending takes the audit chain's lock, which
        every writer then waits for until this transaction commits, so nothing else should run while it is held."""
        insert_row(session, row)
        mailer.enqueue_credential_email(session, self.settings, row)  # none when email is off
        mirrors.enqueue(session, self.settings, row, action="issue")  # none unless mapped and configured
        reminders.enqueue_renewal_reminders(session, self.settings, row)  # none without validUntil
        if within is not None:
            within(session, row)
        audit.append(session, actor=actor, action="credential.issued", subject=row.id, data=audit_data)

    def _taken(self, idempotency_key: str) -> bool:
        with Session(self.engine) as session:
            found = session.exec(select(Credential.id).where(Credential.idempotency_key == idempotency_key)).first()
        return found is not None

    def _replay(self, existing: Credential, fingerprint: str) -> Issued:
        if existing.request_hash != fingerprint:
            raise IdempotencyMismatch("this Idempotency-Key was already used for a different request")
        return Issued(existing, replayed=True)

    def _prepare(
        self,
        request: IssueRequest,
        *,
        idempotency_key: str | None,
        fingerprint: str,
        learner_key: str | None,
        taken: set[tuple[int, int]] | None = None,
    ) -> tuple[Credential, dict[str, Any]]:
        """The signed, self-verified credential row to insert, and its audit data. Reads only (and opens a status
        list when the current one is half full). One query, for the achievement with its issuer and the listing of
        the issuer's published keys (signers and the DID document to verify against), and, now and then, one for
        the current status list."""
        with Session(reader(self.engine)) as session:
            statement = _ACHIEVEMENT_AND_ISSUER[self.engine.dialect.name]
            pair = session.connection().execute(statement, {"achievement": request.achievement_id}).first()
            if pair is None:
                raise ValidationFailed(
                    f"achievement_id {request.achievement_id!r} does not exist",
                    errors=[{"field": "achievement_id", "message": "no such achievement"}],
                )
            achievement: Achievement
            issuer: Issuer
            achievement, issuer = models_of(pair, Achievement, Issuer)
            keys = signing_material(session, issuer, self.master_key, listing=key_listing_of(pair.key_listing))
            status_list = self.status_lists.current(session, issuer.id) or self.status_lists.open(issuer.id)
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
            while taken is not None and (status_list.id, index) in taken:  # drawn by another row of a batch
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
            document, token = self._sign(session, issuer, keys, unsigned, wanted, now)
        row = Credential(
            id=credential_id,
            issuer_id=issuer.id,
            achievement_id=achievement.id,
            recipient_name=recipient.name,
            recipient_email=recipient.email,
            recipient_did=recipient.did,
            document=document,
            jwt=token,
            status_list_id=status_list.id,
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
        self,
        session: Session,
        issuer: Issuer,
        keys: SigningMaterial,
        unsigned: dict[str, Any],
        wanted: str,
        now: datetime,
    ) -> tuple[dict[str, Any], str | None]:
        """Sign, then verify the result as any verifier would: against the DID document built from the very key
        rows the signers came from (what this installation publishes at that moment), with strict keys."""
        signers = keys.signers
        document = eddsa_rdfc_2022.sign(unsigned, signers.ed25519, created=now)
        token = (
            vc_jwt.sign_jwt(document, signers.jwt_key, kid=signers.jwt_kid, alg=signers.jwt_alg)
            if wanted != "ldp"
            else None
        )
        options = VerifyOptions(
            now=now,
            fetcher=LocalFetcher(
                session,
                self.settings,
                self.master_key,
                preloaded={did_document_path(self.settings, issuer): keys.did_document},
            ),
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

    def reissue(
        self, credential_id: str, *, actor: str, valid_until: datetime | None = None, replace_revoked: bool = False
    ) -> Issued:
        """Same id, status entry, recipient and results; the issuer's and achievement's current wording; a new
        validFrom (OB 3.0: the newer validFrom wins) with the first award kept as awardedDate; a fresh proof.
        `valid_until` renews it. A revoked credential is refused unless `replace_revoked` (see `replace`)."""
        now = self.clock()
        if valid_until is not None and valid_until <= now:
            raise ValidationFailed(
                "valid_until must be in the future",
                errors=[{"field": "valid_until", "message": "must be in the future"}],
            )
        with Session(reader(self.engine)) as session:
            current = session.get(Credential, credential_id)
        if current is None:
            raise NotFound(f"no credential {credential_id!r}")
        if current.revoked_at is not None and replace_revoked:
            return self.replace(current, actor=actor, valid_until=valid_until)
        with session_scope(self.engine) as session:
            row = session.get(Credential, credential_id)
            assert row is not None  # credentials are never deleted
            if row.revoked_at is not None:
                raise CredentialRevoked(
                    "this credential is revoked, and revocation cannot be undone (its status list bit stays set); "
                    'send {"replace_revoked": true} to issue a new credential in its place'
                )
            if valid_until is None and row.valid_until is not None and row.valid_until <= now:
                raise Conflict("this credential has expired; send a new valid_until to renew it")
            issuer = session.get(Issuer, row.issuer_id)
            achievement = session.get(Achievement, row.achievement_id)
            assert issuer is not None and achievement is not None
            document = self._refreshed(row.document, issuer, achievement, now, valid_until or row.valid_until)
            keys = signing_material(session, issuer, self.master_key)
            signed, token = self._sign(session, issuer, keys, document, "both" if row.jwt else "ldp", now)
            row.document, row.jwt, row.valid_from, row.updated_at = signed, token, now, now
            row.valid_until = valid_until or row.valid_until
            session.add(row)
            audit.append(
                session,
                actor=actor,
                action="credential.reissued",
                subject=row.id,
                data={
                    "valid_from": timestamp(now),
                    "valid_until": timestamp(row.valid_until) if row.valid_until else None,
                    "achievement": achievement.id,
                },
            )
            reminders.enqueue_renewal_reminders(session, self.settings, row)  # a new validUntil: new ones
            mirrors.enqueue(session, self.settings, row, action="reissue")  # the mirrors follow (expiry too)
            return Issued(row)

    def replace(self, revoked: Credential, *, actor: str, valid_until: datetime | None = None) -> Issued:
        """A new credential (new id, new status entry) in place of a revoked one, for the same recipient, results
        and evidence; `replaces_id` links them and the revoked one stays revoked. Replacing the same credential
        again answers with the first replacement (its idempotency key is derived from the revoked id)."""
        key = f"replaces:{revoked.id}"
        for _attempt in range(_INDEX_ATTEMPTS):
            with Session(reader(self.engine)) as session:
                existing = session.exec(select(Credential).where(Credential.idempotency_key == key)).first()
                if existing is not None:
                    return Issued(existing, replayed=True)
                issuer = session.get(Issuer, revoked.issuer_id)
                achievement = session.get(Achievement, revoked.achievement_id)
                assert issuer is not None and achievement is not None
                now = self.clock()
                until = valid_until or (
                    revoked.valid_until if revoked.valid_until and revoked.valid_until > now else None
                )
                if until is None and achievement.valid_for_days:
                    until = now + timedelta(days=achievement.valid_for_days)
                status_list = self.status_lists.current(session, issuer.id) or self.status_lists.open(issuer.id)
                index = secrets.randbelow(status_list.size)
                credential_id = str(uuid.uuid4())
                document = self._refreshed(revoked.document, issuer, achievement, now, until)
                document["id"] = self.credential_url(credential_id)
                document["credentialStatus"] = status_entry(self.status_list_url(status_list), index)
                keys = signing_material(session, issuer, self.master_key)
                signed, token = self._sign(session, issuer, keys, document, "both" if revoked.jwt else "ldp", now)
            row = Credential(
                id=credential_id,
                issuer_id=issuer.id,
                achievement_id=achievement.id,
                learner_key=revoked.learner_key,
                recipient_name=revoked.recipient_name,
                recipient_email=revoked.recipient_email,
                recipient_did=revoked.recipient_did,
                document=signed,
                jwt=token,
                status_list_id=status_list.id,
                status_index=index,
                valid_from=now,
                valid_until=until,
                idempotency_key=key,
                request_hash=None,
                replaces_id=revoked.id,
            )
            try:
                with session_scope(self.engine) as session:
                    insert_row(session, row)
                    audit.append(
                        session,
                        actor=actor,
                        action="credential.replaced",
                        subject=row.id,
                        data={"replaces": revoked.id, "status_list": status_list.id, "status_index": index},
                    )
                    mailer.enqueue_credential_email(session, self.settings, row)
                    reminders.enqueue_renewal_reminders(session, self.settings, row)
                    mirrors.enqueue(session, self.settings, row, action="issue")
                return Issued(row)
            except IntegrityError as error:
                if "status" in str(error.orig).lower() or self._taken(key):
                    continue  # index taken (draw again) or a concurrent replacement won (answer with it)
                raise
        raise SigningFailed("could not find a free status index; the status list is nearly full")

    def _refreshed(
        self,
        document: dict[str, Any],
        issuer: Issuer,
        achievement: Achievement,
        now: datetime,
        valid_until: datetime | None,
    ) -> dict[str, Any]:
        """The unsigned document of a re-issue: current issuer and achievement wording, a new validFrom, the first
        award kept as awardedDate, the given validUntil."""
        refreshed = {k: v for k, v in document.items() if k not in ("proof", "validUntil")}
        refreshed["awardedDate"] = refreshed.get("awardedDate") or refreshed["validFrom"]
        refreshed["validFrom"] = timestamp(now)
        if valid_until is not None:
            refreshed["validUntil"] = timestamp(valid_until)
        refreshed["issuer"] = profile_of(issuer)
        refreshed["credentialSubject"] = {
            **refreshed["credentialSubject"],
            "achievement": to_ob3(self.achievement_url(achievement.id), achievement.data),
        }
        refreshed["name"] = achievement.data["name"]
        return refreshed

    # ------------------------------------------------------------------------------------------ many

    def issue_batch(
        self, rows: list[dict[str, Any]], *, actor: str, defaults: dict[str, Any] | None = None
    ) -> list[RowOutcome]:
        """Each row is validated and issued on its own: one bad row never blocks the others. Valid rows are signed
        one by one and written `BATCH_CHUNK` to a transaction (one commit, one audit lock, instead of one each)."""
        outcomes: dict[int, RowOutcome] = {}
        valid: list[tuple[int, IssueRequest, str | None]] = []
        shared = {k: v for k, v in (defaults or {}).items() if k != "idempotency_key"}
        for number, raw in enumerate(rows, start=1):
            key = raw.pop("idempotency_key", None) if isinstance(raw, dict) else None
            try:
                request = IssueRequest.model_validate({**shared, **raw} if isinstance(raw, dict) else raw)
            except ValidationError as error:
                outcomes[number] = RowOutcome(number, error=_explain(error))
                continue
            valid.append((number, request, key))
        for start in range(0, len(valid), BATCH_CHUNK):
            for outcome in self._issue_chunk(valid[start : start + BATCH_CHUNK], actor=actor):
                outcomes[outcome.row] = outcome
        return [outcomes[number] for number in sorted(outcomes)]

    def _issue_chunk(self, chunk: list[tuple[int, IssueRequest, str | None]], *, actor: str) -> list[RowOutcome]:
        """Rows with an Idempotency-Key go through `issue` (they may be replays); the others are prepared, then
        written in one transaction. If anything in it conflicts (a status index another request took meanwhile),
        the transaction is undone and those rows are issued one at a time: nothing is lost or doubled."""
        outcomes: list[RowOutcome] = []
        prepared: list[tuple[int, IssueRequest, Credential, dict[str, Any]]] = []
        taken: set[tuple[int, int]] = set()
        for number, request, key in chunk:
            if key is not None:
                outcomes.append(self._one(number, request, actor=actor, key=key))
                continue
            try:
                row, audit_data = self._prepare(
                    request, idempotency_key=None, fingerprint=_fingerprint(request), learner_key=None, taken=taken
                )
            except IssuerError as error:
                outcomes.append(RowOutcome(number, error=error.detail))
                continue
            taken.add((row.status_list_id, row.status_index))
            prepared.append((number, request, row, audit_data))
        if not prepared:
            return outcomes
        prepared = self._redraw_taken(prepared, taken)
        try:
            with session_scope(self.engine) as session:
                for _, _, row, audit_data in prepared:
                    self._write(session, row, audit_data, actor=actor)
        except IntegrityError:
            return outcomes + [self._one(number, request, actor=actor) for number, request, _, _ in prepared]
        return outcomes + [RowOutcome(number, row) for number, _, row, _ in prepared]

    def _redraw_taken(
        self, prepared: list[tuple[int, IssueRequest, Credential, dict[str, Any]]], taken: set[tuple[int, int]]
    ) -> list[tuple[int, IssueRequest, Credential, dict[str, Any]]]:
        """Rows whose random status index is already used in the database draw (and sign) again before the write:
        with a few thousand credentials in a list, 100 random draws hit a used index more often than not, and one
        hit would undo the whole chunk. (A credential issued concurrently can still collide: then the fallback.)"""
        for _round in range(_INDEX_ATTEMPTS):
            drawn: dict[int, list[int]] = {}
            for _, _, row, _ in prepared:
                drawn.setdefault(row.status_list_id, []).append(row.status_index)
            with Session(reader(self.engine)) as session:
                used = {
                    (list_id, index)
                    for list_id, indexes in drawn.items()
                    for index in session.exec(
                        select(Credential.status_index).where(
                            col(Credential.status_list_id) == list_id, col(Credential.status_index).in_(indexes)
                        )
                    ).all()
                }
            if not used:
                return prepared
            taken |= used
            redone = []
            for number, request, row, audit_data in prepared:
                if (row.status_list_id, row.status_index) in used:
                    row, audit_data = self._prepare(
                        request, idempotency_key=None, fingerprint=_fingerprint(request), learner_key=None, taken=taken
                    )
                    taken.add((row.status_list_id, row.status_index))
                redone.append((number, request, row, audit_data))
            prepared = redone
        return prepared

    def _one(self, number: int, request: IssueRequest, *, actor: str, key: str | None = None) -> RowOutcome:
        try:
            issued = self.issue(request, actor=actor, idempotency_key=key)
        except IssuerError as error:  # client errors and server faults alike stay with their row
            return RowOutcome(number, error=error.detail)
        return RowOutcome(number, issued.credential, replayed=issued.replayed)

    # ------------------------------------------------------------------------------------------ URLs

    def credential_url(self, credential_id: str) -> str:
        return f"{self.settings.base_url}/credentials/{credential_id}"

    def achievement_url(self, achievement_id: str) -> str:
        return f"{self.settings.base_url}/achievements/{achievement_id}"

    def status_list_url(self, status_list: OpenList) -> str:
        return f"{self.settings.base_url}/status/{status_list.id}"


def _fingerprint(request: IssueRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _explain(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )
