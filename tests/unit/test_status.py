"""Bitstring Status List: decoding published lists, bit order, the bounded GZIP, and checking entries."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.errors import CannotCheck, InvalidCredential
from verifier.status import (
    MAX_DECOMPRESSED,
    MIN_BITS,
    StatusOutcome,
    bit_at,
    check_status_entry,
    decode_encoded_list,
    encode_bitstring,
    revocation_list_entries,
    set_bit,
    status_entries,
    unsupported_status_types,
)

DATA = Path(__file__).resolve().parents[1] / "vectors" / "data"
TESTLIST_URL = (
    "https://raw.githubusercontent.com/1EdTech/digital-credentials-public-validator/refs/heads/main/"
    "inspector-vc/src/test/resources/ob30/bit-string-list/testlist"
)


def load(relative: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((DATA / relative).read_text("utf-8"))
    return value


def set_indexes(bits: bytes) -> list[int]:
    return [i for i in range(len(bits) * 8) if bit_at(bits, i)]


def raw_encode(raw: bytes) -> str:
    return "u" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ---------------------------------------------------------------- decoding


EXPECTED = load("derived/bitstring-expected-decodings.json")


@pytest.mark.parametrize("source", [k for k in EXPECTED if not k.startswith("_")])
def test_published_lists_decode_as_derived(source: str) -> None:
    expected = EXPECTED[source]
    encoded = load(source)["credentialSubject"]["encodedList"]
    assert encoded == expected["encodedList"]
    bits = decode_encoded_list(encoded)
    assert len(bits) == expected["uncompressedBytes"]
    assert len(bits) * 8 == expected["bits"]
    assert set_indexes(bits) == expected["setIndexes"]


def test_rec_example_3_is_131072_zero_bits() -> None:
    bits = decode_encoded_list(
        load("bitstring-status-list/rec-example-3-bitstring-status-list-credential.json")["credentialSubject"][
            "encodedList"
        ]
    )
    assert len(bits) * 8 == MIN_BITS == 131072
    assert bits == bytes(16384)


def test_testlist_has_only_index_23_set() -> None:
    bits = decode_encoded_list(
        load("ob3-validator-fixtures/bit-string-list/testlist")["credentialSubject"]["encodedList"]
    )
    assert bit_at(bits, 23) == 1
    assert bit_at(bits, 22) == 0
    assert bit_at(bits, 24) == 0
    assert set_indexes(bits) == [23]


def test_encoding_reproduces_the_rec_example_byte_for_byte() -> None:
    rec = load("bitstring-status-list/rec-example-3-bitstring-status-list-credential.json")
    assert encode_bitstring(bytes(16384)) == rec["credentialSubject"]["encodedList"]


def test_encoding_is_deterministic_with_zero_mtime() -> None:
    bits = bytearray(MIN_BITS // 8)
    set_bit(bits, 5, True)
    first, second = encode_bitstring(bytes(bits)), encode_bitstring(bits)
    assert first == second
    raw = base64.urlsafe_b64decode(first[1:] + "=" * (-len(first[1:]) % 4))
    assert raw[4:8] == b"\0\0\0\0"  # GZIP MTIME


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=MIN_BITS - 1), max_size=30))
def test_round_trip_with_set_bits(indexes: set[int]) -> None:
    bits = bytearray(MIN_BITS // 8)
    for i in indexes:
        set_bit(bits, i, True)
    decoded = decode_encoded_list(encode_bitstring(bytes(bits)))
    assert decoded == bits
    assert set_indexes(decoded) == sorted(indexes)


def test_legacy_statuslist2021_value_without_multibase_prefix() -> None:
    bits = bytearray(MIN_BITS // 8)
    set_bit(bits, 100, True)
    legacy = encode_bitstring(bytes(bits))[1:]
    assert legacy.startswith("H4sI")
    assert set_indexes(decode_encoded_list(legacy)) == [100]


def test_padding_and_multiple_gzip_members_are_accepted() -> None:
    two_members = gzip.compress(b"\x80") + gzip.compress(b"\x01")
    encoded = "u" + base64.urlsafe_b64encode(two_members).decode()  # with "=" padding
    assert decode_encoded_list(encoded) == b"\x80\x01"


def test_zip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(MAX_DECOMPRESSED + 1), compresslevel=9)
    assert len(bomb) < 64 * 1024
    with pytest.raises(InvalidCredential) as err:
        decode_encoded_list(raw_encode(bomb))
    assert err.value.code == "status_list_too_large"


def test_exactly_the_limit_is_accepted() -> None:
    assert len(decode_encoded_list(raw_encode(gzip.compress(bytes(MAX_DECOMPRESSED))))) == MAX_DECOMPRESSED


def test_many_small_members_cannot_add_up_past_the_limit() -> None:
    member = gzip.compress(bytes(MAX_DECOMPRESSED // 2))
    with pytest.raises(InvalidCredential) as err:
        decode_encoded_list(raw_encode(member * 3))
    assert err.value.code == "status_list_too_large"


def corrupt_crc() -> str:
    raw = bytearray(gzip.compress(bytes(100)))
    raw[-8] ^= 0xFF  # CRC32 trailer
    return raw_encode(bytes(raw))


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param("u" + "!!!!", id="not-base64url"),
        pytest.param("uH4sI+AAA/", id="standard-base64-alphabet"),
        pytest.param("uA", id="impossible-length"),
        pytest.param(raw_encode(b"plain bytes"), id="not-gzip"),
        pytest.param(raw_encode(gzip.compress(bytes(1000))[:-10]), id="truncated"),
        pytest.param(corrupt_crc(), id="bad-crc"),
        pytest.param(raw_encode(gzip.compress(bytes(10)) + b"junk"), id="trailing-junk"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_encoded_lists(encoded: str) -> None:
    with pytest.raises(InvalidCredential) as err:
        decode_encoded_list(encoded)
    assert err.value.code == "status_list_malformed"


def test_non_string_encoded_list() -> None:
    with pytest.raises(InvalidCredential):
        decode_encoded_list(12345)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bits


def test_bit_order_is_most_significant_bit_first() -> None:
    bits = bytes([0b1000_0000, 0b0000_0001])
    assert [bit_at(bits, i) for i in range(16)] == [1] + [0] * 14 + [1]


def test_multi_bit_entries() -> None:
    bits = bytes([0b0110_0011, 0b1000_0000])
    assert [bit_at(bits, i, 2) for i in range(4)] == [0b01, 0b10, 0b00, 0b11]
    assert bit_at(bits, 1, 3) == 0b000  # bits 3..5
    assert bit_at(bits, 2, 3) == 0b111  # bits 6..8 span two bytes


@pytest.mark.parametrize(("index", "size"), [(16, 1), (-1, 1), (8, 2), (0, 0)])
def test_bit_at_out_of_range_is_a_caller_error(index: int, size: int) -> None:
    with pytest.raises(ValueError, match=r"outside|size"):
        bit_at(bytes(2), index, size)


def test_set_bit_sets_and_clears_one_bit() -> None:
    bits = bytearray(2)
    set_bit(bits, 9, True)
    assert bits == bytearray([0, 0b0100_0000])
    set_bit(bits, 0, True)
    set_bit(bits, 9, False)
    assert bits == bytearray([0b1000_0000, 0])
    with pytest.raises(ValueError, match="outside"):
        set_bit(bits, 16, True)
    with pytest.raises(TypeError):
        set_bit(bytes(2), 0, True)  # type: ignore[arg-type]


# ---------------------------------------------------------------- entries


def revoked_credential() -> dict[str, Any]:
    return load("ob3-validator-fixtures/bit-string-list/credential-status-revoked.json")


def entry(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = copy.deepcopy(revoked_credential()["credentialStatus"])
    for key, new in changes.items():
        if new is None:
            value.pop(key, None)
        else:
            value[key] = new
    return value


def loader(lists: dict[str, dict[str, Any]]) -> Any:
    """Stands in for the caller's fetch-and-verify step: known URLs only, like an offline fetcher."""

    def load_list(url: str) -> dict[str, Any]:
        if url not in lists:
            raise CannotCheck(f"network access is disabled; cannot fetch {url}", code="offline")
        return copy.deepcopy(lists[url])

    return load_list


