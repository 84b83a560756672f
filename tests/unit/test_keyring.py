"""The keyring: sealed private keys, master key loading, generation, rotation and compromise on both databases,
and what we publish (DID document, JWKS) verifying through `verifier` as any outside verifier would."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from issuer.db.tables import Issuer, SigningKey
from issuer.keyring import (
    COMPROMISE_WARNING,
    MasterKeyError,
    NoActiveKey,
    UnknownKey,
    active_key,
    active_signers,
    clear_signer_cache,
    decrypt_private_key,
    did_document,
    encrypt_private_key,
    ensure_keys,
    generate_key,
    generate_master_key_file,
    jwks,
    load_master_key,
    mark_compromised,
    published_keys,
    rotate,
    signing_material,
)
from issuer.keyring.crypto import RSA_BITS, KeyringError, import_jwt_key
from issuer.settings import Settings
from tests.factories import make_credential
from verifier import Fetcher, FetchError, verify_credential
from verifier import did as verifier_did
from verifier.suites import eddsa_rdfc_2022 as di
from verifier.suites import vc_jwt

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))
DID = "did:web:badges.example.edu:issuers:acme"
DID_URL = "https://badges.example.edu/issuers/acme/did.json"
JWKS_URL = "https://badges.example.edu/.well-known/jwks.json"
NOW = datetime(2028, 1, 1, tzinfo=UTC)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """The verifier caches fetched documents per fetcher, and we cache signers: no test may see another's."""
    verifier_did.clear_cache()
    clear_signer_cache()
    yield
    verifier_did.clear_cache()
    clear_signer_cache()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        session.add(Issuer(id="acme", did=DID, name="Acme Academy", is_default=True))
        session.commit()
        yield session


def publishing(documents: dict[str, dict[str, Any]]) -> Fetcher:
    """Stands for our own public routes: serves the given JSON documents by URL, nothing else."""

    def fetch(url: str, *, accept: str = "application/json") -> bytes:
        if url not in documents:
            raise FetchError(f"not found: {url}", code="http_status")
        return json.dumps(documents[url]).encode()

    return fetch


def verify(credential: dict[str, Any] | str, fetcher: Fetcher) -> dict[str, str]:
    report = verify_credential(credential, fetcher=fetcher, now=NOW, check_status=False)
    return {check.id: check.status.value for check in report.checks}


def issuer_of(session: Session) -> Issuer:
    issuer = session.get(Issuer, "acme")
    assert issuer is not None
    return issuer


# -- sealing -----------------------------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip_with_fresh_nonces() -> None:
    private = os.urandom(1792)
    first = encrypt_private_key(MASTER, "rs256-0123456789", private)
    second = encrypt_private_key(MASTER, "rs256-0123456789", private)
    assert first != second  # random nonce
    assert first[0] == 1 and len(first) == 1 + 12 + len(private) + 16
    assert private not in first
    assert decrypt_private_key(MASTER, "rs256-0123456789", first) == private
    assert decrypt_private_key(MASTER, "rs256-0123456789", second) == private


@pytest.mark.parametrize("position", [1, 5, 13, 40, -1])  # nonce, ciphertext, tag
def test_tampered_blob_fails(position: int) -> None:
    blob = bytearray(encrypt_private_key(MASTER, "ed25519-0123456789", os.urandom(32)))
    blob[position] ^= 0x01
    with pytest.raises(MasterKeyError, match="cannot decrypt key ed25519-0123456789"):
        decrypt_private_key(MASTER, "ed25519-0123456789", bytes(blob))


def test_unknown_version_and_truncated_blob_fail() -> None:
    blob = encrypt_private_key(MASTER, "ed25519-0123456789", os.urandom(32))
    with pytest.raises(MasterKeyError, match="not in a known encrypted format"):
        decrypt_private_key(MASTER, "ed25519-0123456789", b"\x02" + blob[1:])
    with pytest.raises(MasterKeyError, match="not in a known encrypted format"):
        decrypt_private_key(MASTER, "ed25519-0123456789", blob[:20])


