"""Re-create examples/sample-credential.json: an OB 3.0 credential signed by a did:key demo issuer.

The key is derived from a public string: it is a demonstration key, never one to trust. Run from the repository
root: `python examples/make_sample.py`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.factories import make_credential
from verifier.multikey import encode_ed25519_public
from verifier.suites.eddsa_rdfc_2022 import Ed25519Signer, sign


def main() -> None:
    seed = hashlib.sha256(b"ob3-issuer public demo key - do not trust").digest()
    public = Ed25519Signer(seed, "unused").public_key
    did = "did:key:" + encode_ed25519_public(public)
    signer = Ed25519Signer(seed, f"{did}#{did.removeprefix('did:key:')}")
    credential = make_credential(7, issuer_did=did, variant=3)
    credential.pop("credentialStatus")  # no status list to publish for an offline sample
    credential["validFrom"] = "2025-09-01T12:00:00Z"
    credential["validUntil"] = "2030-09-01T12:00:00Z"
    signed = sign(credential, signer, created=datetime(2025, 9, 1, 12, 0, tzinfo=UTC))
    out = Path(__file__).with_name("sample-credential.json")
    out.write_text(json.dumps(signed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
