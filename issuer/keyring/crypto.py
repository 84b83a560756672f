"""Key material, pure: the master key, encryption of private keys at rest, key generation and import.

Private keys live in the database (so several hosts on one PostgreSQL see the same rotations), sealed with
AES-256-GCM under a master key that never enters the database. The AAD binds each blob to its key id, so a
blob copied into another row does not decrypt. Nothing here puts key bytes into a repr or an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey, RSAKey
from nacl.signing import SigningKey as NaclSigningKey

from issuer.settings import Settings
from verifier.multikey import encode_ed25519_public
from verifier.suites.eddsa_rdfc_2022 import Ed25519Signer

ALGORITHMS = ("Ed25519", "RS256", "ES256")
MASTER_KEY_FILE = "master.key"
# NIST SP 800-57 Part 1 r5: 2048-bit RSA (112-bit security) is acceptable only through 2030, and retired keys
# stay published for as long as their credentials are checked. 3072 bits costs ~0.8 ms per JWT signature.
RSA_BITS = 3072

JwtKey = RSAKey | ECKey

_VERSION = b"\x01"
_NONCE_BYTES = 12
_AAD_LABEL = b"ob3-issuer/signing-key/v1:"
_MASTER_TEXT = re.compile(r"[A-Za-z0-9_-]{43}=?")


class KeyringError(Exception):
    """A key cannot be used as asked. Messages name key ids, never key material."""


class MasterKeyError(KeyringError):
    """The master key is missing, malformed, or does not open a stored private key."""


# -- the master key ----------------------------------------------------------------------------------------


def load_master_key(settings: Settings) -> bytes:
    """The 32-byte master key: `settings.master_key` if set, else the file `keys_dir/master.key`."""
    if settings.master_key is not None:
        return parse_master_key(settings.master_key.get_secret_value(), source="ISSUER_MASTER_KEY")
    path = settings.keys_dir / MASTER_KEY_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise MasterKeyError(
            f"no master key: set ISSUER_MASTER_KEY, or create {path} with `issuer init` (development only)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise MasterKeyError(f"cannot read the master key file {path}: {type(error).__name__}") from None
    return parse_master_key(text, source=str(path))


def parse_master_key(text: str, *, source: str) -> bytes:
    """base64url (padding optional, surrounding whitespace ignored) of exactly 32 bytes."""
    text = text.strip()
    if not _MASTER_TEXT.fullmatch(text):
        raise MasterKeyError(
            f"the master key in {source} is not base64url of 32 bytes ({len(text)} characters; expected 43)"
        )
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=")
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits only decodable text
        raise MasterKeyError(f"the master key in {source} is not valid base64url") from None
    if _b64u(raw) != text.rstrip("="):  # non-zero trailing bits: a typo, not a key
        raise MasterKeyError(f"the master key in {source} is not canonical base64url of 32 bytes")
    return raw


def generate_master_key_file(keys_dir: Path) -> Path:
    """Write a new random master key to `keys_dir/master.key` (mode 0600); never overwrite one (development)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / MASTER_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MasterKeyError(f"{path} already exists; refusing to overwrite a master key") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask may only have narrowed it, but be exact
        handle.write(_b64u(secrets.token_bytes(32)) + "\n")
    return path


# -- encryption at rest ------------------------------------------------------------------------------------


