"""`ob3-verify FILE|URL|-`: verify an Open Badges 3.0 credential and print the report.

Exit status: 0 valid, 1 invalid or could not be verified, 2 usage error (bad arguments, unreadable file).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import FetchError, InvalidCredential
from .fetch import Fetcher, HttpFetcher, offline_fetcher
from .report import Status, VerificationReport
from .schema import parse_datetime_z
from .verify import VerifyOptions, verify_credential

_MARKS = {Status.PASSED: "ok  ", Status.FAILED: "FAIL", Status.ERROR: "??  ", Status.SKIPPED: "--  "}
_HEADLINES = {
    "valid": "VALID: the credential is genuine, current and not revoked",
    "invalid": "INVALID: the credential failed verification",
    "revoked": "REVOKED: the issuer has revoked this credential",
    "expired": "EXPIRED: the credential is no longer valid",
    "not_yet_valid": "NOT YET VALID: the credential's validity period has not started",
    "could_not_check": "COULD NOT VERIFY: some checks could not be carried out",
}


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ob3-verify",
        description="Verify an Open Badges 3.0 credential: JSON-LD, JWT, baked PNG or SVG, PDF certificate, or URL.",
    )
    parser.add_argument("source", help="a file, an https URL, or - for standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    parser.add_argument("--now", help="verify as of this time (ISO 8601 with zone, e.g. 2026-01-01T00:00:00Z)")
    parser.add_argument("--offline", action="store_true", help="never use the network (did:web, status lists)")
    parser.add_argument(
        "--allow-http-loopback",
        action="store_true",
        help="allow plain-http fetches from loopback addresses (local development only)",
    )
    parser.add_argument(
        "--strict-keys", action="store_true", help="refuse keys that only the credential itself vouches for"
    )
    parser.add_argument("--no-status", action="store_true", help="do not check revocation status")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds allowed for each fetch (default 5)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    fetcher: Fetcher = offline_fetcher
    if not args.offline:
        fetcher = HttpFetcher(timeout=args.timeout, allow_http_loopback=args.allow_http_loopback)
    try:
        now = _parse_now(args.now)
        data = _read(args.source, fetcher)
    except _UsageError as error:
        print(f"ob3-verify: {error}", file=sys.stderr)
        return 2
    except FetchError as error:
        print(f"ob3-verify: could not fetch {args.source}: {error.detail}", file=sys.stderr)
        return 1
    options = VerifyOptions(
        now=now,
        fetcher=fetcher,
        allow_http_loopback=args.allow_http_loopback,
        strict_keys=args.strict_keys,
        check_status=not args.no_status,
    )
    report = verify_credential(data, options)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else render(report))
    return 0 if report.verified else 1


def _parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime_z(value)
    except InvalidCredential:
        raise _UsageError(f"--now {value!r} is not an ISO 8601 date-time with a zone") from None


def _read(source: str, fetcher: Fetcher) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    if source.startswith(("https://", "http://")):
        return fetcher(source, accept="application/vc+ld+json, application/json;q=0.9, text/plain;q=0.5, */*;q=0.1")
    path = Path(source)
    if not path.is_file():
        raise _UsageError(f"{source}: no such file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise _UsageError(f"{source}: {error.strerror}") from None


def render(report: VerificationReport) -> str:
    """The human report: the verdict, what the credential says, then each check."""
    lines = [_HEADLINES[report.verdict.value], ""]
    summary = _summary(report.credential)
    if summary:
        lines += [*summary, ""]
    width = max((len(c.id) for c in report.checks), default=0)
    lines += [f"  {_MARKS[c.status]} {c.id.ljust(width)}  {c.detail}" for c in report.checks]
    return "\n".join(lines)


def _summary(credential: dict[str, Any] | None) -> list[str]:
    if not credential:
        return []
    subject = credential.get("credentialSubject")
    subject = subject[0] if isinstance(subject, list) and subject else subject
    achievement = subject.get("achievement") if isinstance(subject, dict) else None
    issuer = credential.get("issuer")
    rows = [
        ("Achievement", achievement.get("name") if isinstance(achievement, dict) else credential.get("name")),
        ("Issuer", issuer.get("name") or issuer.get("id") if isinstance(issuer, dict) else issuer),
        ("Credential", credential.get("id")),
        ("Valid from", credential.get("validFrom") or credential.get("issuanceDate")),
        ("Valid until", credential.get("validUntil") or credential.get("expirationDate")),
    ]
    return [f"  {label + ':':13}{_printable(value)}" for label, value in rows if isinstance(value, str)]


def _printable(value: str) -> str:
    """Credential text is untrusted: never let it move the cursor or recolour the terminal."""
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in value)


if __name__ == "__main__":
    sys.exit(main())