def test_wrong_master_key_fails_with_a_clear_message() -> None:
    seed = os.urandom(32)
    blob = encrypt_private_key(MASTER, "ed25519-0123456789", seed)
    with pytest.raises(MasterKeyError, match=r"cannot decrypt key ed25519-0123456789: wrong master key\?") as caught:
        decrypt_private_key(OTHER_MASTER, "ed25519-0123456789", blob)
    assert seed.hex() not in str(caught.value) and b64u(OTHER_MASTER) not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_blob_moved_to_another_key_id_fails() -> None:
    blob = encrypt_private_key(MASTER, "ed25519-aaaaaaaaaa", os.urandom(32))
    with pytest.raises(MasterKeyError, match="cannot decrypt key ed25519-bbbbbbbbbb"):
        decrypt_private_key(MASTER, "ed25519-bbbbbbbbbb", blob)


def test_master_key_must_be_32_bytes() -> None:
    with pytest.raises(MasterKeyError, match="32 bytes"):
        encrypt_private_key(MASTER[:16], "ed25519-0123456789", b"x" * 32)


# -- the master key ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [b64u(MASTER), b64u(MASTER) + "=", f"  {b64u(MASTER)}\n"])
def test_master_key_from_settings(text: str, tmp_path: Path) -> None:
    assert load_master_key(Settings(master_key=text, keys_dir=tmp_path)) == MASTER


def test_master_key_from_file_and_settings_win(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text(b64u(OTHER_MASTER) + "\n")
    assert load_master_key(Settings(keys_dir=tmp_path)) == OTHER_MASTER
    assert load_master_key(Settings(keys_dir=tmp_path, master_key=b64u(MASTER))) == MASTER


def test_missing_master_key_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match=r"ISSUER_MASTER_KEY.*issuer init"):
        load_master_key(Settings(keys_dir=tmp_path))


@pytest.mark.parametrize(
    "text",
    [
        "",
        b64u(MASTER[:31]),  # 31 bytes
        b64u(MASTER + b"\0"),  # 33 bytes
        base64.b64encode(b"\xfb" * 32).decode(),  # standard alphabet (+ /), not base64url
        b64u(MASTER)[:-1] + "B",  # non-zero trailing bits: a typo
        MASTER.hex(),  # hex is not the format
        b64u(MASTER) + "==",
    ],
)
def test_malformed_master_keys_are_refused_without_echoing_them(text: str, tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="ISSUER_MASTER_KEY") as caught:
        load_master_key(Settings(master_key=text, keys_dir=tmp_path))
    assert not text.strip() or text.strip() not in str(caught.value)
    (tmp_path / "master.key").write_text(text)
    with pytest.raises(MasterKeyError, match=r"master\.key"):
        load_master_key(Settings(keys_dir=tmp_path))