TESTLIST = load("ob3-validator-fixtures/bit-string-list/testlist")


def with_list(**subject_changes: Any) -> dict[str, Any]:
    status_list = copy.deepcopy(TESTLIST)
    status_list["credentialSubject"].update(subject_changes)
    return status_list


def check(e: dict[str, Any], status_list: dict[str, Any] = TESTLIST, **kw: Any) -> StatusOutcome:
    return check_status_entry(
        e, credential_id=kw.pop("credential_id", None), load_list=loader({TESTLIST_URL: status_list}), **kw
    )


def test_1edtech_revoked_credential_reads_1_from_testlist() -> None:
    credential = revoked_credential()
    [found] = status_entries(credential)
    outcome = check_status_entry(found, credential_id=credential["id"], load_list=loader({TESTLIST_URL: TESTLIST}))
    assert outcome == StatusOutcome(purpose="revocation", index=23, value=1, list_url=TESTLIST_URL)


@pytest.mark.parametrize(("index", "value"), [(22, 0), ("22", 0), ("23", 1), (24, 0), ("0", 0), (MIN_BITS - 1, 0)])
def test_other_indexes(index: int | str, value: int) -> None:
    assert check(entry(statusListIndex=index)).value == value


def test_purpose_mismatch_cannot_be_checked() -> None:
    with pytest.raises(CannotCheck) as err:
        check(entry(statusPurpose="suspension"))
    assert err.value.code == "status_purpose_mismatch"


