"""/api/v1/credentials: issue one, issue a batch (JSON array or CSV), read one."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, JSONBody
from sqlmodel import Session

from ..auth import require
from ..blocking import run_blocking
from ..db.engine import session_scope
from ..db.tables import Credential
from ..delivery import mirrors
from ..errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from ..services import ActorDep, ServicesDep
from ..status.service import revoke
from .credential import timestamp
from .schemas import IssueRequest, ReissueRequest, RevokeRequest

CSV_COLUMNS = ("achievement_id", "email", "name", "did", "valid_until", "idempotency_key")


def credential_view(services: ServicesDep, row: Credential, *, include: str = "both") -> dict[str, Any]:
    base = services.settings.base_url
    view: dict[str, Any] = {
        "id": row.id,
        "url": f"{base}/credentials/{row.id}",
        "urls": {
            "json": f"{base}/credentials/{row.id}",
            "jwt": f"{base}/credentials/{row.id}" if row.jwt else None,
            "page": f"{base}/c/{row.id}",
        },
        "achievement_id": row.achievement_id,
        "issuer_id": row.issuer_id,
        "valid_from": timestamp(row.valid_from),
        "valid_until": timestamp(row.valid_until) if row.valid_until else None,
        "revoked": row.revoked_at is not None,
        "revoked_at": timestamp(row.revoked_at) if row.revoked_at else None,
        "revocation_reason": row.revocation_reason,
    }
    if include == "jwt":
        view["credential"] = row.jwt
    else:
        view["credential"] = row.document
        if row.jwt:
            view["jwt"] = row.jwt
    return view


class CredentialsController(Controller):
    path = "/api/v1/credentials"
    tags = ["credentials"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @post("/", guards=[require("issue")])
    async def issue(
        self, data: JSONBody[IssueRequest], services: ServicesDep, actor: ActorDep, request: Request[Any, Any, Any]
    ) -> Response[dict[str, Any]]:
        key = request.headers.get("idempotency-key")
        if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
            raise BadRequest("Idempotency-Key must be 1 to 255 printable characters")
        issue = services.issuance.issue
        issued = await run_blocking(services.engine, issue, data, actor=actor, idempotency_key=key)
        body = credential_view(services, issued.credential, include=data.format or "ldp")
        headers = {"Location": body["url"]} | ({"Idempotent-Replayed": "true"} if issued.replayed else {})
        return Response(body, status_code=201, headers=headers)

    @post("/batch", guards=[require("issue")], status_code=200)
    async def batch(self, request: Request[Any, Any, Any], services: ServicesDep, actor: ActorDep) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            form = await request.form()
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise BadRequest("the multipart body has no file: upload the CSV as a file field")
            raw = await upload.read()
            content_type = "text/csv"
        else:
            raw = await request.body()
        rows, defaults = parse_batch(raw, content_type, services.settings.max_batch_rows)
        outcomes = await asyncio.to_thread(services.issuance.issue_batch, rows, actor=actor, defaults=defaults)
        results = []
        for outcome in outcomes:
            if outcome.credential is not None:
                view = credential_view(services, outcome.credential)
                results.append(
                    {
                        "row": outcome.row,
                        "status": "issued",
                        "id": view["id"],
                        "url": view["url"],
                        "replayed": outcome.replayed,
                    }
                )
            else:
                results.append({"row": outcome.row, "status": "error", "error": outcome.error})
        issued = sum(1 for r in results if r["status"] == "issued")
        return {"issued": issued, "failed": len(results) - issued, "results": results}

    @post("/{credential_id:str}/reissue", guards=[require("issue")], sync_to_thread=True, status_code=200)
    def reissue(
        self,
        credential_id: FromPath[str],
        services: ServicesDep,
        actor: ActorDep,
        data: JSONBody[ReissueRequest | None] = None,
    ) -> Response[dict[str, Any]]:
        """Re-sign in place (optionally renewing `valid_until`); for a revoked credential, only with
        `replace_revoked`, which answers 201 with the new credential that replaces it."""
        options = data or ReissueRequest()
        issued = services.issuance.reissue(
            credential_id, actor=actor, valid_until=options.valid_until, replace_revoked=options.replace_revoked
        )
        row = issued.credential
        view = credential_view(services, row) | ({"replaces": row.replaces_id} if row.replaces_id else {})
        return Response(view, status_code=201 if row.id != credential_id and not issued.replayed else 200)

    @post("/{credential_id:str}/revoke", guards=[require("admin")], sync_to_thread=True, status_code=200)
    def revoke(
        self, credential_id: FromPath[str], data: JSONBody[RevokeRequest], services: ServicesDep, actor: ActorDep
    ) -> dict[str, Any]:
        """Sets the credential's bit in its status list; verifiers see it on their next fetch of the list."""
        with session_scope(services.engine) as session:
            row, changed = revoke(session, credential_id, reason=data.reason, actor=actor)
        return credential_view(services, row) | {"already_revoked": not changed}

    @get("/{credential_id:str}", guards=[require("read")], sync_to_thread=True)
    def read(self, credential_id: FromPath[str], services: ServicesDep) -> dict[str, Any]:
        with Session(services.engine) as session:
            row = session.get(Credential, credential_id)
        if row is None:
            raise NotFound(f"no credential {credential_id!r}")
        return credential_view(services, row) | {"mirrors": mirrors.views(services.engine, row.id)}


def parse_batch(raw: bytes, content_type: str, max_rows: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows from a JSON array, `{"defaults": {...}, "rows": [...]}`, or CSV (a header row names the columns)."""
    media = content_type.split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    defaults: dict[str, Any] = {}
    if media in ("application/json", ""):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadRequest(f"the body is not valid JSON: {error.msg} at line {error.lineno}") from None
        if isinstance(parsed, dict) and isinstance(parsed.get("rows"), list):
            defaults = parsed.get("defaults") or {}
            parsed = parsed["rows"]
        if not isinstance(parsed, list):
            raise BadRequest('send a JSON array of issue requests (or {"defaults": {...}, "rows": [...]})')
        rows = parsed
    elif media in ("text/csv", "application/csv"):
        rows = _csv_rows(text)
    else:
        raise UnsupportedMediaType("send application/json or text/csv (or a multipart upload of a .csv file)")
    if len(rows) > max_rows:
        raise PayloadTooLarge(f"a batch holds at most {max_rows} rows; this one has {len(rows)}")
    if not isinstance(defaults, dict):
        raise BadRequest("defaults must be an object")
    return rows, defaults


def _csv_rows(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if not header or unknown:
        raise BadRequest(
            f"CSV columns must be among {', '.join(CSV_COLUMNS)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    rows: list[dict[str, Any]] = []
    for record in reader:
        values = {k.strip().lower(): (v or "").strip() for k, v in record.items() if k is not None}
        recipient = {k: values[k] for k in ("email", "name", "did") if values.get(k)}
        row: dict[str, Any] = {"recipient": recipient}
        for column in ("achievement_id", "valid_until", "idempotency_key"):
            if values.get(column):
                row[column] = values[column]
        rows.append(row)
    return rows
