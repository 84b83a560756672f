"""The verification report: ordered checks with stable ids, and the verdict derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the check could not be carried out ("could not check")
    SKIPPED = "skipped"


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    COULD_NOT_CHECK = "could_not_check"


@dataclass(frozen=True, slots=True)
class Check:
    """One step of verification. `id` is stable (documented in docs/verification.md); `detail` is for people."""

    id: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status.value, "detail": self.detail}


@dataclass(slots=True)
class VerificationReport:
    """What `verify_credential` found. `verified` is true only when nothing failed or errored."""

    input_format: str
    checks: list[Check] = field(default_factory=list)
    credential: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(c.status in (Status.PASSED, Status.SKIPPED) for c in self.checks)

    @property
    def verdict(self) -> Verdict:
        """One word for people: a failed status or date check names itself; other failures read "invalid"."""
        by_id = {c.id: c for c in self.checks}
        failed = [c for c in self.checks if c.status is Status.FAILED]
        if not failed:
            if any(c.status is Status.ERROR for c in self.checks):
                return Verdict.COULD_NOT_CHECK
            return Verdict.VALID if self.checks else Verdict.INVALID
        if all(c.id in _NAMED_FAILURES for c in failed):
            if (s := by_id.get("status")) is not None and s.status is Status.FAILED:
                return Verdict.REVOKED
            if (e := by_id.get("expiration")) is not None and e.status is Status.FAILED:
                return Verdict.EXPIRED
            return Verdict.NOT_YET_VALID
        return Verdict.INVALID

    def check(self, check_id: str) -> Check | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "verdict": self.verdict.value,
            "format": self.input_format,
            "checks": [c.to_dict() for c in self.checks],
            "credential": self.credential,
        }


_NAMED_FAILURES = frozenset({"status", "expiration", "issuance"})
