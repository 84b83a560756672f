"""Schema checks: 1EdTech's verdicts on real credentials, messages that name the path, DateTimeZ, and agreement
of jsonschema-rs (used at run time for speed) with the reference Python jsonschema Draft 2019-09 validator."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft201909Validator, FormatChecker, ValidationError, validators  # type: ignore[import-untyped]
from referencing import Registry, Resource

from verifier.errors import InvalidCredential
from verifier.schema import (
    ACHIEVEMENT_SCHEMA,
    ENDORSEMENT_SCHEMA,
    FORMAT_CHECKS,
    KNOWN_SCHEMAS,
    declared_schemas,
    load_schema,
    parse_datetime_z,
    unchecked_schemas,
    validate_against,
    validate_schema,
)

DATA = Path(__file__).resolve().parents[1] / "vectors" / "data"


def load(relative: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((DATA / relative).read_text("utf-8"))
    return value


# Per tests/vectors/data/README.md: these pass the canonical schema (VCDM 2.0) or are valid VCDM 1.1 OB 3.0.
PASSING = [
    "ob3-validator-fixtures/simple.json",
    "ob3-validator-fixtures/simple-did-key-method.json",
    "ob3-validator-fixtures/simple-multiple-proofs.json",
    "ob3-validator-fixtures/simple-context-alias.json",
    "ob3-validator-fixtures/simple-context-version.json",
    "ob3-validator-fixtures/complete.json",
    "ob3-validator-fixtures/endorsement-valid.json",
    "ob3-validator-fixtures/simple-err-proof-value.json",  # bad signature, good shape
    "ob3-validator-fixtures/simple-err-expired.json",  # expired, good shape
    "ob3-validator-fixtures/simple_v1.json",
    "ob3-validator-fixtures/simple-eddsa-2022.json",
    "ob3-validator-fixtures/credential-status-revoked.json",
    "ob3-spec-examples/spec-example-basic-openbadgecredential.unsigned.json",
    "ob3-spec-examples/spec-example-complete-openbadgecredential.unsigned.json",
    "ob3-spec-examples/spec-example-endorsementcredential.unsigned.json",
]

FAILING = {
    "ob3-validator-fixtures/simple-did-web-method.json": ["$.proof: must be an array"],
    "ob3-validator-fixtures/bit-string-list/credential-status-revoked.json": ["$.proof: must be an array"],
    "ob3-validator-fixtures/simple-noproof.json": ["$.credentialSubject.achievement: required property is missing"],
}


@pytest.mark.parametrize("name", PASSING)
def test_credentials_1edtech_accepts_pass(name: str) -> None:
    assert validate_schema(load(name)) == []


@pytest.mark.parametrize(("name", "messages"), FAILING.items())
def test_credentials_that_fail(name: str, messages: list[str]) -> None:
    assert validate_schema(load(name)) == messages


def test_missing_vc_context() -> None:
    [message] = validate_schema(load("ob3-validator-fixtures/simple-err-context.json"))
    assert message.startswith("$['@context'][0]: ")
    assert "https://www.w3.org/ns/credentials/v2" in message


def test_status_list_credential_is_not_an_open_badge() -> None:
    messages = validate_schema(load("ob3-validator-fixtures/bit-string-list/testlist"))
    assert any(m.startswith("$['@context']: ") and "less than 2 items" in m for m in messages), messages
    assert any(m.startswith("$.type: ") for m in messages), messages


# ---------------------------------------------------------------- broken copies name the path

SIMPLE = load("ob3-validator-fixtures/simple.json")
ENDORSEMENT = load("ob3-validator-fixtures/endorsement-valid.json")
V1 = load("ob3-validator-fixtures/simple_v1.json")


def broken(base: dict[str, Any], path: str, value: Any = ...) -> dict[str, Any]:
    """A deep copy with the dotted `path` set to `value`, or deleted when no value is given."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


