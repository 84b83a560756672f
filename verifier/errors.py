"""The two ways a check can go wrong, kept apart so that "could not check" never reads as "invalid".

Modules under `verifier` raise these for untrusted input; `verify.py` turns them into report checks.
Programmer misuse (wrong argument types, calling with no key) raises ordinary exceptions instead.
"""

from __future__ import annotations


class VerifierError(Exception):
    """Base of the errors that describe the credential or its environment, never the caller."""

    def __init__(self, detail: str, *, code: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class InvalidCredential(VerifierError):
    """The credential (or something it names) is provably wrong: a failed check."""


class CannotCheck(VerifierError):
    """The check could not be carried out (network, unknown context, unresolvable key): an error outcome."""


class FetchError(CannotCheck):
    """An outbound fetch was refused or failed (address policy, size, time, HTTP status)."""
