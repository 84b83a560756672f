"""VC-JWT as Open Badges 3.0 §8.2 defines it: a compact JWS whose payload is the credential plus JWT claims.

Signing and verification use joserfc's algorithm objects directly on bytes we frame ourselves: the header
is then exactly what OB allows, decoding is a single pass, and joserfc's per-call EdDSA deprecation warning
(raised by its registry lookup) does not fire. Key import is the expensive part (RSA private keys take
~30 ms to validate), so `sign_jwt` accepts an already imported key and public keys are imported once.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from ..did import FoundKey, locate_jwk, require_public_jwk
from ..errors import InvalidCredential
from ..fetch import Fetcher

SigningKey = RSAKey | ECKey | OKPKey

REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
HEADER_MEMBERS = frozenset({"alg", "kid", "typ", "jwk"})  # OB 3.0 §8.2: nothing else is allowed
SIGNING_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
# alg -> (kty, crv or None). Only asymmetric algorithms: HS* would let anyone holding the "public" key sign.
_KEY_FOR_ALG: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
}
_MIN_RSA_BITS = 2048
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")


@dataclass(frozen=True)
class DecodedJwt:
    """A parsed, not yet verified, VC-JWT. `signing_input` is the ASCII `header.payload` the signature covers."""

    header: dict[str, Any]
    payload: dict[str, Any]
    credential: dict[str, Any]
    signing_input: bytes
    signature: bytes
    is_legacy_vc: bool


# -- signing -----------------------------------------------------------------------------------------------


def import_signing_key(private_jwk: dict[str, Any]) -> SigningKey:
    """Import a private JWK once, to pass to `sign_jwt` many times."""
    if not isinstance(private_jwk, dict):
        raise TypeError("private_jwk must be a JWK dict")
    if private_jwk.get("kty") not in ("RSA", "EC", "OKP"):
        raise ValueError("private_jwk must be an RSA, EC or OKP key")
    try:
        if private_jwk["kty"] == "RSA" and _rsa_bits(private_jwk) < _MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {_MIN_RSA_BITS} bits")
    except InvalidCredential as exc:
        raise ValueError(exc.detail) from None
    try:
        key = JWKRegistry.import_key(private_jwk)
    except Exception as exc:
        raise ValueError(f"cannot import the private JWK: {exc}") from exc
    assert isinstance(key, RSAKey | ECKey | OKPKey)
    if not key.is_private:
        raise ValueError("signing needs a private key (the JWK has no 'd')")
    return key


def sign_jwt(
    credential: dict[str, Any], private_jwk: dict[str, Any] | SigningKey, *, kid: str, alg: str = "RS256"
) -> str:
    """Sign `credential` as an OB 3.0 VC-JWT (header exactly {alg, kid, typ: "JWT"})."""
    if not isinstance(credential, dict):
        raise TypeError("credential must be a dict")
    if alg not in SIGNING_ALGORITHMS:
        raise ValueError(f"alg must be one of {sorted(SIGNING_ALGORITHMS)}")
    if not isinstance(kid, str) or not kid:
        raise ValueError("kid must be a non-empty string")
    key = private_jwk if isinstance(private_jwk, RSAKey | ECKey | OKPKey) else import_signing_key(private_jwk)
    if not key.is_private:
        raise ValueError("signing needs a private key")
    if isinstance(key, RSAKey) and key.raw_value.key_size < _MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {_MIN_RSA_BITS} bits")
    kty, crv = _KEY_FOR_ALG[alg]
    if key.key_type != kty or (crv is not None and getattr(key, "curve_name", None) != crv):
        raise ValueError(f"{alg} needs a {kty} {crv or ''} key, got {key.key_type}".replace("  ", " "))
    clash = REGISTERED_CLAIMS.intersection(credential)
    if clash:
        raise ValueError(f"credential has top-level properties named like JWT claims: {sorted(clash)}")
    header = _json_bytes({"alg": alg, "kid": kid, "typ": "JWT"})
    payload = _json_bytes({**credential, **_claims_for(credential)})
    signing_input = _b64e(header) + b"." + _b64e(payload)
    signature = JWSRegistry.algorithms[alg].sign(signing_input, key)
    return (signing_input + b"." + _b64e(signature)).decode("ascii")


def _claims_for(credential: dict[str, Any]) -> dict[str, Any]:
    issuer_id = _issuer_id(credential)
    valid_from = credential.get("validFrom")
    if issuer_id is None or not isinstance(valid_from, str):
        raise ValueError("an OB 3.0 credential needs issuer.id and validFrom to be signed as a VC-JWT")
    claims: dict[str, Any] = {"iss": issuer_id}
    if isinstance(credential.get("id"), str):
        claims["jti"] = credential["id"]
    try:
        claims["nbf"] = _numeric_date(valid_from)
        if "validUntil" in credential:
            claims["exp"] = _numeric_date(credential["validUntil"])
    except InvalidCredential as exc:
        raise ValueError(exc.detail) from None
    subject_id = _subject_id(credential)
    if subject_id is not None:
        claims["sub"] = subject_id
    return claims


# -- decoding ----------------------------------------------------------------------------------------------


def decode_jwt(token: str) -> DecodedJwt:
    """Parse a compact VC-JWT and check its header against OB 3.0 §8.2; no signature check yet."""
    if not isinstance(token, str):
        raise TypeError("token must be a str")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidCredential("not a compact JWS: expected three dot-separated parts", code="jwt_malformed")
    if not all(_B64URL.fullmatch(part) for part in parts):
        raise InvalidCredential("JWT parts must be non-empty unpadded base64url", code="jwt_malformed")
    header = _json_object(_b64d(parts[0]), "JOSE header")
    _check_header(header)
    payload = _json_object(_b64d(parts[1]), "JWT payload")
    credential, legacy = _credential_of(payload)
    return DecodedJwt(
        header=header,
        payload=payload,
        credential=credential,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=_b64d(parts[2]),
        is_legacy_vc=legacy,
    )


def _check_header(header: dict[str, Any]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidCredential("JOSE header has no alg", code="jwt_alg")
    if alg.lower() == "none":
        raise InvalidCredential("JWT alg 'none' is refused: the token is unsigned", code="jwt_alg")
    if alg.upper().startswith("HS"):
        raise InvalidCredential(f"JWT alg {alg!r} is refused: HMAC needs a shared secret", code="jwt_alg")
    if alg not in _KEY_FOR_ALG:
        raise InvalidCredential(f"JWT alg {alg!r} is not supported", code="jwt_alg")
    extra = set(header) - HEADER_MEMBERS
    if extra:
        raise InvalidCredential(
            f"JOSE header members {sorted(extra)} are not allowed (OB 3.0 allows only alg, kid, typ, jwk)",
            code="jwt_header",
        )
    if "typ" in header and header["typ"] != "JWT":
        raise InvalidCredential(f'JOSE header typ {header["typ"]!r} must be "JWT"', code="jwt_header")
    if "kid" in header and (not isinstance(header["kid"], str) or not header["kid"]):
        raise InvalidCredential("JOSE header kid must be a non-empty string", code="jwt_header")
    if "jwk" in header:
        require_public_jwk(header["jwk"], what="JOSE header jwk")


def _credential_of(payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """OB 3.0 puts the credential in the payload itself; VCDM 1.1 JWTs put it under `vc` (VC 1.1 §6.3.1)."""
    if "vc" in payload and "@context" not in payload:
        vc = payload["vc"]
        if not isinstance(vc, dict):
            raise InvalidCredential("JWT vc claim is not an object", code="jwt_malformed")
        credential = dict(vc)
        # VC 1.1 §6.3.1 decoding: claims fill in what the vc object left out
        if "jti" in payload:
            credential.setdefault("id", payload["jti"])
        if "iss" in payload:
            credential.setdefault("issuer", payload["iss"])
        if "nbf" in payload and isinstance(payload["nbf"], int | float):
            credential.setdefault("issuanceDate", _iso(payload["nbf"]))
        if "exp" in payload and isinstance(payload["exp"], int | float):
            credential.setdefault("expirationDate", _iso(payload["exp"]))
        subject = credential.get("credentialSubject")
        if "sub" in payload and isinstance(subject, dict) and "id" not in subject:
            credential["credentialSubject"] = {**subject, "id": payload["sub"]}
        return credential, True
    credential = {k: v for k, v in payload.items() if k not in REGISTERED_CLAIMS}
    if "@context" not in credential:
        raise InvalidCredential("JWT payload is not a credential (no @context, no vc claim)", code="jwt_malformed")
    return credential, False


# -- verification ------------------------------------------------------------------------------------------


def verify_jwt_signature(decoded: DecodedJwt, *, fetcher: Fetcher, http_loopback: bool = False) -> FoundKey:
    """Check the signature (RFC 7515 §5.2) with the header `jwk` or the key `kid` names.

    Returns where the key came from: a header `jwk` is self-asserted (`issuer_bound` False) and proves only
    that the token is intact; the caller decides whether that is enough (1EdTech's validator accepts it).
    """
    alg = decoded.header["alg"]
    if "jwk" in decoded.header:
        found = FoundKey(decoded.header["jwk"], "JOSE header jwk", False)
    else:
        issuer_id = _issuer_id(decoded.credential)
        if issuer_id is None:
            raise InvalidCredential("the credential has no issuer id to look up its key", code="jwt_key")
        found = locate_jwk(decoded.header.get("kid"), issuer_id=issuer_id, fetcher=fetcher, http_loopback=http_loopback)
    key = _public_key_for(alg, found.jwk)
    if not JWSRegistry.algorithms[alg].verify(decoded.signing_input, decoded.signature, key):
        raise InvalidCredential(f"JWT signature ({alg}) does not verify with {found.source}", code="jwt_signature")
    return found


def _public_key_for(alg: str, jwk: dict[str, Any]) -> SigningKey:
    """Import `jwk` (cached) and make sure it is the kind of key `alg` needs."""
    kty, crv = _KEY_FOR_ALG[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise InvalidCredential(f"JWT alg {alg} needs a {kty} {crv or ''} key".replace("  ", " "), code="jwt_key")
    if jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
        raise InvalidCredential(f"the JWK is restricted to alg/use other than {alg} signing", code="jwt_key")
    require_public_jwk(jwk)
    if kty == "RSA" and _rsa_bits(jwk) < _MIN_RSA_BITS:  # before import, which would warn
        raise InvalidCredential(f"RSA key is shorter than {_MIN_RSA_BITS} bits", code="jwt_key")
    key = _import_public(json.dumps(jwk, sort_keys=True))
    return key


def _rsa_bits(jwk: dict[str, Any]) -> int:
    n = jwk.get("n")
    if not isinstance(n, str) or not _B64URL.fullmatch(n):
        raise InvalidCredential("RSA JWK has no valid modulus n", code="jwt_key")
    return int.from_bytes(_b64d(n), "big").bit_length()


@lru_cache(maxsize=128)
def _import_public(canonical_jwk: str) -> SigningKey:
    try:
        key = JWKRegistry.import_key(json.loads(canonical_jwk))
    except Exception:
        raise InvalidCredential("the JWK is not a usable public key", code="jwt_key") from None
    if not isinstance(key, RSAKey | ECKey | OKPKey):
        raise InvalidCredential("the JWK is not an asymmetric key", code="jwt_key")
    return key


# -- claims ------------------------------------------------------------------------------------------------


def check_jwt_claims(decoded: DecodedJwt, *, now: datetime) -> None:
    """The JWT claims must repeat the credential (OB 3.0 §8.2.4.2), and nbf must not be in the future.

    Absent claims are not an error (the signature covers the credential itself), except `exp` without a
    validUntil: nothing else would enforce that expiry.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    claims, credential = decoded.payload, decoded.credential
    _same("iss", claims, _issuer_id(credential), "issuer id")
    _same("jti", claims, credential.get("id"), "credential id")
    subject_id = _subject_id(credential)
    if subject_id is not None:
        _same("sub", claims, subject_id, "credentialSubject.id")
    start_field = "issuanceDate" if decoded.is_legacy_vc and "validFrom" not in credential else "validFrom"
    end_field = "expirationDate" if decoded.is_legacy_vc and "validUntil" not in credential else "validUntil"
    if "nbf" in claims:
        nbf = _claim_number(claims, "nbf")
        if start_field in credential and math.floor(nbf) != _numeric_date(credential[start_field]):
            raise InvalidCredential(
                f"JWT claim nbf ({_iso(nbf)}) contradicts {start_field} {credential[start_field]!r}",
                code="jwt_claim_nbf",
            )
        if nbf > now.timestamp():
            raise InvalidCredential(f"JWT claim nbf ({_iso(nbf)}) is in the future", code="jwt_claim_nbf")
    if "exp" in claims:
        exp = _claim_number(claims, "exp")
        if end_field not in credential:
            raise InvalidCredential(f"JWT claim exp is set but the credential has no {end_field}", code="jwt_claim_exp")
        if math.floor(exp) != _numeric_date(credential[end_field]):
            raise InvalidCredential(
                f"JWT claim exp ({_iso(exp)}) contradicts {end_field} {credential[end_field]!r}",
                code="jwt_claim_exp",
            )


def _same(claim: str, claims: dict[str, Any], expected: object, field: str) -> None:
    if claim not in claims:
        return
    if expected is None:
        raise InvalidCredential(
            f"JWT claim {claim} is set but the credential has no {field}", code=f"jwt_claim_{claim}"
        )
    if claims[claim] != expected:
        raise InvalidCredential(
            f"JWT claim {claim} {claims[claim]!r} contradicts {field} {expected!r}", code=f"jwt_claim_{claim}"
        )


def _claim_number(claims: dict[str, Any], claim: str) -> float:
    value = claims[claim]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidCredential(f"JWT claim {claim} is not a NumericDate", code=f"jwt_claim_{claim}")
    if abs(value) > 253402300799:  # 9999-12-31T23:59:59Z
        raise InvalidCredential(f"JWT claim {claim} is out of range", code=f"jwt_claim_{claim}")
    return float(value)


# -- helpers -----------------------------------------------------------------------------------------------


def _issuer_id(credential: dict[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    if isinstance(issuer, dict):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) and issuer else None


def _subject_id(credential: dict[str, Any]) -> str | None:
    subject = credential.get("credentialSubject")
    if isinstance(subject, list) and len(subject) == 1:
        subject = subject[0]
    value = subject.get("id") if isinstance(subject, dict) else None
    return value if isinstance(value, str) and value else None


def _numeric_date(value: object) -> int:
    """An XML Schema dateTime as whole seconds since the epoch (no zone = UTC)."""
    if not isinstance(value, str) or _DATETIME.fullmatch(value) is None:
        raise InvalidCredential(f"{value!r} is not an XML Schema dateTime", code="jwt_claim_date")
    text = value.replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    if dot:  # Python parses at most 6 fractional digits
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = f"{main}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidCredential(f"{value!r} is not a valid date and time", code="jwt_claim_date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return math.floor(parsed.timestamp())


def _iso(numeric: float) -> str:
    return datetime.fromtimestamp(math.floor(numeric), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidCredential("JWT JSON has duplicate member names", code="jwt_malformed")
    return result


def _reject_constant(name: str) -> None:
    raise InvalidCredential(f"JWT JSON contains {name}", code="jwt_malformed")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidCredential(f"{what} is not valid UTF-8 JSON", code="jwt_malformed") from None
    if not isinstance(value, dict):
        raise InvalidCredential(f"{what} is not a JSON object", code="jwt_malformed")
    return value


def _b64e(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCredential("JWT part is not valid base64url", code="jwt_malformed") from None