BROKEN = [
    (broken(SIMPLE, "issuer"), "$.issuer: required property is missing"),
    (broken(SIMPLE, "type", "OpenBadgeCredential"), "$.type: must be an array"),
    (broken(SIMPLE, "type", ["VerifiableCredential"]), "$.type: None of"),
    (broken(SIMPLE, "validFrom", "2010-01-01"), "$.validFrom: '2010-01-01' is not a date-time with a time zone"),
    (broken(SIMPLE, "validFrom", "2010-01-01T00:00:00"), "$.validFrom: '2010-01-01T00:00:00' is not a date-time"),
    (broken(SIMPLE, "validFrom", "2010-02-30T00:00:00Z"), "$.validFrom: '2010-02-30T00:00:00Z' is not a date-time"),
    (broken(SIMPLE, "validUntil", 2030), "$.validUntil: must be a string"),
    (broken(SIMPLE, "issuer.id"), "$.issuer: "),
    (broken(SIMPLE, "issuer.type", ["Organization"]), "$.issuer: "),
    (broken(SIMPLE, "issuer", 42), "$.issuer: 42 is not valid"),
    (broken(SIMPLE, "credentialSubject.achievement.criteria"), "$.credentialSubject.achievement.criteria: required"),
    (broken(SIMPLE, "credentialSubject.achievement.achievementType", "Trophy"), "$.credentialSubject.achievement"),
    (broken(SIMPLE, "@context", [SIMPLE["@context"][0], "https://example.com/ob.json"]), "$['@context'][1]: "),
    (broken(SIMPLE, "proof.0.created", "yesterday"), "$.proof[0].created: 'yesterday' is not a date-time"),
    (broken(ENDORSEMENT, "name"), "$.name: required property is missing"),
    (broken(V1, "issuanceDate"), "$.issuanceDate: required property is missing"),
    (broken(V1, "issuanceDate", "2010-01-01"), "$.issuanceDate: '2010-01-01' is not a date-time"),
    (broken(V1, "issuer.id"), "$.issuer.id: required property is missing"),
    (broken(V1, "issuer"), "$.issuer: required property is missing"),
    (broken(V1, "type", ["VerifiableCredential"]), "$.type: must contain one of"),
    (broken(V1, "credentialSubject.achievement.name"), "$.credentialSubject.achievement.name: required"),
    (broken(V1, "credentialSubject.achievement.type", ["Thing"]), "$.credentialSubject.achievement.type: must"),
    (broken(V1, "@context", ["https://www.w3.org/2018/credentials/v1"]), "$['@context']: must include the Open"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), BROKEN, ids=[e.split(":")[0] + "-" + str(i) for i, (_, e) in enumerate(BROKEN)]
)
def test_broken_copies_fail_naming_the_path(doc: dict[str, Any], expected: str) -> None:
    messages = validate_schema(doc)
    assert any(m.startswith(expected) for m in messages), messages


def test_achievement_type_message_names_the_value() -> None:
    [message] = validate_schema(broken(SIMPLE, "credentialSubject.achievement.achievementType", "Trophy"))
    assert message.startswith('$.credentialSubject.achievement.achievementType: "Trophy" is not valid')


def test_every_problem_is_reported() -> None:
    doc = broken(broken(SIMPLE, "issuer"), "validFrom", "soon")
    assert validate_schema(doc) == [
        "$.issuer: required property is missing",
        "$.validFrom: 'soon' is not a date-time with a time zone, e.g. 2025-01-01T00:00:00Z",
    ]


def nested_endorsements(depth: int) -> dict[str, Any]:
    """simple.json whose issuer is endorsed by an endorsement whose issuer is endorsed by … `depth` times."""
    doc = copy.deepcopy(SIMPLE)
    node = doc["issuer"]
    for _ in range(depth):
        endorsement = copy.deepcopy(ENDORSEMENT)
        node["endorsement"] = [endorsement]
        node = endorsement["issuer"]
    return doc


def test_deep_nesting_is_reported_not_raised() -> None:
    assert validate_schema(nested_endorsements(20)) == []
    deep = json.loads(json.dumps(nested_endorsements(300)))
    assert validate_schema(deep) == []  # jsonschema-rs does not recurse on the Python stack


def test_not_a_dict_is_a_caller_error() -> None:
    with pytest.raises(TypeError):
        validate_schema([SIMPLE])  # type: ignore[arg-type]


# ---------------------------------------------------------------- declared schemas


def test_declared_schemas() -> None:
    spec = load("ob3-spec-examples/spec-example-complete-openbadgecredential.unsigned.json")
    assert declared_schemas(spec) == [ACHIEVEMENT_SCHEMA]
    assert unchecked_schemas(spec) == []
    assert declared_schemas(SIMPLE) == []
    single = {**SIMPLE, "credentialSchema": {"id": "https://example.com/s.json", "type": "JsonSchema"}}
    assert declared_schemas(single) == ["https://example.com/s.json"]
    assert unchecked_schemas(single) == ["https://example.com/s.json"]
    v1 = {**V1, "credentialSchema": [{"id": ACHIEVEMENT_SCHEMA, "type": "1EdTechJsonSchemaValidator2019"}]}
    assert unchecked_schemas(v1) == [ACHIEVEMENT_SCHEMA]  # the 2.0 file says nothing about a 1.1 credential
    assert validate_schema(v1) == []


def test_a_declared_bundled_schema_is_checked_too() -> None:
    doc = {**SIMPLE, "credentialSchema": [{"id": ENDORSEMENT_SCHEMA, "type": "1EdTechJsonSchemaValidator2019"}]}
    messages = validate_schema(doc)
    assert messages
    assert all(m.endswith("(declared schema ob_v3p0_endorsementcredential_schema)") for m in messages)
    assert any(m.startswith("$.type: ") for m in messages)


