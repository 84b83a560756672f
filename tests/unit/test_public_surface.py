"""The library's public surface is deliberate: what `verifier` exports is listed here and nowhere else."""

from __future__ import annotations

import verifier

EXPECTED = {
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
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(verifier.__all__) == EXPECTED
    assert all(hasattr(verifier, name) for name in verifier.__all__)
    public = {name for name in vars(verifier) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(verifier, name)).__name__ == "module"}
    assert public - modules == EXPECTED
