"""The one map from exceptions to RFC 9457 application/problem+json responses."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from .errors import PROBLEM_BASE, IssuerError, NotFound
from .keyring import KeyringError

log = logging.getLogger("issuer")
MEDIA_TYPE = "application/problem+json"

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


def problem(status: int, slug: str, title: str, detail: str, instance: str, **extra: Any) -> Response[dict[str, Any]]:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail, "instance": instance}
    return Response(body | extra, status_code=status, media_type=MEDIA_TYPE)


def handle_issuer_error(request: Request[Any, Any, Any], error: IssuerError) -> Response[dict[str, Any]]:
    if error.status >= 500:
        log.error("server fault on %s %s: %s", request.method, request.url.path, error.detail)
    return problem(error.status, error.slug, error.title, error.detail, request.url.path, **error.extensions)


def handle_validation(request: Request[Any, Any, Any], error: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's own body/parameter validation: say which field and why, in the same format as ours."""
    errors = error.extra if isinstance(error.extra, list) else []
    fields = [
        {
            "field": _clean_field(str(e.get("key") or e.get("source") or "")),
            "message": str(e.get("message", "")).removeprefix("Value error, "),
        }
        for e in errors
        if isinstance(e, dict)
    ]
    detail = "; ".join(f"{f['field']}: {f['message']}" if f["field"] else f["message"] for f in fields) or str(
        error.detail
    )
    return problem(
        422 if fields else 400,
        "validation" if fields else "bad-request",
        "The request has invalid fields" if fields else "The request is malformed",
        detail,
        request.url.path,
        errors=fields,
    )


def _clean_field(field: str) -> str:
    """Pydantic names union members and validators in error locations (`image.function-after[…]`): drop them."""
    parts = [p for p in field.split(".") if p and "[" not in p and "(" not in p and p not in ("str", "int", "list")]
    return ".".join(parts)


def handle_http(request: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
    status = error.status_code
    slug = _HTTP_SLUGS.get(status, "internal" if status >= 500 else "bad-request")
    detail = str(error.detail) if status < 500 else "The server could not complete the request."
    return problem(status, slug, detail if status < 500 else "Internal error", detail, request.url.path)


def handle_undecodable(request: Request[Any, Any, Any], error: UnicodeDecodeError) -> Response[dict[str, Any]]:
    return problem(
        400, "bad-request", "The request is malformed", "the request body is not UTF-8 text", request.url.path
    )


def handle_keyring(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """Key trouble (no active key, undecryptable key) is the operator's to fix: logged, never detailed to clients."""
    log.error("keyring problem on %s %s: %s", request.method, request.url.path, error)
    return problem(
        503,
        "keys-unavailable",
        "Signing keys are unavailable",
        "The service cannot sign right now; the operator has been told.",
        request.url.path,
    )


def handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """Anything else is our fault: log it with the traceback, tell the client nothing internal."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "The server could not complete the request.",
        request.url.path,
    )


def not_found(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    return handle_issuer_error(request, NotFound(f"nothing at {request.url.path}"))


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    IssuerError: handle_issuer_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    UnicodeDecodeError: handle_undecodable,
    KeyringError: handle_keyring,
    Exception: handle_unexpected,
}
