"""Bitstring Status List 1.0 (W3C REC 2025-05-15): decode a list, read an entry's bits, check one entry.

The status list credential is fetched and its proof verified by the caller (`load_list`), so this module
never touches the network and stays pure apart from the clock.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .errors import CannotCheck, InvalidCredential
from .schema import parse_datetime_z

MIN_BITS = 131072  # BSL §2.2: 16 KB, so one index does not single out a holder (herd privacy)
MAX_DECOMPRESSED = 16 * 1024 * 1024  # a zip bomb must not eat memory; 16 MiB is 128x the minimum list

ENTRY_TYPE = "BitstringStatusListEntry"
LIST_TYPE = "BitstringStatusListCredential"
REVOCATION_LIST_TYPE = "1EdTechRevocationList"  # OB 3.0 §8.3 step 4 (VCRL 1.0): an unsigned JSON list
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_DIGITS = re.compile(r"[0-9]+")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """The status read from the list; `value != 0` means the purpose applies (revoked, suspended, …)."""

    purpose: str
    index: int
    value: int
    list_url: str


def decode_encoded_list(encoded: str) -> bytes:
    """Expand `encodedList`: "u" + base64url-nopad(GZIP(bits)); also the legacy unprefixed StatusList2021 form.

    A GZIP stream always starts with 1f 8b 08, i.e. base64 "H4sI", so an unprefixed legacy value can never be
    mistaken for a multibase one. Raises `InvalidCredential` (the list itself is malformed) for bad base64,
    bad GZIP, a bad GZIP checksum, or more than `MAX_DECOMPRESSED` bytes of output.
    """
    if not isinstance(encoded, str):
        raise InvalidCredential("encodedList must be a string", code="status_list_malformed")
    body = encoded[1:] if encoded.startswith("u") else encoded
    body = body.rstrip("=")  # tolerate padding although the REC says "no padding"
    if not _B64URL.fullmatch(body) or len(body) % 4 == 1:
        raise InvalidCredential("encodedList is not multibase base64url ('u' prefix)", code="status_list_malformed")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCredential("encodedList is not valid base64url", code="status_list_malformed") from None
    return _gunzip_bounded(raw)


def _gunzip_bounded(raw: bytes) -> bytes:
    """GZIP-decompress (all members, checksums verified) without ever producing more than the limit."""
    if not raw.startswith(_GZIP_MAGIC):
        raise InvalidCredential("encodedList is not GZIP data", code="status_list_malformed")
    out = bytearray()
    data = raw
    while data:
        if not data.startswith(_GZIP_MAGIC):
            raise InvalidCredential("encodedList has trailing bytes after the GZIP data", code="status_list_malformed")
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, MAX_DECOMPRESSED + 1 - len(out))  # max_length >= 1: never "unbounded"
        except zlib.error as exc:
            raise InvalidCredential(f"encodedList GZIP data is corrupt: {exc}", code="status_list_malformed") from None
        if len(out) > MAX_DECOMPRESSED:
            raise InvalidCredential(
                f"encodedList expands to more than {MAX_DECOMPRESSED} bytes; refused", code="status_list_too_large"
            )
        if not inflater.eof:
            raise InvalidCredential("encodedList GZIP data is truncated", code="status_list_malformed")
        data = inflater.unused_data
    return bytes(out)


def encode_bitstring(bits: bytes | bytearray) -> str:
    """The issuer side: "u" + base64url-nopad(GZIP(bits)), deterministic (mtime 0) so re-publishing is stable.

    Level 6 with mtime 0 reproduces the REC's example encodedList byte for byte.
    """
    if not isinstance(bits, bytes | bytearray):
        raise TypeError("bits must be bytes")
    packed = gzip.compress(bytes(bits), compresslevel=6, mtime=0)
    return "u" + base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def bit_at(bits: bytes | bytearray, index: int, size: int = 1) -> int:
    """The `size`-bit status of entry `index`, i.e. bits [index*size, index*size+size), MSB first.

    Bit 0 is the most significant bit of byte 0 (BSL §3.2 "left-most"). Out-of-range reads are caller errors.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    start = index * size
    end = start + size
    if index < 0 or end > len(bits) * 8:
        raise ValueError(f"entry {index} (size {size}) is outside a list of {len(bits) * 8} bits")
    first, last = start // 8, (end - 1) // 8
    chunk = int.from_bytes(bits[first : last + 1], "big")
    return (chunk >> ((last + 1) * 8 - end)) & ((1 << size) - 1)


