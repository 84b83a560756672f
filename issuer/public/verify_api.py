"""POST /api/v1/verify: the verification report for any OB 3.0 credential, as JSON. No authentication.

Body forms: a credential as JSON; `{"url": "https://…"}`; a compact JWT as text/plain; a file as a multipart
upload or as the raw body (JSON, JWT, baked PNG or SVG). The answer is 200 with the report whether or not the
credential verifies; malformed requests get a problem+json 400.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import UploadFile

from ..errors import BadRequest, PayloadTooLarge
from ..services import ServicesDep
from .verification import MAX_SUBMITTED_BYTES, verify_submitted, verify_url


class VerifyApiController(Controller):
    path = "/api/v1/verify"
    tags = ["verification"]  # noqa: RUF012 (Litestar declares it as a plain attribute)

    @post("/", status_code=200, request_max_body_size=MAX_SUBMITTED_BYTES + 64_000)
    async def verify(self, request: Request[Any, Any, Any], services: ServicesDep) -> dict[str, Any]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        source: dict[str, Any] | bytes
        if media == "multipart/form-data":
            form = await request.form()
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise BadRequest("the multipart body has no file: upload the credential as a file field")
            source = await upload.read()
        else:
            source = await request.body()
        if not source:
            raise BadRequest('the body is empty: send a credential (JSON, JWT, PNG or SVG) or {"url": …}')
        if len(source) > MAX_SUBMITTED_BYTES:
            raise PayloadTooLarge(f"credentials up to {MAX_SUBMITTED_BYTES} bytes are accepted")
        if media in ("application/json", "application/ld+json", "application/vc+ld+json"):
            try:
                parsed = json.loads(source)
            except (ValueError, RecursionError):
                raise BadRequest("the body is not valid JSON") from None
            if not isinstance(parsed, dict):
                raise BadRequest('send a credential (a JSON object) or {"url": "https://…"}')
            if set(parsed) == {"url"}:
                report = await asyncio.to_thread(verify_url, services, parsed["url"])
                return report.to_dict()
            source = parsed
        report = await asyncio.to_thread(verify_submitted, services, source)
        return report.to_dict()
