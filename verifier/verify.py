"""`verify_credential`: run every check in order and return the report. Raises only on programmer misuse.

Order (ids are stable; docs/verification.md explains each): parse, context, type, schema, issuer_key, signature,
jwt_claims (VC-JWT only), issuance, expiration, status. A failed early check marks the ones that depend on it
as skipped rather than guessing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import baking, schema, status
from .did import FoundKey, VerificationMethod, resolve_verification_method
from .errors import CannotCheck, InvalidCredential, VerifierError
from .fetch import Fetcher, FetchError, offline_fetcher
from .loader import DocumentLoader, default_loader
from .pdf import extract_from_pdf
from .report import Check, Status, VerificationReport
from .suites import eddsa_rdfc_2022, vc_jwt

VC_V1 = "https://www.w3.org/2018/credentials/v1"
VC_V2 = "https://www.w3.org/ns/credentials/v2"
OB_TYPES = frozenset({"OpenBadgeCredential", "AchievementCredential", "EndorsementCredential"})
_LIST_ACCEPT = "application/vc+ld+json, application/vc+jwt;q=0.9, application/json;q=0.8, text/plain;q=0.5"


@dataclass(frozen=True)
class VerifyOptions:
    """What varies between callers. The defaults verify offline, now, with the pinned contexts."""

    now: datetime | None = None
    fetcher: Fetcher = offline_fetcher
    loader: DocumentLoader = field(default_factory=default_loader)
    allow_http_loopback: bool = False
    # Keys that only the credential itself vouches for (a key inside an https verification-method URL, a JOSE
    # `jwk` header, a did:key for a non-DID issuer) pass by default, as in 1EdTech's validator; strict refuses them.
    strict_keys: bool = False
    check_status: bool = True


def verify_credential(
    source: dict[str, Any] | str | bytes, options: VerifyOptions | None = None, **overrides: Any
) -> VerificationReport:
    """Verify an OB 3.0 credential given as a parsed JSON-LD object, JSON or compact-JWT text, or file bytes
    (JSON, JWT, baked PNG or SVG). Keyword overrides are VerifyOptions fields (e.g. `now=`, `fetcher=`)."""
    opts = options or VerifyOptions()
    if overrides:
        opts = VerifyOptions(**{**opts.__dict__, **overrides})
    if opts.now is not None and opts.now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return _Run(opts).run(source)


class _Run:
    def __init__(self, options: VerifyOptions) -> None:
        self.options = options
        self.now = options.now or datetime.now(UTC)
        self.checks: list[Check] = []

    def add(self, check_id: str, state: Status, detail: str) -> None:
        self.checks.append(Check(check_id, state, detail))

    def attempt(self, check_id: str, step: Callable[[], str]) -> bool:
        """Run one check; its return value is the success detail. True when it passed."""
        try:
            detail = step()
        except InvalidCredential as error:
            self.add(check_id, Status.FAILED, error.detail)
            return False
        except CannotCheck as error:
            self.add(check_id, Status.ERROR, error.detail)
            return False
        self.add(check_id, Status.PASSED, detail)
        return True

    def skip(self, *check_ids: str, why: str) -> None:
        for check_id in check_ids:
            self.add(check_id, Status.SKIPPED, why)

    # ------------------------------------------------------------------------------------------------ run

    def run(self, source: dict[str, Any] | str | bytes) -> VerificationReport:
        parsed = self.parse(source)
        if parsed is None:
            return VerificationReport("unknown", self.checks)
        input_format, credential, token = parsed
        report = VerificationReport(input_format, self.checks, credential)
        structure_ok = self.attempt("context", lambda: _check_context(credential))
        structure_ok &= self.attempt("type", lambda: _check_type(credential))
        self.attempt("schema", lambda: _check_schema(credential))
        if not structure_ok:
            self.skip("issuer_key", "signature", why="not checked: the credential's structure is not valid")
        elif token is not None:
            self.verify_jwt(token)
        else:
            self.verify_embedded_proof(credential)
        self.attempt("issuance", lambda: _check_issuance(credential, self.now))
        self.attempt("expiration", lambda: _check_expiration(credential, self.now))
        if not self.options.check_status:
            self.skip("status", why="not checked: status checking was turned off")
        else:
            self.attempt("status", lambda: self.check_status(credential))
        return report

    def parse(
        self, source: dict[str, Any] | str | bytes
    ) -> tuple[str, dict[str, Any], vc_jwt.DecodedJwt | None] | None:
        try:
            fmt, credential, token = _parse(source)
        except InvalidCredential as error:
            self.add("parse", Status.FAILED, error.detail)
            return None
        kinds = {"json": "JSON-LD", "jwt": "VC-JWT", "png": "baked PNG", "svg": "baked SVG", "pdf": "PDF-embedded"}
        what = kinds[fmt.split("+")[0]]
        self.add("parse", Status.PASSED, f"read a {what} credential" + (" (VC-JWT inside)" if "+jwt" in fmt else ""))
        return fmt, credential, token

    # ------------------------------------------------------------------------------------------- proofs

    def verify_embedded_proof(self, credential: dict[str, Any]) -> None:
        raw = credential.get("proof")
        proofs = raw if isinstance(raw, list) else ([raw] if raw is not None else [])
        if not proofs:
            self.add("issuer_key", Status.FAILED, "the credential carries no proof")
            self.skip("signature", why="not checked: there is no proof")
            return
        supported = [p for p in proofs if eddsa_rdfc_2022.is_supported(p)]
        if not supported:
            names = ", ".join(
                sorted({str(p.get("cryptosuite") or p.get("type")) for p in proofs if isinstance(p, dict)})
            )
            self.add("issuer_key", Status.ERROR, f"no proof uses a supported cryptosuite (found: {names or 'none'})")
            self.skip("signature", why="not checked: no supported proof")
            return
        issuer_id = _issuer_id(credential)
        outcomes: list[tuple[Check, Check]] = []
        for proof in supported:  # any one valid proof suffices (OB 3.0 §8.3)
            key_check = self._proof_key(proof, issuer_id)
            if key_check[0].status is not Status.PASSED or key_check[1] is None:
                outcomes.append((key_check[0], Check("signature", Status.SKIPPED, "not checked: no usable key")))
                continue
            sig_check = self._proof_signature(credential, proof, key_check[1])
            outcomes.append((key_check[0], sig_check))
            if sig_check.status is Status.PASSED:
                break
        best = next((o for o in outcomes if o[1].status is Status.PASSED), outcomes[0])
        self.checks.extend(best)

    def _proof_key(self, proof: dict[str, Any], issuer_id: str | None) -> tuple[Check, VerificationMethod | None]:
        try:
            eddsa_rdfc_2022.check_proof_options(proof, now=self.now)
            method = resolve_verification_method(
                proof["verificationMethod"],
                fetcher=self.options.fetcher,
                http_loopback=self.options.allow_http_loopback,
            )
            if method.public_key is None or method.public_key.kind != "Ed25519":
                raise InvalidCredential(f"verification method {method.id} is not an Ed25519 key")
            detail = self._binding(method, issuer_id)
        except InvalidCredential as error:
            return Check("issuer_key", Status.FAILED, error.detail), None
        except CannotCheck as error:
            return Check("issuer_key", Status.ERROR, error.detail), None
        return Check("issuer_key", Status.PASSED, detail), method

    def _binding(self, method: VerificationMethod, issuer_id: str | None) -> str:
        """Key provenance (OB-impl "Key provenance"): the method's controller must be the issuer."""
        if issuer_id is None:
            raise InvalidCredential("the credential names no issuer id")
        self_asserted = method.id.startswith(("https://", "http://")) and method.id.partition("#")[2] == (
            method.public_key.multibase if method.public_key else None
        )
        if method.controller == issuer_id and not self_asserted:
            return f"signed with {method.id}, published by the issuer {issuer_id}"
        if method.controller == issuer_id or (method.controller.startswith("did:key:") and not _resolvable(issuer_id)):
            if self.options.strict_keys:
                raise CannotCheck(
                    f"the key {method.id} is named only by the credential itself; the issuer {issuer_id} does not "
                    "publish it, so it cannot be confirmed as the issuer's (strict key checking)"
                )
            return (
                f"signed with {method.id}; the key is given in the credential itself and is not confirmed by a "
                f"document of the issuer {issuer_id} (accepted, as 1EdTech's validator does)"
            )
        raise InvalidCredential(
            f"the signing key {method.id} is controlled by {method.controller}, not by the issuer {issuer_id}"
        )

    def _proof_signature(self, credential: dict[str, Any], proof: dict[str, Any], method: VerificationMethod) -> Check:
        assert method.public_key is not None
        try:
            eddsa_rdfc_2022.verify_proof(
                credential, proof, method.public_key.raw, now=self.now, loader=self.options.loader
            )
        except InvalidCredential as error:
            return Check("signature", Status.FAILED, error.detail)
        except CannotCheck as error:
            return Check("signature", Status.ERROR, error.detail)
        suite = proof.get("cryptosuite") or proof.get("type")
        return Check("signature", Status.PASSED, f"the {suite} signature matches the credential's content")

    def verify_jwt(self, token: vc_jwt.DecodedJwt) -> None:
        found: list[FoundKey] = []

        def key_and_signature() -> str:
            found.append(
                vc_jwt.verify_jwt_signature(
                    token, fetcher=self.options.fetcher, http_loopback=self.options.allow_http_loopback
                )
            )
            return f"the {token.header['alg']} signature matches the token"

        signed = self.attempt("signature", key_and_signature)
        if signed:
            key = found[0]
            if key.issuer_bound:
                self.checks.insert(-1, Check("issuer_key", Status.PASSED, f"key from {key.source}"))
            elif self.options.strict_keys:
                self.checks.insert(
                    -1,
                    Check(
                        "issuer_key",
                        Status.ERROR,
                        f"the key comes from the {key.source} only; the issuer does "
                        "not publish it (strict key checking)",
                    ),
                )
            else:
                self.checks.insert(
                    -1,
                    Check(
                        "issuer_key",
                        Status.PASSED,
                        f"key from the {key.source}; not confirmed by a document of "
                        "the issuer (accepted, as 1EdTech's validator does)",
                    ),
                )
        else:
            failed = self.checks[-1]
            self.checks.insert(
                -1,
                Check(
                    "issuer_key",
                    failed.status if failed.status is Status.ERROR else Status.SKIPPED,
                    failed.detail if failed.status is Status.ERROR else "not confirmed: the signature did not verify",
                ),
            )
        self.attempt("jwt_claims", lambda: _jwt_claims(token, self.now))

    # ------------------------------------------------------------------------------------------- status

    def check_status(self, credential: dict[str, Any]) -> str:
        unsupported = status.unsupported_status_types(credential)
        entries = status.status_entries(credential)
        old_lists = status.revocation_list_entries(credential)
        if not entries and not unsupported and not old_lists:
            return "the credential has no status entry (it cannot be revoked)"
        if unsupported and not entries and not old_lists:
            raise CannotCheck(f"status type {', '.join(unsupported)} is not supported, so revocation was not checked")
        credential_id = credential.get("id") if isinstance(credential.get("id"), str) else None
        findings = []
        for entry in old_lists:
            revoked, reason = status.check_revocation_list(
                entry, credential_id=credential_id, load_json=self.load_revocation_list
            )
            if revoked:
                because = f" (reason given: {reason})" if reason else ""
                raise InvalidCredential(
                    f"the issuer has revoked this credential (revocation list {entry['id']}){because}"
                )
            findings.append(f"not on the revocation list {entry['id']} (an unsigned 1EdTechRevocationList)")
        for entry in entries:
            outcome = status.check_status_entry(
                entry, credential_id=credential_id, load_list=self.load_status_list, now=self.now
            )
            if outcome.value:
                word = {"revocation": "revoked", "suspension": "suspended"}.get(outcome.purpose, outcome.purpose)
                raise InvalidCredential(f"the issuer has {word} this credential (status list {outcome.list_url})")
            findings.append(f"not {outcome.purpose.replace('revocation', 'revoked')} (list {outcome.list_url})")
        if unsupported:
            raise CannotCheck(f"status type {', '.join(unsupported)} is not supported, so it was not checked")
        return "; ".join(findings)

    def load_revocation_list(self, url: str) -> Any:
        try:
            return json.loads(self.options.fetcher(url, accept="application/json"))
        except FetchError as error:
            raise CannotCheck(f"could not fetch the revocation list {url}: {error.detail}") from None
        except (ValueError, RecursionError):
            raise CannotCheck(f"the revocation list {url} is not JSON") from None

    def load_status_list(self, url: str) -> dict[str, Any]:
        """Fetch the status list credential and verify it like a credential (its proof and issuer key)."""
        try:
            body = self.options.fetcher(url, accept=_LIST_ACCEPT)
        except FetchError as error:
            raise CannotCheck(f"could not fetch the status list {url}: {error.detail}") from None
        report = _verify_list(body, self.options)
        if not report.verified:
            bad = next(c for c in report.checks if c.status in (Status.FAILED, Status.ERROR))
            raise CannotCheck(f"the status list {url} did not verify: {bad.detail}")
        assert report.credential is not None
        return report.credential