def encrypt_private_key(master: bytes, key_id: str, private: bytes) -> bytes:
    """version (1) || nonce (12) || AES-256-GCM(private) with AAD = label || key id."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _VERSION + nonce + _aead(master).encrypt(nonce, private, _aad(key_id))


def decrypt_private_key(master: bytes, key_id: str, blob: bytes) -> bytes:
    """The private bytes sealed by `encrypt_private_key` for this `key_id`."""
    aead = _aead(master)
    if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
        raise MasterKeyError(f"stored key {key_id} is not in a known encrypted format")
    nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        return aead.decrypt(nonce, sealed, _aad(key_id))
    except InvalidTag:
        raise MasterKeyError(
            f"cannot decrypt key {key_id}: wrong master key? (or the stored blob was altered or belongs to another key)"
        ) from None


def _aead(master: bytes) -> AESGCM:
    if not isinstance(master, bytes) or len(master) != 32:
        raise MasterKeyError("the master key must be 32 bytes")
    return AESGCM(master)


def _aad(key_id: str) -> bytes:
    return _AAD_LABEL + key_id.encode("utf-8")


# -- generation and import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedKey:
    """A new key pair: the public half to publish, the private half (Ed25519 seed or PKCS#8 DER) to seal."""

    algorithm: str
    key_id: str
    public_jwk: dict[str, Any]
    public_key_multibase: str | None
    private: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"GeneratedKey(algorithm={self.algorithm!r}, key_id={self.key_id!r}, private=<hidden>)"


def new_key_id(algorithm: str) -> str:
    """`<alg-lowercase>-<10 hex>`: the DID URL fragment of the key."""
    return f"{algorithm.lower()}-{secrets.token_hex(5)}"


def generate_key(algorithm: str) -> GeneratedKey:
    """A fresh key for "Ed25519" (Data Integrity), "RS256" or "ES256" (VC-JWT)."""
    key_id = new_key_id(_known(algorithm))
    if algorithm == "Ed25519":
        seed = secrets.token_bytes(32)
        public = bytes(NaclSigningKey(seed).verify_key)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64u(public)}
        return GeneratedKey(algorithm, key_id, jwk, encode_ed25519_public(public), seed)
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return GeneratedKey(algorithm, key_id, public_jwk_of(private_key), None, der)


def public_jwk_of(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """The RFC 7518 public members only (kty, n, e / kty, crv, x, y)."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        numbers = private_key.public_key().public_numbers()
        return {"kty": "RSA", "n": _b64u(_be(numbers.n)), "e": _b64u(_be(numbers.e))}
    point = private_key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64u(point.x.to_bytes(32, "big")),
        "y": _b64u(point.y.to_bytes(32, "big")),
    }


def import_jwt_key(algorithm: str, private: bytes, public_jwk: dict[str, Any]) -> JwtKey:
    """A joserfc key for `verifier.suites.vc_jwt.sign_jwt` from PKCS#8 DER, checked against its public JWK.

    RSA validation is skipped at load (it costs ~90 ms for 3072 bits): the bytes come out of an authenticated
    AES-GCM blob that only our own `generate_key` sealed. Comparing with the published JWK still catches a
    row whose public half was edited.
    """
    if _known(algorithm) not in ("RS256", "ES256"):
        raise ValueError(f"{algorithm} keys do not sign VC-JWTs here")
    try:
        loaded = serialization.load_der_private_key(private, password=None, unsafe_skip_rsa_key_validation=True)
    except ValueError:
        raise KeyringError(f"the stored {algorithm} private key is not PKCS#8 DER") from None
    key: JwtKey
    if algorithm == "RS256" and isinstance(loaded, rsa.RSAPrivateKey):
        key = RSAKey.import_key(loaded)
    elif algorithm == "ES256" and isinstance(loaded, ec.EllipticCurvePrivateKey) and loaded.curve.name == "secp256r1":
        key = ECKey.import_key(loaded)
    else:
        raise KeyringError(f"the stored private key is not an {algorithm} key")
    if any(public_jwk.get(name) != value for name, value in public_jwk_of(loaded).items()):
        raise KeyringError(f"the stored {algorithm} private key does not match its published public key")
    return key


def import_ed25519_signer(seed: bytes, verification_method: str, public_key_multibase: str | None) -> Ed25519Signer:
    """The Data Integrity signer for a stored seed, checked against its published Multikey."""
    if len(seed) != 32:
        raise KeyringError("the stored Ed25519 private key is not a 32-byte seed")
    signer = Ed25519Signer(seed, verification_method)
    if signer.public_key_multibase != public_key_multibase:
        raise KeyringError("the stored Ed25519 private key does not match its published public key")
    return signer


def _known(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown key algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    return algorithm


def _be(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
