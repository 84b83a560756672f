"""VC-JWT (OB 3.0 §8.2): round trips with real keys, the 1EdTech fixtures, refusals and claim contradictions."""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, OKPKey, RSAKey

from verifier.did import did_key_from_public_key, public_key_to_jwk
from verifier.errors import CannotCheck, InvalidCredential
from verifier.fetch import Fetcher, offline_fetcher
from verifier.multikey import PublicKey
from verifier.suites.vc_jwt import (
    DecodedJwt,
    SigningKey,
    check_jwt_claims,
    decode_jwt,
    import_signing_key,
    sign_jwt,
    verify_jwt_signature,
)

FIXTURES = Path(__file__).resolve().parents[1] / "vectors" / "data" / "ob3-validator-fixtures"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
ISSUER = "https://badges.example.edu/issuers/1"
JWKS_URL = "https://badges.example.edu/.well-known/jwks.json"


def _credential(**changes: Any) -> dict[str, Any]:
    credential: dict[str, Any] = {
        "@context": [
            "https://www.w3.org/ns/credentials/v2",
            "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json",
        ],
        "id": "urn:uuid:1b5a2f1e-8f1c-4c1e-9d43-7d8c7f0e9a11",
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "issuer": {"id": ISSUER, "type": ["Profile"], "name": "Example Institute — Zoë's school"},
        "validFrom": "2024-03-01T12:00:00Z",
        "validUntil": "2030-03-01T12:00:00Z",
        "name": "Teamwork Badge",
        "credentialSubject": {
            "id": "did:example:ebfeb1f712ebc6f1c276e12ec21",
            "type": ["AchievementSubject"],
            "achievement": {
                "id": "https://badges.example.edu/achievements/1",
                "type": ["Achievement"],
                "name": "Teamwork",
                "criteria": {"narrative": "Work well with others."},
            },
        },
    }
    credential.update(changes)
    return credential


def _jwks_fetcher(*jwks: dict[str, Any]) -> Fetcher:
    """A Fetcher (the injection point, not our code) serving one JWKS at the issuer's well-known URL."""
    body = json.dumps({"keys": list(jwks)}).encode()

    def fetch(url: str, *, accept: str = "application/json") -> bytes:
        if url != JWKS_URL:
            raise AssertionError(f"unexpected fetch of {url}")
        return body

    return fetch


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, private=True)


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True)


@pytest.fixture(scope="module")
def ed_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519", private=True)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _did_key_of(key: ECKey | OKPKey) -> str:
    jwk = {k: str(v) for k, v in key.as_dict(private=False).items()}
    if jwk["kty"] == "OKP":
        return did_key_from_public_key(PublicKey("Ed25519", _b64d(jwk["x"])))
    prefix = b"\x02" if _b64d(jwk["y"])[-1] % 2 == 0 else b"\x03"
    return did_key_from_public_key(PublicKey("P-256", prefix + _b64d(jwk["x"])))


# -- round trips -------------------------------------------------------------------------------------------


def test_rs256_round_trip_with_the_issuer_jwks(rsa_key: RSAKey) -> None:
    credential = _credential()
    token = sign_jwt(credential, rsa_key, kid="key-1")
    header_b64, payload_b64, _ = token.split(".")
    assert _b64d(header_b64) == b'{"alg":"RS256","kid":"key-1","typ":"JWT"}'
    payload = json.loads(_b64d(payload_b64))
    assert payload["iss"] == ISSUER
    assert payload["jti"] == credential["id"]
    assert payload["sub"] == credential["credentialSubject"]["id"]
    assert payload["nbf"] == int(datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp())
    assert payload["exp"] == int(datetime(2030, 3, 1, 12, tzinfo=UTC).timestamp())
    assert "vc" not in payload

    decoded = decode_jwt(token)
    assert decoded.credential == credential
    assert not decoded.is_legacy_vc
    found = verify_jwt_signature(decoded, fetcher=_jwks_fetcher({**rsa_key.as_dict(private=False), "kid": "key-1"}))
    assert found.issuer_bound
    check_jwt_claims(decoded, now=NOW)