def test_list_with_several_purposes() -> None:
    status_list = with_list(statusPurpose=["revocation", "suspension"])
    assert check(entry(statusPurpose="suspension"), status_list).value == 1


def test_index_out_of_range_is_invalid() -> None:
    with pytest.raises(InvalidCredential) as err:
        check(entry(statusListIndex=str(MIN_BITS)))
    assert err.value.code == "status_range"


def test_short_list_cannot_be_checked() -> None:
    short = with_list(encodedList=encode_bitstring(bytes(1000)))
    with pytest.raises(CannotCheck) as err:
        check(entry(statusListIndex=3), short)
    assert err.value.code == "status_list_length"


def test_status_size_needs_a_proportionally_longer_list() -> None:
    two_bit = entry(statusSize=2, statusMessage=[{"status": f"0x{i}", "message": str(i)} for i in range(4)])
    with pytest.raises(CannotCheck) as err:
        check(two_bit)
    assert err.value.code == "status_list_length"
    bits = bytearray(2 * MIN_BITS // 8)
    set_bit(bits, 2 * 23 + 1, True)  # entry 23 holds 0b01
    set_bit(bits, 2 * 24, True)  # entry 24 holds 0b10
    longer = with_list(encodedList=encode_bitstring(bytes(bits)))
    assert check(two_bit, longer).value == 1
    assert check({**two_bit, "statusListIndex": "24"}, longer).value == 2


MALFORMED = {
    "wrong-type": entry(type="StatusList2021Entry"),
    "no-purpose": entry(statusPurpose=None),
    "empty-purpose": entry(statusPurpose=""),
    "no-index": entry(statusListIndex=None),
    "negative": entry(statusListIndex="-1"),
    "negative-number": entry(statusListIndex=-1),
    "decimal": entry(statusListIndex="1.5"),
    "hex": entry(statusListIndex="0x17"),
    "boolean": entry(statusListIndex=True),
    "float": entry(statusListIndex=23.0),
    "spaces": entry(statusListIndex=" 23"),
    "huge": entry(statusListIndex="9" * 5000),
    "no-list-url": entry(statusListCredential=None),
    "list-url-not-url": entry(statusListCredential="testlist"),
    "list-url-not-string": entry(statusListCredential=["https://example.com/list"]),
    "id-is-list-url": entry(id=TESTLIST_URL),
    "size-zero": entry(statusSize=0),
    "size-string": entry(statusSize="2"),
    "size-2-without-messages": entry(statusSize=2),
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_entries_are_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidCredential) as err:
        check(bad)
    assert err.value.code == "status_entry_malformed"


def test_entry_must_not_point_at_its_own_credential() -> None:
    with pytest.raises(InvalidCredential, match="itself"):
        check(entry(), credential_id=TESTLIST_URL)


def test_expired_list_cannot_be_checked() -> None:
    expired = {**TESTLIST, "validUntil": "2022-01-01T00:00:00Z"}
    with pytest.raises(CannotCheck) as err:
        check(entry(), expired)
    assert err.value.code == "status_list_expired"
    assert check(entry(), expired, now=datetime(2021, 12, 31, tzinfo=UTC)).value == 1


def test_list_not_yet_valid_cannot_be_checked() -> None:
    with pytest.raises(CannotCheck) as err:
        check(entry(), now=datetime(2020, 1, 1, tzinfo=UTC))
    assert err.value.code == "status_list_not_yet_valid"


def test_list_with_unreadable_dates_cannot_be_checked() -> None:
    with pytest.raises(CannotCheck):
        check(entry(), {**TESTLIST, "validUntil": "next year"})


def test_naive_now_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="timezone"):
        check(entry(), now=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    "bad_list",
    [
        pytest.param({**TESTLIST, "type": ["VerifiableCredential"]}, id="not-a-status-list"),
        pytest.param({**TESTLIST, "credentialSubject": "x"}, id="subject-not-object"),
        pytest.param(with_list(type="Something"), id="subject-wrong-type"),
        pytest.param(with_list(encodedList="not base64!"), id="bad-encoding"),
        pytest.param(with_list(encodedList=None), id="no-encoded-list"),
        pytest.param(with_list(encodedList=raw_encode(gzip.compress(bytes(MAX_DECOMPRESSED + 8)))), id="zip-bomb"),
    ],
)
def test_malformed_lists_cannot_be_checked(bad_list: dict[str, Any]) -> None:
    with pytest.raises(CannotCheck) as err:
        check(entry(), bad_list)
    assert not isinstance(err.value, InvalidCredential)


