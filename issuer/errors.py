"""One exception tree. Each leaf owns its HTTP status and its stable problem `type` (RFC 9457)."""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "urn:ob3-issuer:problem:"


class IssuerError(Exception):
    """Base of the errors the API reports as problem+json. `detail` is shown to the client: no secrets in it."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_BASE + cls.slug


class BadRequest(IssuerError):
    status, slug, title = 400, "bad-request", "The request is malformed"


class ValidationFailed(IssuerError):
    status, slug, title = 422, "validation", "The request has invalid fields"


class Unauthorized(IssuerError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(IssuerError):
    status, slug, title = 403, "forbidden", "The API key lacks the scope this needs"


class NotFound(IssuerError):
    status, slug, title = 404, "not-found", "No such resource"


class Conflict(IssuerError):
    status, slug, title = 409, "conflict", "The request conflicts with the current state"


class CredentialRevoked(Conflict):
    slug, title = "credential-revoked", "The credential is revoked"


class IdempotencyMismatch(Conflict):
    slug, title = "idempotency-key-reused", "The Idempotency-Key was used with a different request"


class PayloadTooLarge(IssuerError):
    status, slug, title = 413, "payload-too-large", "The request body is too large"


class UnsupportedMediaType(IssuerError):
    status, slug, title = 415, "unsupported-media-type", "The request body's media type is not accepted"


class NotAcceptable(IssuerError):
    status, slug, title = 406, "not-acceptable", "No representation matches the Accept header"


class SigningFailed(IssuerError):
    """The credential we signed did not verify: a server fault, never the client's."""

    status, slug, title = 500, "signing-failed", "The issued credential failed its own verification"


class ServiceUnavailable(IssuerError):
    status, slug, title = 503, "unavailable", "The service cannot do this right now"