@pytest.mark.parametrize("which", ["ES256", "EdDSA"])
def test_did_key_round_trips(which: str, ec_key: ECKey, ed_key: OKPKey) -> None:
    key: ECKey | OKPKey = ec_key if which == "ES256" else ed_key
    did = _did_key_of(key)
    credential = _credential(issuer=did)  # issuer as a plain string
    token = sign_jwt(credential, key, kid=f"{did}#{did.removeprefix('did:key:')}", alg=which)
    decoded = decode_jwt(token)
    assert decoded.header == {"alg": which, "kid": f"{did}#{did.removeprefix('did:key:')}", "typ": "JWT"}
    found = verify_jwt_signature(decoded, fetcher=offline_fetcher)
    assert found.issuer_bound
    assert found.jwk == {k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x", "y")}
    check_jwt_claims(decoded, now=NOW)


def test_signing_with_a_jwk_dict_and_a_pre_imported_key_agree(ed_key: OKPKey) -> None:
    private = ed_key.as_dict(private=True)
    assert sign_jwt(_credential(), private, kid="k", alg="EdDSA") == sign_jwt(
        _credential(), import_signing_key(private), kid="k", alg="EdDSA"
    )  # Ed25519 is deterministic


def test_optional_claims_are_omitted() -> None:
    key = OKPKey.generate_key("Ed25519", private=True)
    credential = _credential()
    del credential["validUntil"], credential["credentialSubject"]["id"], credential["id"]
    payload = json.loads(_b64d(sign_jwt(credential, key, kid="k", alg="EdDSA").split(".")[1]))
    assert {"exp", "sub", "jti"}.isdisjoint(payload)


# -- 1EdTech fixtures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["simple-jwt.png.itxt-text", "simple-jwt.svg.verify-attr"])
def test_1edtech_fixture_jwts_verify_with_their_header_jwk(name: str) -> None:
    decoded = decode_jwt((FIXTURES / "expected-extractions" / name).read_text())
    assert decoded.header["alg"] == "RS256"
    assert "typ" not in decoded.header
    assert decoded.credential["issuer"]["id"] == "https://1edtech.edu/issuers/565049"
    assert {"iat", "aud", "iss", "nbf", "jti"}.isdisjoint(decoded.credential)
    found = verify_jwt_signature(decoded, fetcher=offline_fetcher)
    assert found.source == "JOSE header jwk"
    assert not found.issuer_bound  # a self-asserted key: proves integrity, not who signed
    check_jwt_claims(decoded, now=NOW)


def test_1edtech_fixture_tampered_payload_fails() -> None:
    token = (FIXTURES / "expected-extractions" / "simple-jwt.png.itxt-text").read_text().strip()
    header, payload, signature = token.split(".")
    claims = json.loads(_b64d(payload))
    claims["name"] = "Teamwork Badge!"
    with pytest.raises(InvalidCredential) as info:
        verify_jwt_signature(
            decode_jwt(f"{header}.{_b64e(json.dumps(claims).encode())}.{signature}"), fetcher=offline_fetcher
        )
    assert info.value.code == "jwt_signature"


def test_vcdm_1_1_jwt_carries_the_credential_in_vc() -> None:
    decoded = decode_jwt((FIXTURES / "simple.jwt").read_text())
    assert decoded.is_legacy_vc
    assert decoded.credential["id"] == "http://example.edu/credentials/3732"
    assert decoded.credential["issuanceDate"] == "2010-01-01T00:00:00Z"
    check_jwt_claims(decoded, now=NOW)
    with pytest.raises(CannotCheck):  # no kid, no jwk: the issuer's JWKS would be needed
        verify_jwt_signature(decoded, fetcher=offline_fetcher)


def test_vcdm_1_1_claims_fill_what_vc_leaves_out() -> None:
    payload = {
        "vc": {"@context": ["https://www.w3.org/2018/credentials/v1"], "credentialSubject": {"name": "x"}},
        "iss": ISSUER,
        "jti": "urn:uuid:1",
        "sub": "did:example:1",
        "nbf": 1262304000,
        "exp": 1893456000,
    }
    decoded = decode_jwt(_unsigned_token({"alg": "RS256"}, payload))
    assert decoded.credential["issuer"] == ISSUER
    assert decoded.credential["id"] == "urn:uuid:1"
    assert decoded.credential["credentialSubject"] == {"name": "x", "id": "did:example:1"}
    assert decoded.credential["issuanceDate"] == "2010-01-01T00:00:00Z"
    assert decoded.credential["expirationDate"] == "2030-01-01T00:00:00Z"
    check_jwt_claims(decoded, now=NOW)


# -- refusals ----------------------------------------------------------------------------------------------


def _unsigned_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"sig") -> str:
    return ".".join(_b64e(part) for part in (json.dumps(header).encode(), json.dumps(payload).encode(), signature))