def test_unknown_schema_url_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="no bundled schema"):
        validate_against("https://example.com/schema.json", {})
    with pytest.raises(ValueError, match="no bundled schema"):
        load_schema("https://example.com/schema.json")


# ---------------------------------------------------------------- DateTimeZ


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2021-09-07T02:09:59+02:00", datetime(2021, 9, 7, 2, 9, 59, tzinfo=timezone(timedelta(hours=2)))),
        ("2021-09-07T02:09:59-05:30", datetime(2021, 9, 7, 2, 9, 59, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
        ("2024-02-29T23:59:59.123456789Z", datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)),
        ("2024-02-29T23:59:59.5+00:00", datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC)),
    ],
)
def test_parse_datetime_z(text: str, expected: datetime) -> None:
    parsed = parse_datetime_z(text)
    assert parsed == expected
    assert parsed.astimezone(UTC) == expected.astimezone(UTC)
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-01T00:00:00",  # no offset
        "2025-01-01",
        "2025-01-01T00:00Z",
        "2025-01-01 00:00:00Z",
        "2025-01-01t00:00:00z",
        "2025-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2016-12-31T23:59:60Z",
        "2025-01-01T00:00:00+24:00",
        "2025-01-01T00:00:00+0100",
        "0000-01-01T00:00:00Z",
        "2025-01-01T00:00:00.Z",
        "٢٠٢٥-01-01T00:00:00Z",  # Arabic-Indic digits: \d must be ASCII
        " 2025-01-01T00:00:00Z",
        "",
    ],
)
def test_parse_datetime_z_refuses(text: str) -> None:
    with pytest.raises(InvalidCredential):
        parse_datetime_z(text)


def test_parse_datetime_z_refuses_non_strings() -> None:
    with pytest.raises(InvalidCredential):
        parse_datetime_z(1735689600)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the bundled schemas


def test_every_bundled_schema_compiles() -> None:
    for url in KNOWN_SCHEMAS:
        assert validate_against(url, []) == ["$: must be an object"]


# ---------------------------------------------------------------- agreement with jsonschema


def _ascii_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not re.search(pattern, instance, re.ASCII):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Oracle = validators.extend(Draft201909Validator, {"pattern": _ascii_pattern})
_FORMATS = FormatChecker(formats=())
for _name, _test in FORMAT_CHECKS.items():
    _FORMATS.checks(_name)(_test)
_REGISTRY: Registry[Any] = Registry().with_resources(
    (url, Resource.from_contents(load_schema(url))) for url in KNOWN_SCHEMAS
)
ORACLES = {
    url: _Oracle({"$ref": url}, registry=_REGISTRY, format_checker=_FORMATS)
    for url in (ACHIEVEMENT_SCHEMA, ENDORSEMENT_SCHEMA)
}
SEEDS = [load(name) for name in PASSING if load(name)["@context"][0] == "https://www.w3.org/ns/credentials/v2"] + [
    load(name) for name in FAILING if name.endswith("did-web-method.json")
]
REPLACEMENTS = st.sampled_from(
    [
        *(None, True, 0, 1.5, "", "x", "ext:Custom", "Badge", "2025-01-01T00:00:00Z", "2025-01-01", "2025-02-30"),
        *([], {}, ["x"], {"id": "x"}, {"id": "did:example:1", "type": ["Profile"]}, ["Achievement"], ["Profile"]),
    ]
)


def _paths(node: Any, here: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield here
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, (*here, key))


def _mutate(doc: Any, data: st.DataObject) -> Any:
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    action = data.draw(st.sampled_from(["delete", "replace", "wrap", "unwrap"]))
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = copy.deepcopy(data.draw(REPLACEMENTS))
    elif action == "wrap":
        parent[key] = [parent[key]]
    elif isinstance(parent[key], list) and parent[key]:
        parent[key] = parent[key][0]
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_jsonschema_rs_agrees_with_jsonschema(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        if isinstance(doc, dict) and doc:
            doc = _mutate(doc, data)
    for url, oracle in ORACLES.items():
        ours = validate_against(url, doc)
        event(f"{url.rsplit('_', 2)[-2]} {'valid' if not ours else 'invalid'}")
        assert (ours == []) == oracle.is_valid(doc), (url, ours, [e.message for e in oracle.iter_errors(doc)])


@pytest.mark.parametrize("name", PASSING + list(FAILING))
def test_fixture_verdicts_agree_with_jsonschema(name: str) -> None:
    doc = load(name)
    for url, oracle in ORACLES.items():
        assert (validate_against(url, doc) == []) == oracle.is_valid(doc)