# ---------------------------------------------------------------------------------------------- helpers


def _verify_list(body: bytes, options: VerifyOptions) -> VerificationReport:
    run = _Run(VerifyOptions(**{**options.__dict__, "check_status": False}))
    parsed = run.parse(body)
    if parsed is None:
        return VerificationReport("unknown", run.checks)
    fmt, credential, token = parsed
    report = VerificationReport(fmt, run.checks, credential)
    if token is not None:
        run.verify_jwt(token)
    else:
        run.verify_embedded_proof(credential)
    return report


def _parse(source: dict[str, Any] | str | bytes) -> tuple[str, dict[str, Any], vc_jwt.DecodedJwt | None]:
    if isinstance(source, dict):
        _check_depth(source)
        return "json", source, None
    if isinstance(source, str):
        source = source.encode("utf-8")
    if not isinstance(source, bytes):
        raise TypeError("source must be a dict, str or bytes")
    kind = baking.detect_kind(source)
    if kind == "unknown" and source.strip().count(b".") == 2 and source.strip().isascii():
        kind = "jwt"  # e.g. an unsigned token (empty signature): let the JWT parser say what is wrong
    container = ""
    if kind in ("png", "svg", "pdf"):
        container = kind
        extract = {"png": baking.extract_from_png, "svg": baking.extract_from_svg, "pdf": extract_from_pdf}[kind]
        text = extract(source)
    elif kind in ("json", "jwt"):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCredential("the input is not UTF-8 text") from None
    else:
        raise InvalidCredential(
            "the input is not a credential: expected JSON, a compact JWT, a baked PNG or SVG, or a PDF certificate"
        )
    text = text.strip()
    if text.startswith("{"):
        try:
            credential = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidCredential(f"the credential is not valid JSON: {error.msg} at line {error.lineno}") from None
        except RecursionError:
            raise InvalidCredential(_TOO_DEEP) from None
        if not isinstance(credential, dict):
            raise InvalidCredential("the credential must be a JSON object")
        _check_depth(credential)
        return container or "json", credential, None
    token = vc_jwt.decode_jwt(text)
    _check_depth(token.credential)
    return (f"{container}+jwt" if container else "jwt"), token.credential, token