def test_alg_none_is_refused() -> None:
    token = _b64e(b'{"alg":"none","typ":"JWT"}') + "." + _b64e(json.dumps(_credential()).encode()) + "."
    with pytest.raises(InvalidCredential):
        decode_jwt(token)
    with pytest.raises(InvalidCredential, match="none"):
        decode_jwt(token + "AA")


def test_hs256_is_refused_even_when_the_mac_is_right(rsa_key: RSAKey) -> None:
    # the classic confusion: HMAC keyed with the issuer's public key, which anyone has
    secret = json.dumps(rsa_key.as_dict(private=False)).encode()
    signing_input = _b64e(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64e(json.dumps(_credential()).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidCredential, match="HMAC") as info:
        decode_jwt(f"{signing_input}.{_b64e(mac)}")
    assert info.value.code == "jwt_alg"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"alg": "HS512"}, "HMAC"),
        ({"alg": "ES256K"}, "not supported"),
        ({"alg": "RSA-OAEP"}, "not supported"),
        ({}, "no alg"),
        ({"alg": 256}, "no alg"),
        ({"alg": "RS256", "jku": "https://evil.example/jwks"}, "jku"),
        ({"alg": "RS256", "x5u": "https://evil.example/cert"}, "x5u"),
        ({"alg": "RS256", "crit": ["b64"], "b64": False}, "crit"),
        ({"alg": "RS256", "cty": "vc"}, "cty"),
        ({"alg": "RS256", "typ": "vc+jwt"}, "typ"),
        ({"alg": "RS256", "typ": "jwt"}, "typ"),
        ({"alg": "RS256", "kid": ""}, "kid"),
        ({"alg": "RS256", "kid": 7}, "kid"),
        ({"alg": "RS256", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}}, "private"),
        ({"alg": "RS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}, "symmetric"),
        ({"alg": "RS256", "jwk": "key"}, "JWK"),
    ],
)
def test_header_refusals(header: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCredential, match=message):
        decode_jwt(_unsigned_token(header, _credential()))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9..c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e30=.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln+",
        "bm90IGpzb24.e30.c2ln",
        "WzFd.e30.c2ln",  # header is [1]
        "eyJhbGciOiJSUzI1NiJ9.WzFd.c2ln",  # payload is [1]
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",  # {} : not a credential
        "eyJhbGciOiJSUzI1NiJ9.eyJ2YyI6MX0.c2ln",  # {"vc":1}
        "eyJhbGciOiJSUzI1NiJ9.__8.c2ln",  # invalid UTF-8
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(InvalidCredential):
        decode_jwt(token)


def test_duplicate_members_and_nan_are_refused() -> None:
    payload = json.dumps(_credential())[:-1] + ', "name": "Other"}'
    with pytest.raises(InvalidCredential, match="duplicate"):
        decode_jwt(_b64e(b'{"alg":"RS256"}') + "." + _b64e(payload.encode()) + ".c2ln")
    with pytest.raises(InvalidCredential, match="NaN"):
        decode_jwt(_b64e(b'{"alg":"RS256"}') + "." + _b64e(b'{"@context":[],"x":NaN}') + ".c2ln")


def test_token_with_surrounding_whitespace_is_accepted() -> None:
    token = (FIXTURES / "simple.jwt").read_text()
    assert decode_jwt(f"\n {token.strip()}\n").is_legacy_vc


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.binary(max_size=60), min_size=3, max_size=3)))
def test_decode_raises_only_invalid_credential(value: str | list[bytes]) -> None:
    token = value if isinstance(value, str) else ".".join(_b64e(part) for part in value)
    with contextlib.suppress(InvalidCredential):
        decode_jwt(token)


# -- signature failures --------------------------------------------------------------------------------------


