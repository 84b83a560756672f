"""OB 3.0 JSON Schema checks with plain-language messages, VCDM 1.1 checks in code, and DateTimeZ parsing.

The bundled schemas (Draft 2019-09, see schemas/SOURCES.md) are checked with jsonschema-rs: this runs on every
verification, and the pure-Python jsonschema takes ~4 ms on the spec's complete example where jsonschema-rs takes
~0.02 ms. Formats are asserted: "date-time" needs an offset (RFC 3339 / XSD dateTimeStamp), "date" is YYYY-MM-DD.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from .errors import InvalidCredential

VC_V2 = "https://www.w3.org/ns/credentials/v2"
VC_V1 = "https://www.w3.org/2018/credentials/v1"
_PUBLISHED = "https://purl.imsglobal.org/spec/ob/v3p0/schema/json/"
ACHIEVEMENT_SCHEMA = _PUBLISHED + "ob_v3p0_achievementcredential_schema.json"
ENDORSEMENT_SCHEMA = _PUBLISHED + "ob_v3p0_endorsementcredential_schema.json"
# Published URL -> bundled file. The files' own `$id`s differ (".../ob_v3p0_<name>-jsonschema1.json"), so the
# published URL is the key. Only these are ever checked; other declared schemas are reported, never fetched.
KNOWN_SCHEMAS: Mapping[str, str] = {
    _PUBLISHED + name: name
    for name in (
        "ob_v3p0_achievementcredential_schema.json",
        "ob_v3p0_endorsementcredential_schema.json",
        "ob_v3p0_profile_schema.json",
        "ob_v3p0_getopenbadgecredentialsresponse_schema.json",
        "ob_v3p0_imsx_statusinfo_schema.json",
    )
}
_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_OB_CONTEXT = re.compile(r"^https://purl\.imsglobal\.org/spec/ob/v3p0/context(-3\.\d\.\d)*\.json$", re.ASCII)
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:(Z)|([+-])(\d\d):(\d\d))", re.ASCII)
_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)", re.ASCII)
_DATETIME_HINT = "a date-time with a time zone, e.g. 2025-01-01T00:00:00Z"


# ---------------------------------------------------------------- dates


def parse_datetime_z(value: str) -> datetime:
    """Parse a DateTimeZ (XSD dateTimeStamp: offset required, upper-case T and Z) into an aware datetime.

    `datetime.fromisoformat` alone is too lenient (dates without time, no offset, week dates). Raises
    `InvalidCredential` for anything else, including non-strings, since values come straight from JSON.
    Fractions beyond microseconds are truncated; leap seconds and 24:00:00 are refused.
    """
    m = _DATETIME.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidCredential(f"{_short(value)} is not {_DATETIME_HINT}", code="bad_datetime")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    try:
        if zulu:
            tz = UTC
        else:
            if int(off_h) > 23 or int(off_m) > 59:
                raise ValueError("offset out of range")
            delta = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-delta if sign == "-" else delta)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    except ValueError:
        raise InvalidCredential(f"{_short(value)} is not a real date and time", code="bad_datetime") from None


def _is_datetime_z(value: str) -> bool:
    try:
        parse_datetime_z(value)
    except InvalidCredential:
        return False
    return True


def _is_date(value: str) -> bool:
    m = _DATE.fullmatch(value)
    if m is None:
        return False
    try:
        date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return True


FORMAT_CHECKS: Mapping[str, Callable[[str], bool]] = {"date-time": _is_datetime_z, "date": _is_date}


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "an array"
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- validation (jsonschema-rs)

_Path = tuple[str | int, ...]
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def json_path(path: _Path) -> str:
    """Render a path as JSONPath, e.g. $.credentialSubject.achievement or $['@context'][1]."""
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _SIMPLE_KEY.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append("[" + repr(part) + "]")
    return "".join(out)


@cache
def _validator(url: str) -> jsonschema_rs.Draft201909Validator:
    """The validator for a known schema URL, built once per process; formats asserted with our own checks."""
    return jsonschema_rs.Draft201909Validator(load_schema(url), validate_formats=True, formats=dict(FORMAT_CHECKS))


def load_schema(url: str) -> dict[str, Any]:
    """The bundled schema published at `url` (ValueError if it is not one of `KNOWN_SCHEMAS`)."""
    if url not in KNOWN_SCHEMAS:
        raise ValueError(f"no bundled schema for {url}")
    schema: dict[str, Any] = json.loads((_SCHEMA_DIR / KNOWN_SCHEMAS[url]).read_text("utf-8"))
    return schema


def validate_against(url: str, instance: Any) -> list[str]:
    """Messages ("<JSONPath>: <problem>") for `instance` against the bundled schema published at `url`."""
    validator = _validator(url)
    try:
        if validator.is_valid(instance):
            return []
        errors = list(validator.iter_errors(instance))
    except (ValueError, RecursionError):  # e.g. endorsements nested hundreds deep: refuse rather than crash
        return ["$: the document is nested too deeply to check"]
    messages = [_message(e) for e in errors]
    return list(dict.fromkeys(messages)) or ["$: does not match the schema"]


_TYPE_WORDS = {
    "string": "a string",
    "object": "an object",
    "array": "an array",
    "boolean": "true or false",
    "null": "null",
    "number": "a number",
    "integer": "an integer",
}


def _message(error: jsonschema_rs.ValidationError) -> str:
    """jsonschema-rs's error in the report's words: the JSON path first, then what is wrong there."""
    path = tuple(error.instance_path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        return f"{json_path((*path, str(kind.property)))}: required property is missing"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Type):
        wanted = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in kind.types)
        return f"{json_path(path)}: must be {wanted}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Format):
        hint = _DATETIME_HINT if kind.format == "date-time" else f"a {kind.format}"
        return f"{json_path(path)}: {_short(error.instance)} is not {hint}"
    return f"{json_path(path)}: {error.message}"


# ---------------------------------------------------------------- credentials


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _first_context(credential: dict[str, Any]) -> Any:
    ctx = credential.get("@context")
    return ctx[0] if isinstance(ctx, list) and ctx else ctx


def declared_schemas(credential: dict[str, Any]) -> list[str]:
    """The `id`s of the credential's `credentialSchema` entries (an object or an array), in order."""
    entries = _as_list(credential.get("credentialSchema", []))
    return [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


def unchecked_schemas(credential: dict[str, Any]) -> list[str]:
    """Declared schemas `validate_schema` does not check: not bundled (never fetched), or any schema declared by
    a VCDM 1.1 credential (the bundled files are the VCDM 2.0 versions; the 1.1 ones were never published)."""
    if _first_context(credential) != VC_V2:
        return declared_schemas(credential)
    return [s for s in declared_schemas(credential) if s not in KNOWN_SCHEMAS]


def validate_schema(credential: dict[str, Any]) -> list[str]:
    """Plain-language problems ("<JSONPath>: <problem>"); empty means the credential's shape is valid.

    VCDM 2.0 credentials are checked against the OB 3.0 schema chosen by `type` (EndorsementCredential, else
    AchievementCredential), plus any other bundled schema they declare. VCDM 1.1 credentials (pre-2024 OB 3.0) are
    checked in code. Anything else is reported as an unknown data model.
    """
    if not isinstance(credential, dict):
        raise TypeError("credential must be a dict (parsed JSON object)")
    first = _first_context(credential)
    if first == VC_V1:
        return _v1_errors(credential)
    if first != VC_V2:
        return [f"$['@context'][0]: {_short(first)} is not allowed: must be {VC_V2!r} (or {VC_V1!r} for VCDM 1.1)"]
    types = _as_list(credential.get("type"))
    main = ENDORSEMENT_SCHEMA if "EndorsementCredential" in types else ACHIEVEMENT_SCHEMA
    messages = validate_against(main, credential)
    for url in dict.fromkeys(declared_schemas(credential)):
        if url in KNOWN_SCHEMAS and url != main:
            name = KNOWN_SCHEMAS[url].removesuffix(".json")
            messages.extend(f"{m} (declared schema {name})" for m in validate_against(url, credential))
    return messages


def _v1_errors(c: dict[str, Any]) -> list[str]:
    """Structural checks for VCDM 1.1 OB 3.0 credentials, mirroring the 2.0 schema where the models agree."""
    errs: list[str] = []
    ctx = _as_list(c.get("@context"))
    if not any(isinstance(u, str) and _OB_CONTEXT.match(u) for u in ctx):
        errs.append(
            "$['@context']: must include the Open Badges 3.0 context (https://purl.imsglobal.org/spec/ob/v3p0/…)"
        )
    if "id" in c and not isinstance(c["id"], str):
        errs.append("$.id: must be a string")
    types = _as_list(c.get("type"))
    is_endorsement = "EndorsementCredential" in types
    if "type" not in c:
        errs.append("$.type: required property is missing")
    elif not all(isinstance(t, str) for t in types):
        errs.append("$.type: must be a string or an array of strings")
    else:
        if "VerifiableCredential" not in types:
            errs.append("$.type: must contain 'VerifiableCredential'")
        if not is_endorsement and not {"OpenBadgeCredential", "AchievementCredential"} & set(types):
            errs.append(
                "$.type: must contain one of 'AchievementCredential', 'OpenBadgeCredential', 'EndorsementCredential'"
            )
    issuer = c.get("issuer")
    if issuer is None:
        errs.append("$.issuer: required property is missing")
    elif isinstance(issuer, dict):
        if not isinstance(issuer.get("id"), str):
            errs.append(
                "$.issuer.id: required property is missing" if "id" not in issuer else "$.issuer.id: must be a string"
            )
    elif not isinstance(issuer, str) or not issuer:
        errs.append("$.issuer: must be a URI string or a Profile object")
    for name, required in (("issuanceDate", True), ("expirationDate", False), ("awardedDate", False)):
        if name not in c:
            if required:
                errs.append(f"$.{name}: required property is missing")
        elif not (isinstance(c[name], str) and _is_datetime_z(c[name])):
            errs.append(f"$.{name}: {_short(c[name])} is not {_DATETIME_HINT}")
    if is_endorsement and not isinstance(c.get("name"), str):
        errs.append("$.name: required property is missing" if "name" not in c else "$.name: must be a string")
    errs.extend(_v1_subject_errors(c, is_endorsement))
    return errs


def _v1_subject_errors(c: dict[str, Any], is_endorsement: bool) -> list[str]:
    subject = c.get("credentialSubject")
    if subject is None:
        return ["$.credentialSubject: required property is missing"]
    if not isinstance(subject, dict):
        return ["$.credentialSubject: must be an object"]
    if is_endorsement:
        errs = [] if isinstance(subject.get("id"), str) else ["$.credentialSubject.id: required property is missing"]
        if "EndorsementSubject" not in _as_list(subject.get("type")):
            errs.append("$.credentialSubject.type: must contain 'EndorsementSubject'")
        return errs
    achievement = subject.get("achievement")
    if achievement is None:
        return ["$.credentialSubject.achievement: required property is missing"]
    if not isinstance(achievement, dict):
        return ["$.credentialSubject.achievement: must be an object"]
    errs = []
    where = "$.credentialSubject.achievement"
    for name in ("id", "name", "description"):
        if not isinstance(achievement.get(name), str):
            errs.append(
                f"{where}.{name}: " + ("must be a string" if name in achievement else "required property is missing")
            )
    if "Achievement" not in _as_list(achievement.get("type")):
        errs.append(f"{where}.type: must contain 'Achievement'")
    if not isinstance(achievement.get("criteria"), dict):
        errs.append(
            f"{where}.criteria: "
            + ("must be an object" if "criteria" in achievement else "required property is missing")
        )
    return errs
