"""Key resolution: did:key (local), did:web and controller documents (fetched), and JWKs for VC-JWT.

Everything here reads untrusted input: malformed identifiers and documents that contradict themselves raise
`InvalidCredential`; unsupported methods and unreachable documents raise `CannotCheck` / `FetchError`.
Fetched bodies are cached briefly per fetcher, so verifying a batch from one issuer costs one fetch.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from .errors import CannotCheck, InvalidCredential
from .fetch import Fetcher, is_loopback_host
from .multikey import PublicKey, decode_public_key

DID_CONTEXTS = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
DID_ACCEPT = "application/did+json, application/did+ld+json, application/json;q=0.9"
JWKS_ACCEPT = "application/jwk-set+json, application/json;q=0.9"

# RFC 7517/7518 private (and symmetric) members: a JWK carrying any of them must never be accepted as public.
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_MULTIBASE_TYPES = frozenset({"Multikey", "Ed25519VerificationKey2020"})
_JWK_TYPES = frozenset({"JsonWebKey", "JsonWebKey2020"})
_DID_KEY = re.compile(r"did:key:(z[1-9A-HJ-NP-Za-km-z]+)")
_DID = re.compile(r"did:([a-z0-9]+):[A-Za-z0-9._:%-]*[A-Za-z0-9._-]")
_WEB_SEGMENT = re.compile(r"(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2})+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class VerificationMethod:
    """A resolved key: exactly one of `public_key` (Multikey) and `jwk` (public JWK) is set."""

    id: str
    controller: str
    type: str
    public_key: PublicKey | None
    jwk: dict[str, Any] | None


@dataclass(frozen=True)
class FoundKey:
    """A JWK and where it came from; `issuer_bound` says whether the issuer itself vouches for the key."""

    jwk: dict[str, Any]
    source: str
    issuer_bound: bool


# -- did:key ---------------------------------------------------------------------------------------------


def did_key_from_public_key(key: PublicKey) -> str:
    return "did:key:" + key.multibase


def _did_key_public_key(did: str) -> PublicKey:
    match = _DID_KEY.fullmatch(did)
    if match is None:
        raise InvalidCredential(f"malformed did:key {did!r}", code="did_malformed")
    return decode_public_key(match.group(1))


def did_key_document(did: str) -> dict[str, Any]:
    """The did:key document (did-key-spec §Document Creation) for an Ed25519 or P-256 key."""
    key = _did_key_public_key(did)
    vm_id = f"{did}#{key.multibase}"
    return {
        "@context": list(DID_CONTEXTS),
        "id": did,
        "verificationMethod": [
            {"id": vm_id, "type": "Multikey", "controller": did, "publicKeyMultibase": key.multibase}
        ],
        "authentication": [vm_id],
        "assertionMethod": [vm_id],
        "capabilityDelegation": [vm_id],
        "capabilityInvocation": [vm_id],
    }


# -- did:web ---------------------------------------------------------------------------------------------


def did_web_url(did: str, *, http_loopback: bool = False) -> str:
    """The did.json URL of a did:web (did-method-web §Read); http only for loopback hosts in test setups.

    IP-address hosts are refused (the method forbids them) except loopback ones when `http_loopback` is on.
    """
    if not isinstance(did, str) or not did.startswith("did:web:"):
        raise InvalidCredential(f"not a did:web: {did!r}", code="did_malformed")
    segments = did[len("did:web:") :].split(":")
    if not all(_WEB_SEGMENT.fullmatch(s) for s in segments) or any(s in (".", "..") for s in segments):
        raise InvalidCredential(f"malformed did:web {did!r}", code="did_malformed")
    host, sep, port = re.sub("%3[Aa]", ":", segments[0]).partition(":")
    if sep and not (port.isdigit() and 0 < int(port) < 65536 and port[0] != "0"):
        raise InvalidCredential(f"did:web {did!r} has an invalid port", code="did_malformed")
    loopback = http_loopback and is_loopback_host(host)
    if not _DNS_NAME.fullmatch(host) or (_is_ip(host) and not loopback):
        raise InvalidCredential(f"did:web {did!r} does not name a valid host", code="did_malformed")
    path = "/".join(segments[1:]) if len(segments) > 1 else ".well-known"
    scheme = "http" if loopback else "https"
    return f"{scheme}://{host}{sep}{port}/{path}/did.json"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- resolution ------------------------------------------------------------------------------------------


def resolve_did(did: str, *, fetcher: Fetcher, http_loopback: bool = False) -> dict[str, Any]:
    """The DID document: did:key computed locally, did:web fetched; the document must describe `did`."""
    if not isinstance(did, str) or _DID.fullmatch(did) is None:
        raise InvalidCredential(f"not a DID: {did!r}", code="did_malformed")
    method = did.split(":", 2)[1]
    if method == "key":
        return did_key_document(did)
    if method != "web":
        raise CannotCheck(f"DID method did:{method} is not supported (only did:key and did:web)", code="did_method")
    url = did_web_url(did, http_loopback=http_loopback)
    document = _fetch_json(fetcher, url, DID_ACCEPT, what=f"DID document of {did}")
    if document.get("id") != did:
        raise InvalidCredential(
            f"DID document at {url} has id {document.get('id')!r}, not {did!r}", code="did_document"
        )
    return document


def resolve_verification_method(
    vm_id: str, *, fetcher: Fetcher, purpose: str = "assertionMethod", http_loopback: bool = False
) -> VerificationMethod:
    """Resolve a verification method id and check that its controller authorizes it for `purpose`.

    - DID URLs: the method must be in the DID document and listed (by id or embedded) under `purpose`.
      A bare did:key means its single key.
    - `http(s)://…#z…` where the fragment is an Ed25519/P-256 Multikey: the key is the fragment and the
      controller the part before `#`, with no fetch and no purpose check. This is what 1EdTech's validator
      does (`EmbeddedProofProbe`) and what its fixtures rely on; the caller must still compare the
      controller with the issuer.
    - other `https://…#frag` ids: the controller document before `#` is fetched and read like a DID document.
    """
    if not isinstance(vm_id, str) or not vm_id:
        raise InvalidCredential("verification method id must be a non-empty string", code="vm_malformed")
    base, sep, fragment = vm_id.partition("#")
    if vm_id.startswith("did:"):
        if not sep and base.startswith("did:key:"):
            key = _did_key_public_key(base)
            return VerificationMethod(f"{base}#{key.multibase}", base, "Multikey", key, None)
        if not fragment:
            raise InvalidCredential(f"verification method {vm_id!r} has no #fragment", code="vm_malformed")
        document = resolve_did(base, fetcher=fetcher, http_loopback=http_loopback)
        return method_from_document(document, vm_id, purpose=purpose)
    if vm_id.startswith(("https://", "http://")) and fragment:
        if fragment.startswith("z"):
            try:
                key = decode_public_key(fragment)
            except InvalidCredential:
                pass  # not a key in the fragment: an ordinary controller-document reference
            else:
                return VerificationMethod(vm_id, base, "Multikey", key, None)
        document = _fetch_json(fetcher, base, DID_ACCEPT, what=f"controller document {base}")
        if document.get("id") != base:
            raise InvalidCredential(f"controller document at {base} has id {document.get('id')!r}", code="did_document")
        return method_from_document(document, vm_id, purpose=purpose)
    raise CannotCheck(f"cannot resolve verification method {vm_id!r}", code="vm_unsupported")


def method_from_document(document: dict[str, Any], vm_id: str, *, purpose: str) -> VerificationMethod:
    """Find `vm_id` in a DID/controller document and check it is listed under `purpose`."""
    base = document.get("id")
    if not isinstance(base, str):
        raise InvalidCredential("DID/controller document has no id", code="did_document")

    def absolute(ref: object) -> object:
        return base + ref if isinstance(ref, str) and ref.startswith("#") else ref

    listed = False
    embedded: object = None
    for entry in _as_list(document.get(purpose)):
        if absolute(entry.get("id") if isinstance(entry, dict) else entry) == vm_id:
            listed, embedded = True, entry if isinstance(entry, dict) else None
            break
    if not listed:
        raise InvalidCredential(f"{vm_id} is not listed under {purpose} by {base}", code="vm_purpose")
    if embedded is None:
        matches = [m for m in _as_list(document.get("verificationMethod")) if isinstance(m, dict)]
        embedded = next((m for m in matches if absolute(m.get("id")) == vm_id), None)
    if not isinstance(embedded, dict):
        raise InvalidCredential(f"{vm_id} is not defined in the document of {base}", code="vm_not_found")
    return _parse_method(embedded, vm_id)


def _parse_method(method: dict[str, Any], vm_id: str) -> VerificationMethod:
    kind, controller = method.get("type"), method.get("controller")
    if not isinstance(controller, str) or not controller:
        raise InvalidCredential(f"verification method {vm_id} has no controller", code="vm_malformed")
    if kind in _MULTIBASE_TYPES:
        multibase = method.get("publicKeyMultibase")
        if not isinstance(multibase, str):
            raise InvalidCredential(f"{kind} {vm_id} has no publicKeyMultibase", code="vm_malformed")
        key = decode_public_key(multibase)
        if kind == "Ed25519VerificationKey2020" and key.kind != "Ed25519":
            raise InvalidCredential(
                f"{vm_id} is an Ed25519VerificationKey2020 without an Ed25519 key", code="vm_malformed"
            )
        return VerificationMethod(vm_id, controller, kind, key, None)
    if kind in _JWK_TYPES:
        jwk = require_public_jwk(method.get("publicKeyJwk"), what=f"publicKeyJwk of {vm_id}")
        return VerificationMethod(vm_id, controller, kind, None, jwk)
    raise CannotCheck(f"verification method type {kind!r} of {vm_id} is not supported", code="vm_unsupported")


# -- JWKs --------------------------------------------------------------------------------------------------


def require_public_jwk(value: object, *, what: str = "JWK") -> dict[str, Any]:
    """`value` as a public JWK; private or symmetric key material is refused, never silently stripped."""
    if not isinstance(value, dict) or not isinstance(value.get("kty"), str):
        raise InvalidCredential(f"{what} is not a JWK object with a kty", code="jwk_malformed")
    private = PRIVATE_JWK_MEMBERS.intersection(value)
    if private or value["kty"] == "oct":
        raise InvalidCredential(
            f"{what} contains private or symmetric key material ({', '.join(sorted(private)) or 'oct'})",
            code="jwk_private",
        )
    return value


def public_key_to_jwk(key: PublicKey) -> dict[str, Any]:
    """The RFC 7517 form of a Multikey, so did:key / Multikey methods can serve as VC-JWT kids."""
    if key.kind == "Ed25519":
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(key.raw)}
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.raw).public_numbers()
    except ValueError:
        raise InvalidCredential("P-256 Multikey is not a point on the curve", code="vm_malformed") from None
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64u(point.x.to_bytes(32, "big")),
        "y": _b64u(point.y.to_bytes(32, "big")),
    }


def find_jwk(kid: str | None, *, issuer_id: str, fetcher: Fetcher, http_loopback: bool = False) -> dict[str, Any]:
    """The public JWK a VC-JWT `kid` names (see `locate_jwk`)."""
    return locate_jwk(kid, issuer_id=issuer_id, fetcher=fetcher, http_loopback=http_loopback).jwk


def locate_jwk(kid: str | None, *, issuer_id: str, fetcher: Fetcher, http_loopback: bool = False) -> FoundKey:
    """Find the public JWK for a VC-JWT, and whether the issuer vouches for it.

    - kid is a DID URL: the verification method (assertionMethod) as a JWK; issuer-bound when the DID or
      the method's controller is the issuer.
    - kid is an https URL with a fragment: the JWKS or controller document before `#`; issuer-bound when it
      is served from the issuer's authority.
    - otherwise: the JWKS at `https://{authority of issuer_id}/.well-known/jwks.json` (OB-impl "Key
      provenance"; for did:web the authority is its host), key by `kid`, or the only key when kid is None.
    A JWK `iss` member that names someone other than the issuer is a contradiction.
    """
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidCredential("JWT kid must be a non-empty string", code="jwt_header")
    if kid is not None and kid.startswith("did:"):
        method = resolve_verification_method(kid, fetcher=fetcher, http_loopback=http_loopback)
        jwk = method.jwk if method.jwk is not None else public_key_to_jwk(_present(method.public_key))
        bound = issuer_id in (method.controller, kid.partition("#")[0])
        found = FoundKey(jwk, f"verification method {method.id}", bound)
    elif kid is not None and kid.startswith(("https://", "http://")) and "#" in kid:
        found = _jwk_from_url(kid, issuer_id, fetcher, http_loopback)
    else:
        url = f"{_web_origin(issuer_id, http_loopback)}/.well-known/jwks.json"
        jwk = _pick_from_jwks(_fetch_json(fetcher, url, JWKS_ACCEPT, what="issuer JWKS"), kid, url)
        found = FoundKey(jwk, f"issuer JWKS {url}", True)
    if "iss" in found.jwk and found.jwk["iss"] != issuer_id:
        raise InvalidCredential(f"JWK iss {found.jwk['iss']!r} is not the issuer {issuer_id!r}", code="jwk_issuer")
    return found


def _jwk_from_url(kid: str, issuer_id: str, fetcher: Fetcher, http_loopback: bool) -> FoundKey:
    base, _, fragment = kid.partition("#")
    if base.startswith("http://") and not (http_loopback and is_loopback_host(urlsplit(base).hostname or "")):
        raise CannotCheck(f"kid {kid!r} is not an https URL", code="jwk_fetch")
    document = _fetch_json(fetcher, base, f"{JWKS_ACCEPT}, {DID_ACCEPT}", what=f"key document {base}")
    if "keys" in document:
        try:
            jwk = _pick_from_jwks(document, kid, base)
        except InvalidCredential:
            jwk = _pick_from_jwks(document, fragment, base)
    else:
        if document.get("id") != base:
            raise InvalidCredential(f"key document at {base} has id {document.get('id')!r}", code="did_document")
        method = method_from_document(document, kid, purpose="assertionMethod")
        jwk = method.jwk if method.jwk is not None else public_key_to_jwk(_present(method.public_key))
    try:
        bound = urlsplit(base).netloc == urlsplit(_web_origin(issuer_id, http_loopback)).netloc
    except CannotCheck:
        bound = False
    return FoundKey(jwk, f"key document {base}", bound)


def _pick_from_jwks(document: dict[str, Any], kid: str | None, url: str) -> dict[str, Any]:
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise CannotCheck(f"{url} is not a JWK Set (no keys array)", code="jwk_fetch")
    signing = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    if kid is None:
        if len(signing) != 1:
            raise CannotCheck(f"JWT has no kid and {url} holds {len(signing)} signing keys", code="jwk_ambiguous")
        return require_public_jwk(signing[0], what=f"key in {url}")
    for key in signing:
        if key.get("kid") == kid:
            return require_public_jwk(key, what=f"key {kid!r} in {url}")
    raise InvalidCredential(f"key {kid!r} is not published in {url}", code="jwk_not_found")


def _web_origin(issuer_id: str, http_loopback: bool) -> str:
    """`https://{authority}` of an https issuer id or did:web (http for loopback test setups)."""
    if isinstance(issuer_id, str) and issuer_id.startswith("did:web:"):
        host_only = "did:web:" + issuer_id[len("did:web:") :].split(":", 1)[0]
        return did_web_url(host_only, http_loopback=http_loopback).removesuffix("/.well-known/did.json")
    parts = urlsplit(issuer_id) if isinstance(issuer_id, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise CannotCheck(
            f"the JWT names no key URL and issuer {issuer_id!r} has no web authority to publish a JWKS",
            code="jwk_fetch",
        )
    loopback = http_loopback and is_loopback_host(parts.hostname)
    return f"{'http' if loopback else 'https'}://{parts.netloc.rpartition('@')[2]}"


# -- fetching --------------------------------------------------------------------------------------------

_CACHE_SIZE = 128
_CACHE_TTL = 300.0
_cache: OrderedDict[tuple[object, str, str], tuple[float, bytes]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached document (tests; key rotation)."""
    with _cache_lock:
        _cache.clear()


def _fetch_json(fetcher: Fetcher, url: str, accept: str, *, what: str) -> dict[str, Any]:
    """Fetch (through a small per-fetcher LRU with a TTL) and parse a JSON object."""
    key: tuple[object, str, str] | None = (fetcher, url, accept)
    try:
        hash(key)
    except TypeError:
        key = None
    body: bytes | None = None
    if key is not None:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                _cache.move_to_end(key)
                body = hit[1]
    if body is None:
        body = fetcher(url, accept=accept)
        if key is not None:
            with _cache_lock:
                _cache[key] = (time.monotonic() + _CACHE_TTL, body)
                _cache.move_to_end(key)
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CannotCheck(f"{what} at {url} is not JSON", code="document_malformed") from None
    if not isinstance(document, dict):
        raise CannotCheck(f"{what} at {url} is not a JSON object", code="document_malformed")
    return document


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _present(key: PublicKey | None) -> PublicKey:
    if key is None:  # pragma: no cover - _parse_method always sets one of the two
        raise CannotCheck("verification method has no key")
    return key


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
