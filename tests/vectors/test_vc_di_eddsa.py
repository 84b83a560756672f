"""W3C vc-di-eddsa test vectors, reproduced byte for byte, and the 1EdTech OB3 fixtures' signatures."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import pytest

from verifier.canonical import canonicalize, canonicalize_reference
from verifier.errors import InvalidCredential
from verifier.loader import DocumentLoader
from verifier.multikey import decode_ed25519_secret, decode_public_key, multibase_encode
from verifier.suites import eddsa_rdfc_2022 as suite

from .conftest import load, text

CASES = [
    ("eddsa-rdfc-2022", "unsigned.json", "DataInt", "eddsa-rdfc-2022"),
    ("eddsa-rdfc-2022/employ", "employmentAuth.json", "DataInt", "eddsa-rdfc-2022"),
    ("Ed25519Signature2020", "unsigned.json", "EdSig", "Ed25519Signature2020"),
]


def _signer(verification_method: str) -> suite.Ed25519Signer:
    keys = load("vc-di-eddsa/keyPair.json")
    return suite.Ed25519Signer(decode_ed25519_secret(keys["privateKeyMultibase"]), verification_method)


@pytest.mark.parametrize(("folder", "unsigned", "tag", "kind"), CASES)
def test_vector_reproduces_every_intermediate(
    folder: str, unsigned: str, tag: str, kind: str, test_loader: DocumentLoader
) -> None:
    base = f"vc-di-eddsa/{folder}/"
    document = load(f"vc-di-eddsa/{unsigned}")
    config = load(base + f"proofConfig{tag}.json")
    for canon in (canonicalize, canonicalize, canonicalize_reference):  # twice: cold then shape-cached
        assert canon(document, test_loader) == text(base + f"canonDoc{tag}.txt")
        assert canon(config, test_loader) == text(base + f"proofCanon{tag}.txt")
    doc_hash = hashlib.sha256(text(base + f"canonDoc{tag}.txt").encode()).hexdigest()
    proof_hash = hashlib.sha256(text(base + f"proofCanon{tag}.txt").encode()).hexdigest()
    assert doc_hash == text(base + f"docHash{tag}.txt").strip()
    assert proof_hash == text(base + f"proofHash{tag}.txt").strip()
    options = {k: v for k, v in config.items() if k != "@context"}
    signed = load(base + f"signed{tag}.json")
    unsecured = {k: v for k, v in signed.items() if k != "proof"}  # Ed25519Signature2020 adds its context
    combined = suite.hash_data(unsecured, options, test_loader)
    assert combined.hex() == text(base + f"combinedHash{tag}.txt").strip()
    signer = _signer(config["verificationMethod"])
    signature = signer.sign(combined)
    assert signature.hex() == text(base + f"sigHex{tag}.txt").strip()
    assert multibase_encode(signature) == signed["proof"]["proofValue"]
    assert signed["proof"]["proofValue"] == text(base + f"sigBTC58{tag}.txt").strip()
    if kind == "eddsa-rdfc-2022":
        created = datetime.fromisoformat(config["created"])
        assert suite.create_proof(document, signer, created=created, loader=test_loader) == signed["proof"]
    suite.verify_proof(signed, signed["proof"], signer.public_key, loader=test_loader)


def _tamper(document: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    import copy

    changed = copy.deepcopy(document)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["credentialSubject", "alumniOf"], "The School of Examples (forged)"),
        (["issuer"], "https://forger.example/issuers/1"),
        (["validFrom"], "2020-01-01T00:00:00Z"),
        (["proof", "created"], "2020-01-01T00:00:00Z"),
        (["proof", "verificationMethod"], "did:key:z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2#other"),
    ],
)
def test_vector_tampering_fails(path: list[str | int], value: str, test_loader: DocumentLoader) -> None:
    signed = load("vc-di-eddsa/eddsa-rdfc-2022/signedDataInt.json")
    tampered = _tamper(signed, path, value)
    key = _signer("unused").public_key
    with pytest.raises(InvalidCredential, match="signature does not match"):
        suite.verify_proof(tampered, tampered["proof"], key, loader=test_loader)


FIXTURES = [
    ("simple.json", True),
    ("simple-did-key-method.json", True),
    ("simple-did-web-method.json", True),
    ("simple-multiple-proofs.json", True),
    ("simple-context-alias.json", True),
    ("simple-context-version.json", True),
    ("complete.json", True),
    ("endorsement-valid.json", True),
    ("simple-err-expired.json", True),
    ("simple_v1.json", True),
    ("simple-eddsa-2022.json", True),
    ("credential-status-revoked.json", True),
    ("bit-string-list/credential-status-revoked.json", True),
    ("bit-string-list/credential-status-revoked-blank-nodes.json", True),
    ("bit-string-list/testlist", True),
    ("simple-err-proof-value.json", False),
]


@pytest.mark.parametrize(("name", "signature_valid"), FIXTURES)
def test_1edtech_fixture_signatures(name: str, signature_valid: bool) -> None:
    """Keys sit in the verification method (did:key or https URL#multikey), so these check offline."""
    credential = load(f"ob3-validator-fixtures/{name}")
    proofs = credential["proof"] if isinstance(credential["proof"], list) else [credential["proof"]]
    proof = next(p for p in proofs if suite.is_supported(p))
    key = decode_public_key(proof["verificationMethod"].split("#")[-1].removeprefix("did:key:")).raw
    if signature_valid:
        suite.verify_proof(credential, proof, key)
    else:
        with pytest.raises(InvalidCredential):
            suite.verify_proof(credential, proof, key)


def test_ob3_spec_examples_take_the_fast_path_identically() -> None:
    for name in ("basic", "complete", "endorsement"):
        example = load(
            f"ob3-spec-examples/spec-example-{name}-openbadgecredential.unsigned.json"
            if name != "endorsement"
            else "ob3-spec-examples/spec-example-endorsementcredential.unsigned.json"
        )
        example.pop("proof", None)
        reference = canonicalize_reference(example)
        assert canonicalize(example) == reference
        assert canonicalize(example) == reference