# Real credentials nest a dozen levels (endorsements of endorsements a few more); JSON-LD processing recurses
# per level, so a hostile document is refused up front instead of exhausting the stack.
MAX_DEPTH = 48
_TOO_DEEP = f"the credential is nested more than {MAX_DEPTH} levels deep"


def _check_depth(document: Any) -> None:
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidCredential(_TOO_DEEP)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _issuer_id(credential: dict[str, Any]) -> str | None:
    issuer = credential.get("issuer")
    value = issuer.get("id") if isinstance(issuer, dict) else issuer
    return value if isinstance(value, str) else None


def _resolvable(identifier: str) -> bool:
    return identifier.startswith(("did:", "https://", "http://"))


def _types(credential: dict[str, Any]) -> list[str]:
    raw = credential.get("type")
    return [t for t in (raw if isinstance(raw, list) else [raw]) if isinstance(t, str)]


def _check_context(credential: dict[str, Any]) -> str:
    context = credential.get("@context")
    contexts = context if isinstance(context, list) else [context]
    if not contexts or contexts[0] not in (VC_V1, VC_V2):
        raise InvalidCredential(f"the first @context must be {VC_V2} (or {VC_V1} for VCDM 1.1 credentials)")
    model = "VCDM 2.0" if contexts[0] == VC_V2 else "VCDM 1.1"
    return f"{model} contexts: " + ", ".join(str(c) for c in contexts[1:]) if len(contexts) > 1 else model