def set_bit(bits: bytearray, index: int, value: bool) -> None:
    """Set or clear one bit in place (issuer side); same bit order as `bit_at`."""
    if not isinstance(bits, bytearray):
        raise TypeError("bits must be a bytearray")
    if index < 0 or index >= len(bits) * 8:
        raise ValueError(f"index {index} is outside a list of {len(bits) * 8} bits")
    mask = 0x80 >> (index % 8)
    if value:
        bits[index // 8] |= mask
    else:
        bits[index // 8] &= ~mask & 0xFF


def _types(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def status_entries(credential: dict[str, Any]) -> list[dict[str, Any]]:
    """The credential's BitstringStatusListEntry entries (`credentialStatus` may be one object or an array).

    Other status types are left to `unsupported_status_types`. Raises `InvalidCredential` when
    `credentialStatus` is neither an object nor an array of objects with a `type`.
    """
    return [e for e in _all_entries(credential) if ENTRY_TYPE in _types(e["type"])]


def revocation_list_entries(credential: dict[str, Any]) -> list[dict[str, Any]]:
    """The credential's 1EdTechRevocationList entries (older OB 3.0 credentials)."""
    return [e for e in _all_entries(credential) if REVOCATION_LIST_TYPE in _types(e["type"])]


def unsupported_status_types(credential: dict[str, Any]) -> list[str]:
    """Type names of status entries this module does not check (e.g. StatusList2021Entry), so the caller can
    report them as "not checked" rather than silently passing them."""
    out: list[str] = []
    for entry in _all_entries(credential):
        names = [t for t in _types(entry["type"]) if isinstance(t, str)]
        if ENTRY_TYPE not in names and REVOCATION_LIST_TYPE not in names:
            out.append(" ".join(names) or "(unnamed type)")
    return out


def check_revocation_list(
    entry: dict[str, Any], *, credential_id: str | None, load_json: Callable[[str], Any]
) -> tuple[bool, str | None]:
    """(revoked, reason) from a 1EdTechRevocationList: revoked when `revokedCredential` has an entry with the
    credential's id whose `revoked` is true or absent (OB 3.0 §8.3 step 4). The list carries no proof, so this
    is only as trustworthy as the https server that serves it. `load_json` raises CannotCheck when it fails."""
    url = entry.get("id")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("https", "http"):
        raise InvalidCredential("1EdTechRevocationList entry needs an http(s) id", code="status_entry_malformed")
    if credential_id is None:
        raise InvalidCredential("a credential with a revocation list must have an id", code="status_entry_malformed")
    document = load_json(url)
    listed = document.get("revokedCredential", []) if isinstance(document, dict) else None
    if not isinstance(listed, list):
        raise CannotCheck(
            f"revocation list {url} is malformed (no revokedCredential array)", code="status_list_malformed"
        )
    for item in listed:
        if isinstance(item, dict) and item.get("id") == credential_id and item.get("revoked", True) is not False:
            reason = item.get("revocationReason")
            return True, reason if isinstance(reason, str) else None
    return False, None


def _all_entries(credential: dict[str, Any]) -> list[dict[str, Any]]:
    raw = credential.get("credentialStatus")
    if raw is None:
        return []
    entries = raw if isinstance(raw, list) else [raw]
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "type" not in entry:
            raise InvalidCredential(
                f"credentialStatus[{i}] must be an object with a type", code="status_entry_malformed"
            )
    return entries


def check_status_entry(
    entry: dict[str, Any],
    *,
    credential_id: str | None,
    load_list: Callable[[str], dict[str, Any]],
    now: datetime | None = None,
) -> StatusOutcome:
    """Validate one BitstringStatusListEntry and read its status from the list (BSL §3.2).

    `load_list(url)` returns the status list credential with its proof ALREADY verified; it raises
    `CannotCheck` when it cannot fetch or verify it (an `InvalidCredential` from it is reported as
    `CannotCheck` too: a bad list says nothing about this credential).

    InvalidCredential (this credential is provably wrong): the entry is malformed (type, purpose, index that is
    not a base-10 integer, missing/non-URL statusListCredential, bad statusSize, id equal to the list URL, list
    URL equal to the credential's own id), or the index lies outside the list (RANGE_ERROR).
    CannotCheck (the status is unknown): list unreachable/unverifiable, not a BitstringStatusListCredential,
    purpose mismatch, malformed or undecodable encodedList, list shorter than 131,072 entries
    (STATUS_LIST_LENGTH_ERROR), list outside its validity period.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    purpose, index, size, url = _parse_entry(entry, credential_id)
    try:
        status_list = load_list(url)
    except InvalidCredential as exc:
        raise CannotCheck(
            f"status list {url} failed verification: {exc.detail}", code="status_list_unverified"
        ) from exc
    subject = _list_subject(status_list, url, purpose, now or datetime.now(UTC))
    try:
        bits = decode_encoded_list(subject.get("encodedList", ""))
    except InvalidCredential as exc:
        raise CannotCheck(f"status list {url}: {exc.detail}", code=exc.code) from exc
    length = len(bits) * 8
    if length < MIN_BITS * size:
        raise CannotCheck(
            f"status list {url} has {length} bits; at least {MIN_BITS * size} are required", code="status_list_length"
        )
    if (index + 1) * size > length:
        raise InvalidCredential(
            f"statusListIndex {index} is outside status list {url} ({length // size} entries)", code="status_range"
        )
    return StatusOutcome(purpose=purpose, index=index, value=bit_at(bits, index, size), list_url=url)


def _parse_entry(entry: dict[str, Any], credential_id: str | None) -> tuple[str, int, int, str]:
    def bad(why: str) -> InvalidCredential:
        return InvalidCredential(f"credentialStatus: {why}", code="status_entry_malformed")

    if not isinstance(entry, dict):
        raise bad("entry must be an object")
    if ENTRY_TYPE not in _types(entry.get("type")):
        raise bad(f"type must be {ENTRY_TYPE}")
    purpose = entry.get("statusPurpose")
    if not isinstance(purpose, str) or not purpose:
        raise bad("statusPurpose must be a non-empty string")
    raw_index = entry.get("statusListIndex")
    if isinstance(raw_index, int) and not isinstance(raw_index, bool) and raw_index >= 0:
        index = raw_index  # 1EdTech's fixtures use a JSON number; the REC says a base-10 string
    elif isinstance(raw_index, str) and _DIGITS.fullmatch(raw_index) and len(raw_index) <= 20:
        index = int(raw_index)
    else:
        raise bad(f"statusListIndex must be a non-negative base-10 integer string, got {raw_index!r:.40}")
    url = entry.get("statusListCredential")
    if not isinstance(url, str) or not _is_url(url):
        raise bad("statusListCredential must be a URL")
    if entry.get("id") == url:
        raise bad("id must not be the status list URL (BSL §2.1)")
    if credential_id is not None and url == credential_id:
        raise bad("statusListCredential points at the credential itself")
    size = entry.get("statusSize", 1)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise bad("statusSize must be a positive integer")
    if size > 1 and not isinstance(entry.get("statusMessage"), list):
        raise bad("statusSize > 1 requires a statusMessage array (BSL §2.1)")
    return purpose, index, size, url


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme) and (bool(parts.netloc) or parts.scheme not in ("http", "https"))


def _list_subject(status_list: dict[str, Any], url: str, purpose: str, now: datetime) -> dict[str, Any]:
    """Check the (verified) list credential's shape, purpose and validity period; return its subject."""

    def cannot(why: str, code: str = "status_list_malformed") -> CannotCheck:
        return CannotCheck(f"status list {url}: {why}", code=code)

    if not isinstance(status_list, dict) or LIST_TYPE not in _types(status_list.get("type")):
        raise cannot(f"not a {LIST_TYPE}")
    subject = status_list.get("credentialSubject")
    if isinstance(subject, list) and len(subject) == 1:
        subject = subject[0]
    if not isinstance(subject, dict) or "BitstringStatusList" not in _types(subject.get("type")):
        raise cannot("credentialSubject must be one BitstringStatusList")
    purposes = _types(subject.get("statusPurpose"))
    if purpose not in purposes:
        raise cannot(f"its statusPurpose {purposes!r} does not include {purpose!r}", "status_purpose_mismatch")
    try:
        start = status_list.get("validFrom", status_list.get("issuanceDate"))
        until = status_list.get("validUntil", status_list.get("expirationDate"))
        if start is not None and parse_datetime_z(start) > now:
            raise cannot(f"not valid before {start}", "status_list_not_yet_valid")
        if until is not None and parse_datetime_z(until) < now:
            raise cannot(f"expired at {until}", "status_list_expired")
    except InvalidCredential as exc:
        raise cannot(exc.detail) from exc
    return subject
