"""verify_credential end to end: the fixtures' documented verdicts, and one negative case per check."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.http_server import LocalServer
from tests.issuer_kit import TestIssuer
from verifier import HttpFetcher, Status, VerificationReport, VerifyOptions, verify_credential
from verifier.errors import FetchError
from verifier.suites import eddsa_rdfc_2022 as di

FIXTURES = Path(__file__).parent.parent / "vectors" / "data" / "ob3-validator-fixtures"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _failed(report: VerificationReport) -> dict[str, str]:
    return {c.id: c.status.value for c in report.checks if c.status not in (Status.PASSED, Status.SKIPPED)}


# ------------------------------------------------------------------------------------------------ fixtures

DOCUMENTED = {
    # file: (verdict, the checks that must not pass) -- see tests/vectors/data/README.md
    "simple.json": ("valid", {}),
    "simple-did-key-method.json": ("valid", {}),
    "simple-did-web-method.json": ("valid", {}),
    "simple-multiple-proofs.json": ("valid", {}),
    "simple-context-alias.json": ("valid", {}),
    "simple-context-version.json": ("valid", {}),
    "endorsement-valid.json": ("valid", {}),
    "simple_v1.json": ("valid", {}),
    "simple-eddsa-2022.json": ("valid", {}),
    "simple-json.png": ("valid", {}),
    "simple-jwt.png": ("valid", {}),
    "simple-json.svg": ("valid", {}),
    "simple-jwt.svg": ("valid", {}),
    "simple-err-proof-value.json": ("invalid", {"signature": "failed"}),
    "simple-err-expired.json": ("expired", {"expiration": "failed"}),
    "simple-noproof.json": ("invalid", {"schema": "failed", "issuer_key": "failed"}),
    "simple-err-context.json": ("invalid", {"context": "failed", "schema": "failed"}),
    # 1EdTechRevocationList is not supported: the status is reported as not checked, never as valid.
    "complete.json": ("could_not_check", {"status": "error"}),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_fixture_verdicts(name: str) -> None:
    verdict, not_passing = DOCUMENTED[name]
    report = verify_credential((FIXTURES / name).read_bytes(), now=NOW)
    assert report.verdict.value == verdict, report.to_dict()["checks"]
    assert _failed(report) == not_passing
    assert report.verified is (verdict == "valid")


@pytest.mark.parametrize("name", ["credential-status-revoked.json", "credential-status-revoked-blank-nodes.json"])
def test_bitstring_fixture_is_revoked(name: str) -> None:
    """As the vectors README says, the statusListCredential URL is mapped to the `testlist` file."""
    credential = json.loads((FIXTURES / "bit-string-list" / name).read_text())
    list_url = credential["credentialStatus"]["statusListCredential"]
    testlist = (FIXTURES / "bit-string-list" / "testlist").read_bytes()

    def mapped(url: str, *, accept: str = "application/json") -> bytes:
        if url == list_url:
            return testlist
        raise FetchError(f"no route to {url}")

    report = verify_credential(credential, now=NOW, fetcher=mapped)
    assert report.verdict.value == "revoked"
    assert _failed(report) == {"status": "failed"}


def test_baked_jwt_without_key_is_could_not_check() -> None:
    """simple.jwt has neither kid nor jwk: its key cannot be found offline."""
    report = verify_credential((FIXTURES / "simple.jwt").read_bytes(), now=NOW)
    assert not report.verified
    assert report.check("signature") is not None
    assert report.check("signature").status is Status.ERROR  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ our own issuer


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    with LocalServer() as site:
        yield TestIssuer(site)


@pytest.fixture
def online() -> Iterator[VerifyOptions]:
    fetcher = HttpFetcher(allow_http_loopback=True, timeout=3)
    yield VerifyOptions(now=NOW, fetcher=fetcher, allow_http_loopback=True)
    fetcher.close()


def test_valid_did_web_credential_with_status(issuer: TestIssuer, online: VerifyOptions) -> None:
    report = verify_credential(issuer.sign(issuer.credential()), online)
    assert report.verdict.value == "valid", report.to_dict()["checks"]
    assert [c.id for c in report.checks] == [
        "parse", "context", "type", "schema", "issuer_key", "signature", "issuance", "expiration", "status",
    ]  # fmt: skip
    assert "published by the issuer" in report.check("issuer_key").detail  # type: ignore[union-attr]
    assert {"/.well-known/did.json", "/status/1"} <= set(issuer.site.paths_requested)


def test_revoked_after_the_bit_is_set(issuer: TestIssuer, online: VerifyOptions) -> None:
    signed = issuer.sign(issuer.credential(index=4242))
    assert verify_credential(signed, online).verified
    issuer.revoke(4242)
    report = verify_credential(signed, online)
    assert report.verdict.value == "revoked"
    assert _failed(report) == {"status": "failed"}


def test_status_list_unreachable_is_could_not_check(issuer: TestIssuer, online: VerifyOptions) -> None:
    signed = issuer.sign(issuer.credential())
    del issuer.site.routes["/status/1"]
    report = verify_credential(signed, online)
    assert report.verdict.value == "could_not_check"
    assert _failed(report) == {"status": "error"}
    assert "404" in report.check("status").detail  # type: ignore[union-attr]


def test_tampered_status_list_is_could_not_check(issuer: TestIssuer, online: VerifyOptions) -> None:
    signed = issuer.sign(issuer.credential(index=9))
    body = json.loads(issuer.status_list_body)
    body["validFrom"] = "2025-01-01T00:00:00Z"
    issuer.site.json("/status/1", json.dumps(body).encode())
    report = verify_credential(signed, online)
    assert _failed(report) == {"status": "error"}
    assert "did not verify" in report.check("status").detail  # type: ignore[union-attr]


def _edit(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    target: Any = changed
    for step in parents:
        target = target[int(step)] if step.isdigit() else target[step]
    target[int(last) if last.isdigit() else last] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("credentialSubject.identifier.0.identityHash", "sha256$" + "0" * 64),
        ("credentialSubject.achievement.name", "Brain Surgery — level 3"),
        ("credentialSubject.achievement.criteria.narrative", "Nothing at all."),
        ("issuer.name", "Harvard University"),
        ("name", "Another name"),
        ("proof.0.created", "2020-01-01T00:00:00Z"),
        ("proofValue", None),
    ],
)
def test_tampering_breaks_the_signature(issuer: TestIssuer, online: VerifyOptions, path: str, value: Any) -> None:
    signed = issuer.sign(issuer.credential())
    if path == "proofValue":
        proof_value = signed["proof"][0]["proofValue"]
        tampered = _edit(signed, "proof.0.proofValue", proof_value[:-2] + ("11" if proof_value[-2:] != "11" else "22"))
    else:
        tampered = _edit(signed, path, value)
    report = verify_credential(tampered, online)
    assert report.verdict.value == "invalid"
    assert _failed(report) == {"signature": "failed"}


def test_wrong_key_fails(issuer: TestIssuer, online: VerifyOptions) -> None:
    impostor = di.Ed25519Signer(bytes(32), f"{issuer.did}#key-1")  # claims the issuer's method, other key
    report = verify_credential(di.sign(issuer.credential(), impostor), online)
    assert _failed(report) == {"signature": "failed"}


def test_key_not_controlled_by_the_issuer_fails(online: VerifyOptions) -> None:
    with LocalServer() as site_a, LocalServer() as site_b:
        issuer_a, issuer_b = TestIssuer(site_a), TestIssuer(site_b, seed=bytes(range(2, 34)))
        forged = di.sign(issuer_a.credential(), issuer_b.signer)  # issuer A's credential, B's key
        report = verify_credential(forged, online)
    assert _failed(report) == {"issuer_key": "failed"}
    assert "not by the issuer" in report.check("issuer_key").detail  # type: ignore[union-attr]


def test_wrong_proof_purpose_fails(issuer: TestIssuer, online: VerifyOptions) -> None:
    credential = issuer.credential()
    proof = di.create_proof(credential, issuer.signer, created=NOW, proof_purpose="authentication")
    report = verify_credential({**credential, "proof": [proof]}, online)
    assert _failed(report) == {"issuer_key": "failed"}
    assert "purpose" in report.check("issuer_key").detail  # type: ignore[union-attr]


def test_wrong_cryptosuite_is_not_accepted(issuer: TestIssuer, online: VerifyOptions) -> None:
    signed = issuer.sign(issuer.credential())
    signed["proof"][0]["cryptosuite"] = "ecdsa-rdfc-2019"
    report = verify_credential(signed, online)
    assert not report.verified
    assert _failed(report) == {"issuer_key": "error"}
    assert "ecdsa-rdfc-2019" in report.check("issuer_key").detail  # type: ignore[union-attr]


def test_expired_and_not_yet_valid(issuer: TestIssuer, online: VerifyOptions) -> None:
    expired = issuer.sign(issuer.credential(validUntil="2026-02-01T00:00:00Z"))
    report = verify_credential(expired, online)
    assert (report.verdict.value, _failed(report)) == ("expired", {"expiration": "failed"})
    future = issuer.sign(issuer.credential(validFrom="2027-01-01T00:00:00Z"))
    report = verify_credential(future, online)
    assert (report.verdict.value, _failed(report)) == ("not_yet_valid", {"issuance": "failed"})


def test_unknown_context_and_undefined_term(issuer: TestIssuer, online: VerifyOptions) -> None:
    credential = issuer.credential()
    credential["@context"] = [*credential["@context"], "https://example.com/my-terms.jsonld"]
    report = verify_credential(issuer.sign(credential) if False else {**credential, "proof": []}, online)
    assert not report.verified
    signed = issuer.sign(issuer.credential())
    signed["credentialSubject"]["grade"] = "A+"  # added after signing, in no context
    report = verify_credential(signed, online)
    assert _failed(report) == {"signature": "failed"}
    assert "grade" in report.check("signature").detail  # type: ignore[union-attr]
    signed = issuer.sign(issuer.credential())
    signed["@context"] = [*signed["@context"], "https://example.com/my-terms.jsonld"]
    report = verify_credential(signed, online)
    assert _failed(report) == {"signature": "error"}
    assert "not one of the pinned contexts" in report.check("signature").detail  # type: ignore[union-attr]


def test_vc_jwt_valid_and_claims_checked(issuer: TestIssuer, online: VerifyOptions) -> None:
    token = issuer.sign_jwt(issuer.credential())
    report = verify_credential(token, online)
    assert report.verdict.value == "valid", report.to_dict()["checks"]
    assert report.input_format == "jwt" and report.check("jwt_claims") is not None


def _resign_payload(token: str, issuer: TestIssuer, edit: dict[str, Any]) -> str:
    from verifier.suites.vc_jwt import decode_jwt

    decoded = decode_jwt(token)
    payload = {**decoded.payload, **edit}
    header = base64.urlsafe_b64encode(json.dumps(decoded.header).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    from joserfc.jws import JWSRegistry

    signature = JWSRegistry.algorithms["RS256"].sign(header + b"." + body, issuer.rsa)
    return (header + b"." + body + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


@pytest.mark.parametrize("claim", ["iss", "jti", "nbf", "exp"])
def test_vc_jwt_claims_that_contradict_the_credential_fail(
    issuer: TestIssuer, online: VerifyOptions, claim: str
) -> None:
    token = issuer.sign_jwt(issuer.credential(validUntil="2029-01-01T00:00:00Z"))
    wrong = {"iss": "did:web:elsewhere.example", "jti": "urn:uuid:other", "nbf": 1, "exp": 4102444800}[claim]
    report = verify_credential(_resign_payload(token, issuer, {claim: wrong}), online)
    assert _failed(report) == {"jwt_claims": "failed"}
    assert claim in report.check("jwt_claims").detail  # type: ignore[union-attr]


def test_vc_jwt_alg_none_is_refused(issuer: TestIssuer, online: VerifyOptions) -> None:
    token = issuer.sign_jwt(issuer.credential())
    _, payload, _ = token.split(".")
    for alg in ("none", "HS256"):
        header = base64.urlsafe_b64encode(f'{{"alg":"{alg}","typ":"JWT"}}'.encode()).rstrip(b"=").decode()
        for signature in ("", "c2lnbmF0dXJl"):
            report = verify_credential(f"{header}.{payload}.{signature}", online)
            assert report.verdict.value == "invalid"
            assert report.checks[0].id == "parse" and report.checks[0].status is Status.FAILED
            if signature:
                assert alg in report.checks[0].detail


def test_strict_keys_refuses_self_asserted_keys() -> None:
    report = verify_credential((FIXTURES / "simple.json").read_bytes(), now=NOW, strict_keys=True)
    assert report.verdict.value == "could_not_check"
    assert _failed(report) == {"issuer_key": "error"}


def test_garbage_inputs_get_a_report_not_an_exception() -> None:
    for garbage in (b"", b"\x00\x01\x02", b"{", b"[1,2]", b"not.a.jwt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "é"):
        report = verify_credential(garbage, now=NOW)
        assert not report.verified
        assert report.checks[0].id == "parse" and report.checks[0].status is Status.FAILED


def test_hostile_nesting_is_refused_at_parse() -> None:
    deep: dict[str, Any] = {"@context": ["https://www.w3.org/ns/credentials/v2"], "type": ["VerifiableCredential"]}
    node = deep
    for _ in range(600):
        node["credentialSubject"] = {"id": "urn:x"}
        node = node["credentialSubject"]
    for source in (deep, json.dumps(deep).encode(), b"{" + b'"a":{' * 100_000 + b"}" * 100_001):
        report = verify_credential(source, now=NOW)
        assert report.checks[0].id == "parse" and report.checks[0].status is Status.FAILED
        assert "nested" in report.checks[0].detail


def test_1edtech_revocation_list(issuer: TestIssuer, online: VerifyOptions) -> None:
    """Older OB 3.0 credentials point at an unsigned 1EdTechRevocationList (OB 3.0 §8.3 step 4)."""
    list_url = f"{issuer.site.base}/revocations"
    entry = {"id": list_url, "type": "1EdTechRevocationList"}
    signed = issuer.sign(issuer.credential(credentialStatus=entry))
    others = {"id": list_url, "revokedCredential": [{"id": "urn:uuid:someone-else", "revoked": True}]}
    issuer.site.json("/revocations", json.dumps(others).encode())
    report = verify_credential(signed, online)
    assert report.verdict.value == "valid", report.to_dict()["checks"]
    assert "1EdTechRevocationList" in report.check("status").detail  # type: ignore[union-attr]
    listed = {**others, "revokedCredential": [{"id": signed["id"], "revocationReason": "Issued in error"}]}
    issuer.site.json("/revocations", json.dumps(listed).encode())
    report = verify_credential(signed, online)
    assert report.verdict.value == "revoked"
    assert "Issued in error" in report.check("status").detail  # type: ignore[union-attr]
    issuer.site.json("/revocations", b"<html>oops</html>")
    assert _failed(verify_credential(signed, online)) == {"status": "error"}
