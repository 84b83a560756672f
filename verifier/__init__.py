"""Open Badges 3.0 verification and proof creation: standalone, offline by default, no keys or database.

from verifier import verify_credential
report = verify_credential(open("badge.png", "rb").read())
report.verified, report.verdict, [c.to_dict() for c in report.checks]
"""

from .canonical import canonicalize
from .errors import CannotCheck, FetchError, InvalidCredential, VerifierError
from .fetch import Fetcher, HttpFetcher, offline_fetcher
from .loader import DocumentLoader
from .report import Check, Status, Verdict, VerificationReport
from .suites.eddsa_rdfc_2022 import Ed25519Signer
from .verify import VerifyOptions, verify_credential

__all__ = [
    "CannotCheck",
    "Check",
    "DocumentLoader",
    "Ed25519Signer",
    "FetchError",
    "Fetcher",
    "HttpFetcher",
    "InvalidCredential",
    "Status",
    "Verdict",
    "VerificationReport",
    "VerifierError",
    "VerifyOptions",
    "canonicalize",
    "offline_fetcher",
    "verify_credential",
]