def _tamper(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(_b64d(payload))
    change(claims)
    return f"{header}.{_b64e(json.dumps(claims).encode())}.{signature}"


def test_tampered_payload_and_signature_fail(ed_key: OKPKey) -> None:
    did = _did_key_of(ed_key)
    token = sign_jwt(_credential(issuer=did), ed_key, kid=did, alg="EdDSA")
    tampered = _tamper(token, lambda c: c["credentialSubject"].update(id="did:example:mallory"))
    with pytest.raises(InvalidCredential, match="does not verify"):
        verify_jwt_signature(decode_jwt(tampered), fetcher=offline_fetcher)
    header, payload, signature = token.split(".")
    flipped = bytearray(_b64d(signature))
    flipped[0] ^= 1
    with pytest.raises(InvalidCredential, match="does not verify"):
        verify_jwt_signature(decode_jwt(f"{header}.{payload}.{_b64e(bytes(flipped))}"), fetcher=offline_fetcher)


def test_signature_by_another_key_fails(rsa_key: RSAKey) -> None:
    other = RSAKey.generate_key(2048, private=True)
    token = sign_jwt(_credential(), other, kid="key-1")
    jwks = _jwks_fetcher({**rsa_key.as_dict(private=False), "kid": "key-1"})
    with pytest.raises(InvalidCredential) as info:
        verify_jwt_signature(decode_jwt(token), fetcher=jwks)
    assert info.value.code == "jwt_signature"


def test_key_type_must_match_alg(ec_key: ECKey, ed_key: OKPKey) -> None:
    token = sign_jwt(_credential(), ec_key, kid="key-1", alg="ES256")
    ed_public = {**ed_key.as_dict(private=False), "kid": "key-1"}
    with pytest.raises(InvalidCredential, match="needs a EC P-256 key"):
        verify_jwt_signature(decode_jwt(token), fetcher=_jwks_fetcher(ed_public))
    restricted = {**ec_key.as_dict(private=False), "kid": "key-1", "alg": "ES384"}
    with pytest.raises(InvalidCredential, match="restricted"):
        verify_jwt_signature(decode_jwt(token), fetcher=_jwks_fetcher(restricted))


def test_short_rsa_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    numbers = weak.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "key-1", "n": _b64e(numbers.n.to_bytes(128, "big")), "e": "AQAB"}
    signing_input = _b64e(b'{"alg":"RS256","kid":"key-1"}') + "." + _b64e(json.dumps(_credential()).encode())
    signature = weak.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    decoded = decode_jwt(f"{signing_input}.{_b64e(signature)}")
    with pytest.raises(InvalidCredential, match="2048"):
        verify_jwt_signature(decoded, fetcher=_jwks_fetcher(jwk))
    private = weak.private_numbers()
    with pytest.raises(ValueError, match="2048"):
        import_signing_key({**jwk, "d": _b64e(private.d.to_bytes(128, "big"))})


def test_unfetchable_key_is_could_not_check(rsa_key: RSAKey) -> None:
    decoded = decode_jwt(sign_jwt(_credential(), rsa_key, kid="key-1"))
    with pytest.raises(CannotCheck) as info:
        verify_jwt_signature(decoded, fetcher=offline_fetcher)
    assert not isinstance(info.value, InvalidCredential)


def test_did_key_kid_of_someone_else_is_not_issuer_bound(ed_key: OKPKey) -> None:
    did = _did_key_of(ed_key)
    found = verify_jwt_signature(
        decode_jwt(sign_jwt(_credential(), ed_key, kid=did, alg="EdDSA")), fetcher=offline_fetcher
    )
    assert not found.issuer_bound  # signature fine, but the key is not the issuer's: the caller must say so
    assert found.jwk == public_key_to_jwk(PublicKey("Ed25519", _b64d(str(ed_key.as_dict()["x"]))))


# -- claims ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(ed_key: OKPKey) -> DecodedJwt:
    return decode_jwt(sign_jwt(_credential(), ed_key, kid="k", alg="EdDSA"))


def _with_claims(decoded: DecodedJwt, **claims: Any) -> DecodedJwt:
    payload = {**decoded.payload, **claims}
    return dataclasses.replace(decoded, payload={k: v for k, v in payload.items() if v is not None})


def _with_credential(decoded: DecodedJwt, **changes: Any) -> DecodedJwt:
    credential = copy.deepcopy(decoded.credential)
    credential.update(changes)
    return dataclasses.replace(decoded, credential={k: v for k, v in credential.items() if v is not None})