def _check_type(credential: dict[str, Any]) -> str:
    types = _types(credential)
    if "VerifiableCredential" not in types:
        raise InvalidCredential("type does not include VerifiableCredential")
    if not OB_TYPES.intersection(types) and "BitstringStatusListCredential" not in types:
        raise InvalidCredential(
            "not an Open Badges credential: type has no OpenBadgeCredential, "
            "AchievementCredential or EndorsementCredential"
        )
    return ", ".join(types)


def _check_schema(credential: dict[str, Any]) -> str:
    if isinstance(credential.get("proof"), dict):
        # A single proof object is the compacted JSON-LD form of a one-element array (OB 3.0 "Compacted document
        # form"); 1EdTech's validator accepts it and so do we. Every other property is checked as written.
        credential = {**credential, "proof": [credential["proof"]]}
    problems = schema.validate_schema(credential)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InvalidCredential("; ".join(problems[:3]) + more)
    unchecked = schema.unchecked_schemas(credential)
    note = f"; not checked (not bundled, never fetched): {', '.join(unchecked)}" if unchecked else ""
    return "matches the Open Badges 3.0 JSON Schema" + note


def _date(credential: dict[str, Any], *names: str) -> tuple[str, datetime] | None:
    for name in names:
        if name in credential:
            return name, schema.parse_datetime_z(credential[name])
    return None


def _check_issuance(credential: dict[str, Any], now: datetime) -> str:
    found = _date(credential, "validFrom", "issuanceDate")
    if found is None:
        raise InvalidCredential("the credential has no validFrom (or issuanceDate)")
    name, moment = found
    if moment > now:
        raise InvalidCredential(f"not valid yet: {name} is {credential[name]}")
    return f"valid from {credential[name]}"


def _check_expiration(credential: dict[str, Any], now: datetime) -> str:
    found = _date(credential, "validUntil", "expirationDate")
    if found is None:
        return "does not expire"
    name, moment = found
    if moment < now:
        raise InvalidCredential(f"expired: {name} was {credential[name]}")
    return f"valid until {credential[name]}"


def _jwt_claims(token: vc_jwt.DecodedJwt, now: datetime) -> str:
    vc_jwt.check_jwt_claims(token, now=now)
    return "iss, jti, sub, nbf and exp agree with the credential"


__all__ = ["VerifierError", "VerifyOptions", "verify_credential"]
