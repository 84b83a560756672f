"""did:key, did:web and JWKS key resolution; network cases against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.http_server import LocalServer
from verifier.did import (
    VerificationMethod,
    clear_cache,
    did_key_document,
    did_key_from_public_key,
    did_web_url,
    find_jwk,
    locate_jwk,
    method_from_document,
    public_key_to_jwk,
    resolve_did,
    resolve_verification_method,
)
from verifier.errors import CannotCheck, FetchError, InvalidCredential
from verifier.fetch import HttpFetcher, offline_fetcher
from verifier.multikey import PublicKey, decode_public_key

DATA = Path(__file__).resolve().parents[1] / "vectors" / "data"
DERIVED = json.loads((DATA / "derived" / "did-key-from-vc-di-eddsa-keypair.json").read_text())
W3C_KEY = json.loads((DATA / "vc-di-eddsa" / "keyPair.json").read_text())["publicKeyMultibase"]
ED_DID = DERIVED["didKey"]
ED_VM = DERIVED["verificationMethodId"]


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    clear_cache()
    with HttpFetcher(allow_http_loopback=True, timeout=3.0) as f:
        yield f


def _p256_public_key() -> PublicKey:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    )
    return PublicKey("P-256", point)


# -- did:key ---------------------------------------------------------------------------------------------


def test_did_key_of_the_w3c_vector_key_matches_the_derived_fixture() -> None:
    assert did_key_from_public_key(decode_public_key(W3C_KEY)) == ED_DID
    assert did_key_document(ED_DID) == DERIVED["didKeyDocument"]
    assert resolve_did(ED_DID, fetcher=offline_fetcher) == DERIVED["didKeyDocument"]


def test_did_key_verification_method_with_and_without_fragment() -> None:
    full = resolve_verification_method(ED_VM, fetcher=offline_fetcher)
    bare = resolve_verification_method(ED_DID, fetcher=offline_fetcher)
    assert full == bare
    assert full.id == ED_VM
    assert full.controller == ED_DID
    assert full.type == "Multikey"
    assert full.public_key is not None
    assert full.public_key.raw.hex() == DERIVED["publicKeyRawHex"]
    assert full.jwk is None


def test_did_key_p256() -> None:
    key = _p256_public_key()
    did = did_key_from_public_key(key)
    assert did.startswith("did:key:zDn")
    document = did_key_document(did)
    assert document["verificationMethod"][0]["publicKeyMultibase"] == key.multibase
    assert document["assertionMethod"] == [f"{did}#{key.multibase}"]
    method = resolve_verification_method(did, fetcher=offline_fetcher)
    assert method.public_key == key
    jwk = public_key_to_jwk(key)
    numbers = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.raw).public_numbers()
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    assert int.from_bytes(_b64d(jwk["x"]), "big") == numbers.x
    assert int.from_bytes(_b64d(jwk["y"]), "big") == numbers.y


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(
    "did",
    [
        "did:key:",
        "did:key:abc",
        "did:key:z6Mk",
        "did:key:" + W3C_KEY + "x",
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",  # secp256k1: not supported
        "did:key:" + W3C_KEY + "#frag",
    ],
)
def test_malformed_or_unsupported_did_key(did: str) -> None:
    with pytest.raises(InvalidCredential):
        resolve_did(did, fetcher=offline_fetcher)


def test_unsupported_did_method_is_could_not_check() -> None:
    with pytest.raises(CannotCheck) as info:
        resolve_did("did:example:12345", fetcher=offline_fetcher)
    assert not isinstance(info.value, InvalidCredential)
    with pytest.raises(InvalidCredential):
        resolve_did("not-a-did", fetcher=offline_fetcher)


# -- did:web URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:example.com", "https://example.com/.well-known/did.json"),
        ("did:web:w3c-ccg.github.io:user:alice", "https://w3c-ccg.github.io/user/alice/did.json"),
        ("did:web:example.com%3A3000", "https://example.com:3000/.well-known/did.json"),
        ("did:web:example.com%3a3000:a:b", "https://example.com:3000/a/b/did.json"),
        (
            "did:web:dc.1edtech.org:wellspring2022:wellspring-portal:org:da1e96e9-afcc-4eed-b9a2-2ddf7353214c",
            "https://dc.1edtech.org/wellspring2022/wellspring-portal/org/da1e96e9-afcc-4eed-b9a2-2ddf7353214c/did.json",
        ),
        ("did:web:example.com:user%20name", "https://example.com/user%20name/did.json"),
        ("did:web:localhost%3A8080", "https://localhost:8080/.well-known/did.json"),
    ],
)
def test_did_web_url(did: str, url: str) -> None:
    assert did_web_url(did) == url


@pytest.mark.parametrize(
    "did",
    [
        "did:web:",
        "did:web:example.com:",
        "did:web::a",
        "did:web:example.com::a",
        "did:web:exa mple.com",
        "did:web:example.com%3A",
        "did:web:example.com%3A0",
        "did:web:example.com%3A99999",
        "did:web:example.com%3Aabc",
        "did:web:example.com%2Fevil",
        "did:web:example.com%40evil.org",
        "did:web:192.168.0.1",
        "did:web:127.0.0.1%3A8080",
        "did:web:example.com:..:etc",
        "did:web:example.com/path",
        "did:web:example.com#key-1",
        "did:web:example.com?x=1",
        "did:web:-bad.example",
        "did:key:" + W3C_KEY,
        "web:example.com",
    ],
)
def test_did_web_url_rejects_malformed(did: str) -> None:
    with pytest.raises(InvalidCredential):
        did_web_url(did)


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:localhost%3A8080", "http://localhost:8080/.well-known/did.json"),
        ("did:web:127.0.0.1%3A8080:issuers:1", "http://127.0.0.1:8080/issuers/1/did.json"),
        ("did:web:example.com", "https://example.com/.well-known/did.json"),
    ],
)
def test_did_web_url_http_only_for_loopback(did: str, url: str) -> None:
    assert did_web_url(did, http_loopback=True) == url


# -- documents -------------------------------------------------------------------------------------------

DOC_ID = "did:web:issuer.example"


def _doc(did: str = DOC_ID, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "verificationMethod": [
            {"id": "#key-1", "type": "Multikey", "controller": did, "publicKeyMultibase": W3C_KEY},
            {
                "id": f"{did}#jwk",
                "type": "JsonWebKey",
                "controller": did,
                "publicKeyJwk": {"kty": "OKP", "crv": "Ed25519", "x": "sA2Nk45_dz1RVlqtNqYj9TRPf10ZYPnPPo4SYg6igQ8"},
            },
        ],
        "assertionMethod": [f"{did}#key-1", "#jwk"],
        "authentication": ["#key-1"],
    }
    document.update(extra)
    return document


def test_method_from_document_resolves_relative_ids() -> None:
    method = method_from_document(_doc(), f"{DOC_ID}#key-1", purpose="assertionMethod")
    assert method == VerificationMethod(f"{DOC_ID}#key-1", DOC_ID, "Multikey", decode_public_key(W3C_KEY), None)
    jwk_method = method_from_document(_doc(), f"{DOC_ID}#jwk", purpose="assertionMethod")
    assert jwk_method.jwk is not None
    assert jwk_method.public_key is None
    assert public_key_to_jwk(decode_public_key(W3C_KEY)) == jwk_method.jwk


def test_method_must_be_listed_under_the_purpose() -> None:
    with pytest.raises(InvalidCredential, match="capabilityInvocation"):
        method_from_document(_doc(), f"{DOC_ID}#key-1", purpose="capabilityInvocation")
    with pytest.raises(InvalidCredential, match="not listed"):
        method_from_document(_doc(), f"{DOC_ID}#jwk", purpose="authentication")


def test_embedded_method_in_the_relationship() -> None:
    embedded = {"id": "#emb", "type": "Ed25519VerificationKey2020", "controller": DOC_ID, "publicKeyMultibase": W3C_KEY}
    method = method_from_document(_doc(assertionMethod=[embedded]), f"{DOC_ID}#emb", purpose="assertionMethod")
    assert method.type == "Ed25519VerificationKey2020"


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ({"type": "Multikey", "controller": DOC_ID}, InvalidCredential),
        ({"type": "Multikey", "publicKeyMultibase": W3C_KEY}, InvalidCredential),
        ({"type": "Multikey", "controller": DOC_ID, "publicKeyMultibase": "zBad0"}, InvalidCredential),
        ({"type": "JsonWebKey", "controller": DOC_ID, "publicKeyJwk": {"kty": "EC", "d": "secret"}}, InvalidCredential),
        (
            {"type": "JsonWebKey2020", "controller": DOC_ID, "publicKeyJwk": {"kty": "oct", "k": "c2VjcmV0"}},
            InvalidCredential,
        ),
        ({"type": "JsonWebKey", "controller": DOC_ID, "publicKeyJwk": "not a jwk"}, InvalidCredential),
        ({"type": "EcdsaSecp256k1VerificationKey2019", "controller": DOC_ID}, CannotCheck),
    ],
)
def test_bad_methods(method: dict[str, Any], error: type[Exception]) -> None:
    document = _doc(verificationMethod=[{"id": "#k", **method}], assertionMethod=["#k"])
    with pytest.raises(error):
        method_from_document(document, f"{DOC_ID}#k", purpose="assertionMethod")


def test_listed_but_undefined_method() -> None:
    with pytest.raises(InvalidCredential, match="not defined"):
        method_from_document(_doc(assertionMethod=["#ghost"]), f"{DOC_ID}#ghost", purpose="assertionMethod")


def test_1edtech_https_fragment_key_needs_no_fetch() -> None:
    fixture = json.loads((DATA / "ob3-validator-fixtures" / "simple.json").read_text())
    vm_id = fixture["proof"][0]["verificationMethod"]
    method = resolve_verification_method(vm_id, fetcher=offline_fetcher)
    base, _, fragment = vm_id.partition("#")
    assert method.controller == base == fixture["issuer"]["id"]
    assert method.public_key == decode_public_key(fragment)


def test_https_method_without_a_key_fragment_fetches_the_controller_document() -> None:
    with pytest.raises(FetchError):
        resolve_verification_method("https://issuer.example/keys#key-1", fetcher=offline_fetcher)


@pytest.mark.parametrize("vm_id", ["", f"{DOC_ID}", "did:web:issuer.example#", "urn:uuid:1234#key", "ftp://x#z6Mk"])
def test_unresolvable_method_ids(vm_id: str) -> None:
    with pytest.raises(CannotCheck if vm_id.startswith(("urn", "ftp")) else InvalidCredential):
        resolve_verification_method(vm_id, fetcher=offline_fetcher)


# -- did:web over HTTP -------------------------------------------------------------------------------------


def _did_web(server: LocalServer, path: str = "issuers:1") -> str:
    return f"did:web:127.0.0.1%3A{server.port}:{path}"


def test_did_web_resolution(server: LocalServer, fetcher: HttpFetcher) -> None:
    did = _did_web(server)
    document = _doc(did)
    server.json("/issuers/1/did.json", json.dumps(document).encode(), content_type="application/did+json")
    assert resolve_did(did, fetcher=fetcher, http_loopback=True) == document
    method = resolve_verification_method(f"{did}#key-1", fetcher=fetcher, http_loopback=True)
    assert method.controller == did
    assert method.public_key == decode_public_key(W3C_KEY)
    assert server.requests[0][1]["accept"].startswith("application/did+json")
    assert len(server.requests) == 1  # the second resolution came from the cache
    clear_cache()
    resolve_did(did, fetcher=fetcher, http_loopback=True)
    assert len(server.requests) == 2


def test_did_web_document_for_another_did_is_refused(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.json("/issuers/1/did.json", json.dumps(_doc()).encode())
    with pytest.raises(InvalidCredential, match="has id"):
        resolve_did(_did_web(server), fetcher=fetcher, http_loopback=True)


def test_did_web_missing_or_garbage(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.json("/issuers/2/did.json", b"<html>captive portal</html>", content_type="text/html")
    with pytest.raises(FetchError):
        resolve_did(_did_web(server), fetcher=fetcher, http_loopback=True)
    with pytest.raises(CannotCheck) as info:
        resolve_did(_did_web(server, "issuers:2"), fetcher=fetcher, http_loopback=True)
    assert not isinstance(info.value, InvalidCredential)


def test_did_web_http_needs_a_fetcher_that_allows_it(server: LocalServer) -> None:
    server.json("/issuers/1/did.json", b"{}")
    with HttpFetcher() as strict, pytest.raises(FetchError) as info:
        resolve_did(_did_web(server), fetcher=strict, http_loopback=True)
    assert info.value.code == "fetch_scheme"
    assert server.requests == []


# -- JWKs ----------------------------------------------------------------------------------------------------

RSA_JWK = {"kty": "RSA", "kid": "rsa-1", "n": "sXch", "e": "AQAB"}
EC_JWK = {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": "f83O", "y": "x_FE"}


def test_jwks_at_the_issuer_authority(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.json("/.well-known/jwks.json", json.dumps({"keys": [RSA_JWK, EC_JWK]}).encode())
    issuer = f"http://127.0.0.1:{server.port}/issuers/565049"
    assert find_jwk("ec-1", issuer_id=issuer, fetcher=fetcher, http_loopback=True) == EC_JWK
    found = locate_jwk("rsa-1", issuer_id=issuer, fetcher=fetcher, http_loopback=True)
    assert found.jwk == RSA_JWK
    assert found.issuer_bound
    assert server.requests[0][1]["accept"].startswith("application/jwk-set+json")
    with pytest.raises(InvalidCredential, match="not published"):
        find_jwk("rsa-2", issuer_id=issuer, fetcher=fetcher, http_loopback=True)
    with pytest.raises(CannotCheck, match="2 signing keys"):
        find_jwk(None, issuer_id=issuer, fetcher=fetcher, http_loopback=True)


def test_jwks_for_a_did_web_issuer_lives_at_its_host(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.json("/.well-known/jwks.json", json.dumps({"keys": [RSA_JWK]}).encode())
    issuer = _did_web(server, "org:42")
    assert find_jwk(None, issuer_id=issuer, fetcher=fetcher, http_loopback=True) == RSA_JWK
    assert server.requests[0][0] == "/.well-known/jwks.json"


def test_jwks_refuses_private_keys_and_foreign_iss(server: LocalServer, fetcher: HttpFetcher) -> None:
    issuer = f"http://127.0.0.1:{server.port}/i"
    server.json("/.well-known/jwks.json", json.dumps({"keys": [{**RSA_JWK, "d": "secret"}]}).encode())
    with pytest.raises(InvalidCredential, match="private"):
        find_jwk("rsa-1", issuer_id=issuer, fetcher=fetcher, http_loopback=True)
    clear_cache()
    server.json("/.well-known/jwks.json", json.dumps({"keys": [{**RSA_JWK, "iss": "https://other"}]}).encode())
    with pytest.raises(InvalidCredential, match="iss"):
        find_jwk("rsa-1", issuer_id=issuer, fetcher=fetcher, http_loopback=True)


def test_kid_url_with_fragment(server: LocalServer, fetcher: HttpFetcher) -> None:
    server.json("/keys.json", json.dumps({"keys": [{**EC_JWK, "kid": "k7"}]}).encode())
    kid = f"http://127.0.0.1:{server.port}/keys.json#k7"
    found = locate_jwk(kid, issuer_id=f"http://127.0.0.1:{server.port}/i", fetcher=fetcher, http_loopback=True)
    assert found.jwk["kid"] == "k7"
    assert found.issuer_bound
    other = locate_jwk(kid, issuer_id="https://someone.example/", fetcher=fetcher, http_loopback=True)
    assert not other.issuer_bound


def test_kid_did_url(fetcher: HttpFetcher) -> None:
    found = locate_jwk(ED_VM, issuer_id=ED_DID, fetcher=fetcher)
    assert found.jwk == {"kty": "OKP", "crv": "Ed25519", "x": "sA2Nk45_dz1RVlqtNqYj9TRPf10ZYPnPPo4SYg6igQ8"}
    assert found.issuer_bound
    assert not locate_jwk(ED_VM, issuer_id="https://someone.example", fetcher=fetcher).issuer_bound


def test_no_kid_and_no_web_authority() -> None:
    with pytest.raises(CannotCheck, match="no web authority"):
        find_jwk(None, issuer_id="urn:uuid:8b5e1a2c-0000-4000-8000-000000000000", fetcher=offline_fetcher)