@pytest.mark.parametrize(
    ("claims", "claim"),
    [
        ({"iss": "https://evil.example/issuers/1"}, "iss"),
        ({"jti": "urn:uuid:00000000-0000-0000-0000-000000000000"}, "jti"),
        ({"sub": "did:example:mallory"}, "sub"),
        ({"nbf": 1709294401}, "nbf"),  # one second after validFrom
        ({"nbf": "1709294400"}, "nbf"),
        ({"nbf": True}, "nbf"),
        ({"exp": 1898683201}, "exp"),
        ({"exp": 1e300}, "exp"),
    ],
)
def test_contradicting_claims_are_named(signed: DecodedJwt, claims: dict[str, Any], claim: str) -> None:
    with pytest.raises(InvalidCredential) as info:
        check_jwt_claims(_with_claims(signed, **claims), now=NOW)
    assert info.value.code == f"jwt_claim_{claim}"
    assert f"claim {claim}" in info.value.detail


def test_nbf_in_the_future(signed: DecodedJwt) -> None:
    with pytest.raises(InvalidCredential, match=r"nbf .* in the future"):
        check_jwt_claims(signed, now=datetime(2024, 3, 1, 11, 59, tzinfo=UTC))
    check_jwt_claims(signed, now=datetime(2024, 3, 1, 12, 0, tzinfo=UTC))


def test_exp_without_valid_until(signed: DecodedJwt) -> None:
    with pytest.raises(InvalidCredential, match=r"exp .* no validUntil"):
        check_jwt_claims(_with_credential(signed, validUntil=None), now=NOW)
    check_jwt_claims(_with_credential(_with_claims(signed, exp=None), validUntil=None), now=NOW)


def test_claims_present_without_the_credential_field(signed: DecodedJwt) -> None:
    with pytest.raises(InvalidCredential, match="claim jti"):
        check_jwt_claims(_with_credential(signed, id=None), now=NOW)
    with pytest.raises(InvalidCredential, match="claim iss"):
        check_jwt_claims(_with_credential(signed, issuer={"type": ["Profile"]}), now=NOW)


def test_absent_claims_and_string_issuer_are_fine(signed: DecodedJwt) -> None:
    check_jwt_claims(_with_claims(signed, iss=None, jti=None, sub=None, nbf=None, exp=None), now=NOW)
    check_jwt_claims(_with_credential(signed, issuer=ISSUER), now=NOW)
    subjectless = copy.deepcopy(signed.credential["credentialSubject"])
    del subjectless["id"]
    check_jwt_claims(_with_credential(signed, credentialSubject=subjectless), now=NOW)  # sub compared only if both


def test_dates_with_offsets_and_fractions(signed: DecodedJwt) -> None:
    check_jwt_claims(_with_credential(signed, validFrom="2024-03-01T13:00:00.999999999+01:00"), now=NOW)
    with pytest.raises(InvalidCredential):
        check_jwt_claims(_with_credential(signed, validFrom="2024-03-01"), now=NOW)
    with pytest.raises(InvalidCredential):
        check_jwt_claims(_with_credential(signed, validFrom="2024-02-30T00:00:00Z"), now=NOW)


def test_now_must_be_aware(signed: DecodedJwt) -> None:
    with pytest.raises(ValueError, match="timezone"):
        check_jwt_claims(signed, now=datetime(2025, 1, 1))


# -- signing misuse -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "kwargs", "message"),
    [
        (_credential(), {"alg": "HS256"}, "alg"),
        (_credential(), {"alg": "none"}, "alg"),
        (_credential(), {"kid": ""}, "kid"),
        (_credential(), {"alg": "RS256"}, "RS256 needs a RSA"),
        (_credential(iss="x"), {}, "JWT claims"),
        (_credential(validFrom=None), {}, "validFrom"),
        (_credential(issuer=None), {}, "issuer"),
        (_credential(validFrom="yesterday"), {}, "dateTime"),
    ],
)
def test_sign_misuse(ed_key: OKPKey, credential: dict[str, Any], kwargs: dict[str, Any], message: str) -> None:
    credential = {k: v for k, v in credential.items() if v is not None}
    options: dict[str, Any] = {"kid": "k", "alg": "EdDSA", **kwargs}
    with pytest.raises(ValueError, match=message):
        sign_jwt(credential, ed_key, **options)


def test_sign_needs_a_private_key(ed_key: OKPKey) -> None:
    public: SigningKey = OKPKey.import_key(ed_key.as_dict(private=False))
    with pytest.raises(ValueError, match="private"):
        sign_jwt(_credential(), public, kid="k", alg="EdDSA")
    with pytest.raises(ValueError, match="private"):
        import_signing_key(ed_key.as_dict(private=False))
    with pytest.raises(ValueError, match="RSA, EC or OKP"):
        import_signing_key({"kty": "oct", "k": "c2VjcmV0"})
