"""The issuer's signing keys: sealed at rest under a master key, rotated with old keys kept published, and
turned into a DID document and a JWKS. `crypto` and `did` are pure; `store` works on a database session."""

from .crypto import (
    ALGORITHMS,
    GeneratedKey,
    KeyringError,
    MasterKeyError,
    decrypt_private_key,
    encrypt_private_key,
    generate_key,
    generate_master_key_file,
    load_master_key,
)
from .did import did_document, jwks, verification_method_id
from .store import (
    COMPROMISE_WARNING,
    IssuerSigners,
    NoActiveKey,
    UnknownKey,
    active_key,
    active_signers,
    clear_signer_cache,
    ensure_keys,
    mark_compromised,
    published_keys,
    rotate,
    signers_among,
)

__all__ = [
    "ALGORITHMS",
    "COMPROMISE_WARNING",
    "GeneratedKey",
    "IssuerSigners",
    "KeyringError",
    "MasterKeyError",
    "NoActiveKey",
    "UnknownKey",
    "active_key",
    "active_signers",
    "clear_signer_cache",
    "decrypt_private_key",
    "did_document",
    "encrypt_private_key",
    "ensure_keys",
    "generate_key",
    "generate_master_key_file",
    "jwks",
    "load_master_key",
    "mark_compromised",
    "published_keys",
    "rotate",
    "signers_among",
    "verification_method_id",
]