def test_generated_master_key_file_is_private_loadable_and_never_overwritten(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    path = generate_master_key_file(keys_dir)
    assert path == keys_dir / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    master = load_master_key(Settings(keys_dir=keys_dir))
    assert len(master) == 32
    with pytest.raises(MasterKeyError, match="refusing to overwrite"):
        generate_master_key_file(keys_dir)
    assert load_master_key(Settings(keys_dir=keys_dir)) == master
    assert load_master_key(Settings(keys_dir=generate_master_key_file(tmp_path / "other").parent)) != master


# -- generation --------------------------------------------------------------------------------------------


def test_generate_ed25519() -> None:
    key = generate_key("Ed25519")
    assert key.key_id.startswith("ed25519-") and len(key.key_id) == len("ed25519-") + 10
    int(key.key_id.split("-")[1], 16)
    assert len(key.private) == 32
    signer = di.Ed25519Signer(key.private, "did:example:x#k")
    assert key.public_key_multibase == signer.public_key_multibase and key.public_key_multibase.startswith("z6Mk")
    assert key.public_jwk == {"kty": "OKP", "crv": "Ed25519", "x": b64u(signer.public_key)}


def test_generate_rs256() -> None:
    key = generate_key("RS256")
    assert key.key_id.startswith("rs256-") and key.public_key_multibase is None
    private = serialization.load_der_private_key(key.private, None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == RSA_BITS == 3072
    assert set(key.public_jwk) == {"kty", "n", "e"} and key.public_jwk["e"] == "AQAB"
    assert import_jwt_key("RS256", key.private, key.public_jwk).as_dict(private=False) == key.public_jwk


def test_generate_es256() -> None:
    key = generate_key("ES256")
    assert key.key_id.startswith("es256-") and key.public_key_multibase is None
    private = serialization.load_der_private_key(key.private, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1"
    assert set(key.public_jwk) == {"kty", "crv", "x", "y"} and key.public_jwk["crv"] == "P-256"
    imported = import_jwt_key("ES256", key.private, key.public_jwk).as_dict(private=False)
    assert {k: imported[k] for k in key.public_jwk} == key.public_jwk


def test_generate_refuses_unknown_algorithms() -> None:
    with pytest.raises(ValueError, match="unknown key algorithm 'HS256'"):
        generate_key("HS256")


def test_import_refuses_a_private_key_that_does_not_match_its_public_half() -> None:
    one, other = generate_key("ES256"), generate_key("ES256")
    with pytest.raises(KeyringError, match="does not match its published public key"):
        import_jwt_key("ES256", one.private, other.public_jwk)
    with pytest.raises(KeyringError, match="not an RS256 key"):
        import_jwt_key("RS256", one.private, one.public_jwk)


def test_key_ids_are_unique() -> None:
    assert len({generate_key("Ed25519").key_id for _ in range(200)}) == 200


# -- storage: ensure, rotate, compromise (both databases) --------------------------------------------------


def test_ensure_keys_creates_what_is_missing_once(session: Session) -> None:
    issuer = issuer_of(session)
    created = ensure_keys(session, issuer, MASTER)
    session.commit()
    assert sorted(k.algorithm for k in created) == ["Ed25519", "RS256"]
    assert all(k.status == "active" and k.issuer_id == "acme" for k in created)
    assert ensure_keys(session, issuer, MASTER) == []
    assert [k.algorithm for k in ensure_keys(session, issuer, MASTER, ("Ed25519", "ES256"))] == ["ES256"]
    session.commit()
    stored = {k.id: k for k in published_keys(session, "acme")}
    assert len(stored) == 3
    for key in created:
        row = session.get(SigningKey, key.id)
        assert row is not None and row.encrypted_private_key == key.encrypted_private_key
        private = decrypt_private_key(MASTER, key.id, row.encrypted_private_key)
        if key.algorithm == "Ed25519":
            assert di.Ed25519Signer(private, f"{DID}#{key.id}").public_key_multibase == key.public_key_multibase
        else:
            import_jwt_key(key.algorithm, private, key.public_jwk)  # checks it against the public JWK


def test_the_database_refuses_a_second_active_key(session: Session) -> None:
    ensure_keys(session, issuer_of(session), MASTER, ("Ed25519",))
    session.commit()
    twin = generate_key("Ed25519")
    session.add(
        SigningKey(
            id=twin.key_id,
            issuer_id="acme",
            algorithm="Ed25519",
            public_jwk=twin.public_jwk,
            public_key_multibase=twin.public_key_multibase,
            encrypted_private_key=encrypt_private_key(MASTER, twin.key_id, twin.private),
        )
    )
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_rotation_keeps_old_signatures_verifying(session: Session) -> None:
    issuer = issuer_of(session)
    ensure_keys(session, issuer, MASTER)
    session.commit()
    old = active_signers(session, issuer, MASTER)
    signed_before = di.sign(make_credential(1, issuer_did=DID), old.ed25519, created=NOW)
    jwt_before = vc_jwt.sign_jwt(make_credential(2, issuer_did=DID), old.jwt_key, kid=old.jwt_kid, alg=old.jwt_alg)

    old_ed_id = old.ed25519.verification_method.partition("#")[2]
    new_ed = rotate(session, "acme", "Ed25519", MASTER)
    new_rsa = rotate(session, "acme", "RS256", MASTER)
    session.commit()

    retired = session.get(SigningKey, old_ed_id)
    assert retired is not None and retired.status == "retired" and retired.retired_at is not None
    keys = published_keys(session, "acme")
    assert [k.id for k in keys if k.algorithm == "Ed25519"] == [old_ed_id, new_ed.id]
    assert [k.status for k in keys if k.algorithm == "RS256"] == ["retired", "active"]

    new = active_signers(session, issuer, MASTER)
    assert new.ed25519.verification_method == f"{DID}#{new_ed.id}" and new.jwt_kid == f"{DID}#{new_rsa.id}"
    signed_after = di.sign(make_credential(3, issuer_did=DID), new.ed25519, created=NOW)

    fetcher = publishing({DID_URL: did_document(DID, keys)})
    for credential in (signed_before, signed_after, jwt_before):
        checks = verify(credential, fetcher)
        assert checks["issuer_key"] == checks["signature"] == "passed", checks


def test_rotation_of_an_unknown_issuer_or_algorithm_changes_nothing(session: Session) -> None:
    ensure_keys(session, issuer_of(session), MASTER)
    session.commit()
    before = [(k.id, k.status) for k in published_keys(session, "acme")]
    with pytest.raises(UnknownKey, match="no issuer 'nobody'"):
        rotate(session, "nobody", "Ed25519", MASTER)
    with pytest.raises(ValueError, match="unknown key algorithm"):
        rotate(session, "acme", "HS256", MASTER)
    assert [(k.id, k.status) for k in published_keys(session, "acme")] == before


def test_rotation_without_an_active_key_creates_one(session: Session) -> None:
    key = rotate(session, "acme", "ES256", MASTER)
    session.commit()
    assert key.status == "active" and [k.id for k in published_keys(session, "acme")] == [key.id]


def test_compromised_key_is_withdrawn_and_replaced(session: Session) -> None:
    issuer = issuer_of(session)
    ensure_keys(session, issuer, MASTER)
    session.commit()
    signers = active_signers(session, issuer, MASTER)
    signed = di.sign(make_credential(4, issuer_did=DID), signers.ed25519, created=NOW)
    token = vc_jwt.sign_jwt(make_credential(5, issuer_did=DID), signers.jwt_key, kid=signers.jwt_kid)
    ed_id, rsa_id = (vm.partition("#")[2] for vm in (signers.ed25519.verification_method, signers.jwt_kid))

    compromised = mark_compromised(session, ed_id, MASTER)
    mark_compromised(session, rsa_id, MASTER)
    session.commit()
    assert compromised.id == ed_id and compromised.status == "compromised" and compromised.compromised_at is not None
    ed_replacement, rsa_replacement = active_key(session, "acme", "Ed25519"), active_key(session, "acme", "RS256")
    assert ed_replacement is not None and rsa_replacement is not None
    assert "will no longer verify" in COMPROMISE_WARNING

    keys = published_keys(session, "acme")
    assert {k.id for k in keys} == {ed_replacement.id, rsa_replacement.id}
    document = did_document(DID, keys)
    published = json.dumps([document, jwks([(DID, keys)])])
    assert ed_id not in published and rsa_id not in published

    fetcher = publishing({DID_URL: document})
    report = verify_credential(signed, fetcher=fetcher, now=NOW, check_status=False)
    assert not report.verified and report.verdict == "invalid"
    issuer_key = report.check("issuer_key")
    assert issuer_key is not None and issuer_key.status == "failed" and "not listed" in issuer_key.detail
    jwt_report = verify_credential(token, fetcher=fetcher, now=NOW, check_status=False)
    jwt_signature = jwt_report.check("signature")
    assert jwt_signature is not None and jwt_signature.status == "failed" and "not listed" in jwt_signature.detail
    fresh = active_signers(session, issuer, MASTER)
    assert fresh.ed25519.verification_method == f"{DID}#{ed_replacement.id}"
    resigned = di.sign(make_credential(4, issuer_did=DID), fresh.ed25519, created=NOW)
    assert verify(resigned, fetcher)["signature"] == "passed"


def test_compromising_a_retired_key_needs_no_replacement_and_is_idempotent(session: Session) -> None:
    issuer = issuer_of(session)
    (old,) = ensure_keys(session, issuer, MASTER, ("Ed25519",))
    new = rotate(session, "acme", "Ed25519", MASTER)
    compromised = mark_compromised(session, old.id, MASTER)
    session.commit()
    assert active_key(session, "acme", "Ed25519") == new  # no replacement: the active key was not touched
    at = compromised.compromised_at
    again = mark_compromised(session, old.id, MASTER)
    assert again.status == "compromised" and again.compromised_at == at
    assert [k.id for k in published_keys(session, "acme")] == [new.id]
    with pytest.raises(UnknownKey, match="no signing key 'ed25519-nope'"):
        mark_compromised(session, "ed25519-nope", MASTER)


# -- signers -----------------------------------------------------------------------------------------------


def test_active_signers_need_active_keys(session: Session) -> None:
    issuer = issuer_of(session)
    with pytest.raises(NoActiveKey, match="'acme' has no active Ed25519 key"):
        active_signers(session, issuer, MASTER)
    ensure_keys(session, issuer, MASTER, ("Ed25519",))
    with pytest.raises(NoActiveKey, match="no active RS256 or ES256 key"):
        active_signers(session, issuer, MASTER)
    ensure_keys(session, issuer, MASTER, ("ES256",))
    assert active_signers(session, issuer, MASTER).jwt_alg == "ES256"
    ensure_keys(session, issuer, MASTER, ("RS256",))
    assert active_signers(session, issuer, MASTER).jwt_alg == "RS256"
    assert active_signers(session, issuer, MASTER, jwt_algorithms=("ES256",)).jwt_alg == "ES256"


def test_active_signers_are_cached_and_need_the_right_master_key(session: Session) -> None:
    issuer = issuer_of(session)
    ensure_keys(session, issuer, MASTER)
    session.commit()
    with pytest.raises(MasterKeyError, match="wrong master key"):
        active_signers(session, issuer, OTHER_MASTER)
    first = active_signers(session, issuer, MASTER)
    second = active_signers(session, issuer, MASTER)
    assert second.jwt_key is first.jwt_key and second.ed25519 is first.ed25519
    clear_signer_cache()
    third = active_signers(session, issuer, MASTER)
    assert third.jwt_key is not first.jwt_key and third.ed25519 == first.ed25519


def test_jwt_from_the_active_rs256_key_verifies_through_the_did_document_and_jwks(session: Session) -> None:
    issuer = issuer_of(session)
    ensure_keys(session, issuer, MASTER)
    other = Issuer(id="other", did="did:web:badges.example.edu:issuers:other", name="Other")
    session.add(other)
    session.flush()
    ensure_keys(session, other, MASTER)
    session.commit()
    signers = active_signers(session, issuer, MASTER)
    assert signers.jwt_alg == "RS256"
    token = vc_jwt.sign_jwt(make_credential(6, issuer_did=DID), signers.jwt_key, kid=signers.jwt_kid)
    assert vc_jwt.decode_jwt(token).header == {"alg": "RS256", "kid": signers.jwt_kid, "typ": "JWT"}

    keys = published_keys(session, "acme")
    report = verify_credential(
        token, fetcher=publishing({DID_URL: did_document(DID, keys)}), now=NOW, check_status=False
    )
    assert report.verified, report.to_dict()["checks"]

    key_set = jwks([(DID, keys), (other.did, published_keys(session, "other"))])
    ours = [k for k in key_set["keys"] if k["kid"] == signers.jwt_kid]
    assert len(key_set["keys"]) == 2 and len(ours) == 1
    assert ours[0]["iss"] == DID and ours[0]["alg"] == "RS256" and ours[0]["use"] == "sig"
    # A verifier that reads the JWKS instead (kid matched there, as 1EdTech's validator does) finds the same key.
    # Ours reads it when the token names no key: the signing input stays the same, only the lookup changes.
    decoded = vc_jwt.decode_jwt(token)
    without_kid = dataclasses.replace(decoded, header={"alg": "RS256", "typ": "JWT"})
    found = vc_jwt.verify_jwt_signature(without_kid, fetcher=publishing({JWKS_URL: jwks([(DID, keys)])}))
    assert found.issuer_bound and found.jwk["kid"] == signers.jwt_kid


def test_did_document_shape(session: Session) -> None:
    ensure_keys(session, issuer_of(session), MASTER, ("Ed25519", "RS256", "ES256"))
    session.commit()
    keys = published_keys(session, "acme")
    document = did_document(DID, keys)
    assert document["@context"] == ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
    assert document["id"] == DID
    by_type = {m["type"]: m for m in document["verificationMethod"]}
    assert set(by_type) == {"Multikey", "JsonWebKey"} and len(document["verificationMethod"]) == 3
    assert document["assertionMethod"] == [m["id"] for m in document["verificationMethod"]]
    assert all(m["controller"] == DID and m["id"].startswith(DID + "#") for m in document["verificationMethod"])
    assert "authentication" not in document
    for method in document["verificationMethod"]:
        found = verifier_did.method_from_document(document, method["id"], purpose="assertionMethod")
        assert found.controller == DID
        assert (found.public_key is not None) == (method["type"] == "Multikey")
    published = jwks([(DID, keys)])["keys"]
    assert sorted(k["alg"] for k in published) == ["ES256", "RS256"]  # the VC-JWT keys only
    es256 = active_signers(session, issuer_of(session), MASTER, jwt_algorithms=("ES256",))
    token = vc_jwt.sign_jwt(make_credential(7, issuer_did=DID), es256.jwt_key, kid=es256.jwt_kid, alg="ES256")
    assert verify_credential(token, fetcher=publishing({DID_URL: document}), now=NOW, check_status=False).verified
    assert all(set(k) - {"kid", "alg", "use", "iss"} <= {"kty", "n", "e", "crv", "x", "y"} for k in published)


# -- secrecy -----------------------------------------------------------------------------------------------


def test_private_bytes_never_appear_in_reprs(session: Session) -> None:
    issuer = issuer_of(session)
    for algorithm in ("Ed25519", "RS256", "ES256"):
        key = generate_key(algorithm)
        text = repr(key) + str(key)
        assert "private=<hidden>" in text
        assert _leaks(key.private, text) == []
    created = ensure_keys(session, issuer, MASTER)
    signers = active_signers(session, issuer, MASTER)
    texts = repr(signers) + str(signers)
    for row in created:
        private = decrypt_private_key(MASTER, row.id, row.encrypted_private_key)
        assert _leaks(private, texts) == []
    assert _leaks(MASTER, texts) == []


def _leaks(secret: bytes, text: str) -> list[str]:
    """Which common renderings of `secret` (or a 16-byte window of it) occur in `text`."""
    window = secret[8:24]
    forms = {
        "hex": window.hex(),
        "b64url": b64u(window)[1:-2],
        "b64": base64.b64encode(window).decode()[1:-2],
        "repr": repr(window)[2:-1],
    }
    return [name for name, form in forms.items() if form in text]


def test_only_public_jwk_members_and_publishable_keys_are_published() -> None:
    rsa_key = generate_key("RS256")
    private = serialization.load_der_private_key(rsa_key.private, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    d = b64u(private.private_numbers().d.to_bytes(384, "big"))
    leaky = SigningKey(
        id=rsa_key.key_id,
        issuer_id="acme",
        algorithm="RS256",
        public_jwk={**rsa_key.public_jwk, "d": d, "kid": "x"},  # a corrupted row: must still not leak
        encrypted_private_key=b"",
    )
    gone = SigningKey(
        id="rs256-0000000000",
        issuer_id="acme",
        algorithm="RS256",
        status="compromised",
        public_jwk=rsa_key.public_jwk,
        encrypted_private_key=b"",
    )
    document, key_set = did_document(DID, [leaky, gone]), jwks([(DID, [leaky, gone])])
    assert d not in json.dumps([document, key_set]) and "rs256-0000000000" not in json.dumps([document, key_set])
    assert document["verificationMethod"][0]["publicKeyJwk"] == rsa_key.public_jwk
    assert [k["kid"] for k in key_set["keys"]] == [f"{DID}#{rsa_key.key_id}"]


def test_signing_material_follows_rotation_and_compromise(session: Session) -> None:
    """Issuance reuses what it built from the published keys only while their ids and statuses are unchanged:
    a rotation or a compromise (made by any process, straight in the database) shows on the next call."""
    issuer = issuer_of(session)
    ensure_keys(session, issuer, MASTER)
    session.commit()
    first = signing_material(session, issuer, MASTER)
    assert signing_material(session, issuer, MASTER) is first  # nothing changed: reused
    assert json.loads(first.did_document) == did_document(DID, published_keys(session, "acme"))

    new_ed = rotate(session, "acme", "Ed25519", MASTER)
    session.commit()
    rotated = signing_material(session, issuer, MASTER)
    assert rotated.signers.ed25519.verification_method == f"{DID}#{new_ed.id}"
    published = {method["id"] for method in json.loads(rotated.did_document)["verificationMethod"]}
    assert f"{DID}#{new_ed.id}" in published and first.signers.ed25519.verification_method in published

    mark_compromised(session, new_ed.id, MASTER)
    session.commit()
    after = signing_material(session, issuer, MASTER)
    published = {method["id"] for method in json.loads(after.did_document)["verificationMethod"]}
    assert f"{DID}#{new_ed.id}" not in published
    assert after.signers.ed25519.verification_method != f"{DID}#{new_ed.id}"