def test_list_that_fails_verification_is_reported_as_cannot_check() -> None:
    def load_list(url: str) -> dict[str, Any]:
        raise InvalidCredential("signature does not verify")

    with pytest.raises(CannotCheck) as err:
        check_status_entry(entry(), credential_id=None, load_list=load_list)
    assert err.value.code == "status_list_unverified"
    assert "signature does not verify" in err.value.detail


def test_unreachable_list_propagates_cannot_check() -> None:
    with pytest.raises(CannotCheck) as err:
        check_status_entry(entry(), credential_id=None, load_list=loader({}))
    assert err.value.code == "offline"


def test_rec_example_entries_against_the_rec_list() -> None:
    credential = load("bitstring-status-list/rec-example-1-credential-with-revocation-and-suspension-entries.json")
    rec_list = load("bitstring-status-list/rec-example-3-bitstring-status-list-credential.json")
    revocation, suspension = status_entries(credential)
    lists = loader({"https://example.com/credentials/status/3": rec_list})
    outcome = check_status_entry(revocation, credential_id=credential["id"], load_list=lists)
    assert outcome == StatusOutcome("revocation", 94567, 0, "https://example.com/credentials/status/3")
    with pytest.raises(CannotCheck):
        check_status_entry(suspension, credential_id=credential["id"], load_list=lists)


# ---------------------------------------------------------------- finding entries


def test_status_entries_accepts_object_or_array() -> None:
    single = load("bitstring-status-list/rec-appendix-a1-revocable-credential.json")
    assert [e["statusListIndex"] for e in status_entries(single)] == ["94567"]
    both = load("bitstring-status-list/rec-example-1-credential-with-revocation-and-suspension-entries.json")
    assert [e["statusPurpose"] for e in status_entries(both)] == ["revocation", "suspension"]
    assert unsupported_status_types(both) == []


def test_status_types_are_sorted_into_checked_and_not_checked() -> None:
    credential = load("ob3-validator-fixtures/credential-status-revoked.json")
    assert status_entries(credential) == []
    assert unsupported_status_types(credential) == []  # 1EdTechRevocationList is checked (test_verify.py)
    assert [e["type"] for e in revocation_list_entries(credential)] == ["1EdTechRevocationList"]
    mixed = {"credentialStatus": [entry(), {"id": "https://x.example/1", "type": "StatusList2021Entry"}]}
    assert len(status_entries(mixed)) == 1
    assert unsupported_status_types(mixed) == ["StatusList2021Entry"]


def test_no_status() -> None:
    simple = load("ob3-validator-fixtures/simple.json")
    assert status_entries(simple) == []
    assert unsupported_status_types(simple) == []


@pytest.mark.parametrize("status", ["https://example.com/status", [{"id": "x"}], [42]])
def test_malformed_credential_status(status: Any) -> None:
    with pytest.raises(InvalidCredential):
        status_entries({"credentialStatus": status})


def test_gzip_header_checks_are_zlib_not_python_gzip() -> None:
    # the 1EdTech list was made by another GZIP writer (OS byte 0xff); zlib's gzip mode must read it
    raw = base64.urlsafe_b64decode(TESTLIST["credentialSubject"]["encodedList"][1:] + "==")
    assert raw[9] == 0xFF
    assert zlib.decompress(raw, wbits=31) == decode_encoded_list(TESTLIST["credentialSubject"]["encodedList"])
