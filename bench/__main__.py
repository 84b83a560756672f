"""`python -m bench [--json] [--n N]`: signing and verification throughput on one core.

Every operation works on a different credential (tests/factories.py: distinct ids, names, hashes, dates; four
shapes), so nothing is answered from a per-document cache. The process is pinned to one CPU where the OS allows.

Issuing over HTTP (a real `issuer serve` on SQLite and PostgreSQL, 1/10/50 concurrent clients, a 1,000-learner
batch) is a separate command: `python -m bench.service` (bench/service.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from tests.factories import make_credential
from verifier import canonical
from verifier.errors import FetchError
from verifier.multikey import encode_ed25519_public
from verifier.suites import eddsa_rdfc_2022 as di
from verifier.suites import vc_jwt
from verifier.verify import VerifyOptions, verify_credential

ISSUER = "did:web:badges.example.edu"
NOW = datetime(2027, 1, 1, tzinfo=UTC)


def _rate(run: Callable[[int], object], items: int, rounds: int = 5) -> dict[str, float]:
    """Median ops/s over `rounds` passes of `items` distinct inputs (the first pass warms the shape cache)."""
    run(0)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(items):
            run(i)
        rates.append(items / (time.perf_counter() - start))
    return {"per_s": statistics.median(rates), "ms": 1000 / statistics.median(rates)}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--n", type=int, default=2000, help="distinct credentials per pass (default 2000)")
    parser.add_argument("--memory-n", type=int, default=10_000, help="credentials for the memory check")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    n = args.n
    seed = bytes(range(32))
    signer = di.Ed25519Signer(seed, f"{ISSUER}#key-1")
    credentials = [make_credential(i) for i in range(n)]

    # --- Data Integrity ------------------------------------------------------------------------------
    first_shape = time.perf_counter()
    di.create_proof(make_credential(10**6, variant=0), signer, created=NOW)
    cold_ms = (time.perf_counter() - first_shape) * 1000
    sign = _rate(lambda i: di.create_proof(credentials[i], signer, created=NOW), n)
    options_template = di.create_proof(credentials[0], signer, created=NOW)
    options_template.pop("proofValue")

    def reference_sign(i: int) -> bytes:
        """The same signature through pyld alone (no shape cache): what the fast path is measured against."""
        config = {**options_template, "@context": credentials[i]["@context"]}
        proof_hash = hashlib.sha256(canonical.canonicalize_reference(config).encode()).digest()
        doc_hash = hashlib.sha256(canonical.canonicalize_reference(credentials[i]).encode()).digest()
        return signer.sign(proof_hash + doc_hash)

    reference = _rate(reference_sign, min(n, 200), rounds=3)
    signed = [di.sign(c, signer, created=NOW) for c in credentials]
    public = signer.public_key
    verify = _rate(lambda i: di.verify_proof(signed[i], signed[i]["proof"][0], public), n)

    # --- VC-JWT RS256 ----------------------------------------------------------------------------------
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAKey.import_key(private)
    jwks = json.dumps({"keys": [{**jwk.as_dict(private=False), "kid": "rsa-1"}]}).encode()

    def fetcher(url: str, *, accept: str = "application/json") -> bytes:
        if url == "https://badges.example.edu/.well-known/jwks.json":
            return jwks
        raise FetchError(f"benchmark fetcher has no {url}")

    jwt_sign = _rate(lambda i: vc_jwt.sign_jwt(credentials[i], jwk, kid="rsa-1"), n)
    tokens = [vc_jwt.sign_jwt(c, jwk, kid="rsa-1") for c in credentials]

    def jwt_verify_one(i: int) -> None:
        token = vc_jwt.decode_jwt(tokens[i])
        vc_jwt.verify_jwt_signature(token, fetcher=fetcher)
        vc_jwt.check_jwt_claims(token, now=NOW)

    jwt_verify = _rate(jwt_verify_one, n)

    # --- the whole report (offline: did:key issuer, no status entry) -----------------------------------
    did = "did:key:" + encode_ed25519_public(public)
    key_signer = di.Ed25519Signer(seed, f"{did}#{did.removeprefix('did:key:')}")
    whole_inputs = []
    for i in range(n):
        c = make_credential(i, issuer_did=did)
        c.pop("credentialStatus")
        whole_inputs.append(di.sign(c, key_signer, created=NOW))
    options = VerifyOptions(now=NOW)
    whole = _rate(lambda i: verify_credential(whole_inputs[i], options), n, rounds=3)

    # --- memory: verify many distinct credentials in one process ----------------------------------------
    rss_before = _rss_mib()
    for i in range(args.memory_n):
        c = make_credential(n + i, issuer_did=did)
        c.pop("credentialStatus")
        doc = di.sign(c, key_signer, created=NOW)
        if not verify_credential(doc, options).verified:
            raise SystemExit("benchmark credential failed to verify")
    rss_after = _rss_mib()
    state = canonical._state(options.loader)

    result: dict[str, Any] = {
        "di_sign_per_s": round(sign["per_s"]),
        "di_sign_reference_path_per_s": round(reference["per_s"]),
        "di_verify_per_s": round(verify["per_s"]),
        "jwt_sign_per_s": round(jwt_sign["per_s"]),
        "jwt_verify_per_s": round(jwt_verify["per_s"]),
        "verify_credential_per_s": round(whole["per_s"]),
        "di_sign_first_shape_ms": round(cold_ms, 1),
        "memory_check_credentials": args.memory_n,
        "max_rss_mib_before_memory_check": round(rss_before, 1),
        "max_rss_mib_after_memory_check": round(rss_after, 1),
        "shape_cache_hits": state.shapes.hits,
        "shape_cache_misses": state.shapes.misses,
        "distinct_credentials_per_pass": n,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, pinned to one",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [
        ("eddsa-rdfc-2022 sign", sign),
        ("eddsa-rdfc-2022 sign, pyld reference path", reference),
        ("eddsa-rdfc-2022 verify (proof only)", verify),
        ("VC-JWT RS256 sign", jwt_sign),
        ("VC-JWT RS256 verify (signature + claims)", jwt_verify),
        ("verify_credential, full report (offline)", whole),
    ]
    print(f"{'operation':44} {'per second':>11} {'ms each':>9}")
    for label, figures in rows:
        print(f"{label:44} {figures['per_s']:>11,.0f} {figures['ms']:>9.3f}")
    print(f"\nfirst credential of a new shape: {cold_ms:.1f} ms (one reference JSON-LD run, then cached)")
    print(f"max RSS {rss_before:.1f} MiB -> {rss_after:.1f} MiB after verifying {args.memory_n:,} more credentials")
    print(f"shape cache: {state.shapes.hits:,} hits, {state.shapes.misses} misses; {result['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
