"""Open Badges 3.0 baking (OB §"Baking"): a credential carried inside a PNG or SVG badge image.

PNG: one uncompressed `iTXt` chunk with keyword `openbadgecredential`. SVG: an `<openbadges:credential>` element
(namespace https://purl.imsglobal.org/ob/v3p0) right after the root's start tag, holding a VC-JWT in `verify` or
the JSON in CDATA. Extraction handles untrusted images and raises only `InvalidCredential`; baking edits the
issuer's own image in place (bytes outside the edit are kept) and raises `ValueError` when it cannot.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.parsers import expat

from .errors import InvalidCredential

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEYWORD = b"openbadgecredential"
OB2_PNG_KEYWORD = b"openbadges"
OB_NAMESPACE = "https://purl.imsglobal.org/ob/v3p0"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
MAX_TEXT = 16 * 1024 * 1024  # bound for a compressed iTXt: a credential is kilobytes, a zip bomb is not

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)
_TAG_END = re.compile(rb"<(?:[^\"'>]|\"[^\"]*\"|'[^']*')*>")  # '>' may appear inside quoted attribute values
_SVG_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?svg[\s/>]")
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _corrupt(why: str) -> InvalidCredential:
    return InvalidCredential(why, code="baked_image_corrupt")


# ---------------------------------------------------------------- sniffing


def detect_kind(data: bytes) -> Literal["png", "svg", "pdf", "jwt", "json", "unknown"]:
    """Guess what an uploaded/fetched body is from its bytes (not its name or media type, which may lie)."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"%PDF-"):
        return "pdf"
    head = data.removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"<"):
        return "svg" if _SVG_ROOT.search(data) else "unknown"
    if head.startswith(b"{"):
        return "json"
    if _JWT.fullmatch(head.rstrip().decode("ascii", "replace")):
        return "jwt"
    return "unknown"


# ---------------------------------------------------------------- PNG


@dataclass(frozen=True, slots=True)
class _Chunk:
    kind: bytes
    start: int  # offset of the length field
    end: int  # offset just past the CRC
    data: bytes


def _png_chunks(png: bytes) -> list[_Chunk]:
    """All chunks up to IEND, with the signature, lengths and every CRC checked."""
    if not png.startswith(PNG_SIGNATURE):
        raise _corrupt("not a PNG image (bad signature)")
    chunks: list[_Chunk] = []
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(png):
            raise _corrupt("PNG is truncated (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", png, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(png):
            raise _corrupt(f"PNG chunk at byte {pos} runs past the end of the file")
        if not kind.isalpha():
            raise _corrupt(f"PNG chunk at byte {pos} has an invalid type {kind!r}")
        data = png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", png, end - 4)
        if zlib.crc32(kind + data) != crc:
            raise _corrupt(f"PNG chunk {kind.decode('ascii')} at byte {pos} has a bad CRC")
        if not chunks and kind != b"IHDR":
            raise _corrupt("PNG does not start with an IHDR chunk")
        chunks.append(_Chunk(kind, pos, end, data))
        if kind == b"IEND":
            return chunks
        pos = end


def _itxt_keyword(chunk: _Chunk) -> bytes | None:
    return chunk.data.split(b"\0", 1)[0] if chunk.kind == b"iTXt" else None


def extract_from_png(data: bytes) -> str:
    """The text of the first `iTXt` chunk with keyword `openbadgecredential`: credential JSON or a compact JWS."""
    chunks = _png_chunks(data)
    for chunk in chunks:
        if _itxt_keyword(chunk) == PNG_KEYWORD:
            return _itxt_text(chunk.data)
    if any(c.kind in (b"iTXt", b"tEXt") and c.data.split(b"\0", 1)[0] == OB2_PNG_KEYWORD for c in chunks):
        raise InvalidCredential(
            "this PNG carries an Open Badges 2.0 assertion (keyword 'openbadges'), not an OB 3.0 credential",
            code="not_baked",
        )
    raise InvalidCredential("this PNG is not a baked badge: no 'openbadgecredential' iTXt chunk", code="not_baked")


def _itxt_text(body: bytes) -> str:
    """iTXt: keyword NUL flag method language NUL translated-keyword NUL text (PNG 3rd ed. §11.3.3.4)."""
    try:
        _keyword, rest = body.split(b"\0", 1)
        flag, method = rest[0], rest[1]
        _language, _translated, text = rest[2:].split(b"\0", 2)
    except (ValueError, IndexError):
        raise _corrupt("the openbadgecredential iTXt chunk is malformed") from None
    if flag == 1:  # the spec forbids producing this, but a reader can cope
        if method != 0:
            raise _corrupt(f"the openbadgecredential iTXt chunk uses unknown compression method {method}")
        text = _inflate_bounded(text)
    elif flag != 0:
        raise _corrupt(f"the openbadgecredential iTXt chunk has an invalid compression flag {flag}")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise _corrupt("the openbadgecredential iTXt text is not UTF-8") from None


def _inflate_bounded(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT + 1)
    except zlib.error as exc:
        raise _corrupt(f"the compressed openbadgecredential text is corrupt: {exc}") from None
    if len(out) > MAX_TEXT:
        raise _corrupt(f"the compressed openbadgecredential text expands past {MAX_TEXT} bytes; refused")
    if not inflater.eof:
        raise _corrupt("the compressed openbadgecredential text is truncated")
    return out


def bake_png(png: bytes, payload: str) -> bytes:
    """`png` with one uncompressed `openbadgecredential` iTXt chunk right after IHDR, replacing any existing one."""
    _check_payload(payload)
    try:
        chunks = _png_chunks(png)
    except InvalidCredential as exc:
        raise ValueError(f"cannot bake: {exc.detail}") from None
    body = PNG_KEYWORD + b"\0\0\0" + b"\0" + b"\0" + payload.encode("utf-8")  # flag 0, method 0, no language
    new = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    out = [png[: chunks[0].end], new]
    out.extend(png[c.start : c.end] for c in chunks[1:] if _itxt_keyword(c) != PNG_KEYWORD)
    out.append(png[chunks[-1].end :])  # whatever followed IEND stays as it was
    return b"".join(out)


def _check_payload(payload: str) -> None:
    if not isinstance(payload, str):
        raise TypeError("payload must be a str (credential JSON or compact JWS)")
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("payload is not valid Unicode text (it contains a lone surrogate)") from None
    if _JWT.fullmatch(payload):
        return
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError("payload must be a credential JSON object or a compact JWS")


# ---------------------------------------------------------------- SVG


class _Refused(Exception):
    """Raised from expat callbacks to stop parsing a document we will not process."""


@dataclass(slots=True)
class _Element:
    start: int  # offset of '<' of the start tag
    end: int = -1  # offset just past the element
    verify: str | None = None
    text: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _SvgScan:
    root_name: str = ""
    root_start: int = -1
    root_prefixes: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None
    credentials: list[_Element] = field(default_factory=list)


def _scan_svg(data: bytes) -> _SvgScan:
    """Parse with expat, refusing entity declarations (billion laughs, external entities); never loads a DTD."""
    scan = _SvgScan()
    pending: dict[str, str] = {}
    depth = 0
    current: _Element | None = None
    current_depth = 0
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse_entity(*_args: Any) -> None:
        raise _Refused("the SVG declares XML entities, which are refused for safety")

    def refuse_external(*_args: Any) -> int:
        raise _Refused("the SVG references an external entity, which is refused")

    def xml_decl(_version: str | None, encoding: str | None, _standalone: int) -> None:
        scan.encoding = encoding

    def ns_decl(prefix: str | None, uri: str) -> None:
        if depth == 0:
            pending[prefix or ""] = uri

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, current, current_depth
        if depth == 0:
            scan.root_name, scan.root_start = name, parser.CurrentByteIndex
            scan.root_prefixes.update(pending)
        depth += 1
        if current is None and name == OB_NAMESPACE + " credential":
            current, current_depth = _Element(parser.CurrentByteIndex, verify=attrs.get("verify")), depth

    def end(_name: str) -> None:
        nonlocal depth, current
        if current is not None and depth == current_depth:
            current.end = _element_end(data, current.start, parser.CurrentByteIndex)
            scan.credentials.append(current)
            current = None
        depth -= 1

    def text(chars: str) -> None:
        if current is not None:
            current.text.append(chars)

    parser.XmlDeclHandler = xml_decl
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartNamespaceDeclHandler = ns_decl
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise InvalidCredential(str(exc), code="baked_image_refused") from None
    except expat.ExpatError as exc:
        raise _corrupt(f"the SVG is not well-formed XML: {exc}") from None
    return scan


def _element_end(data: bytes, start: int, end_event_at: int) -> int:
    """Offset just past an element, from its start tag and where expat reported its end."""
    start_tag = _TAG_END.match(data, start)
    if start_tag is not None and start_tag.group().endswith(b"/>"):
        return start_tag.end()
    end_tag = _TAG_END.match(data, end_event_at)
    if start_tag is None or end_tag is None or not data.startswith(b"</", end_event_at):
        raise _Refused("the SVG's credential element could not be located")  # expat accepted it: not expected
    return end_tag.end()


def extract_from_svg(data: bytes) -> str:
    """The first `openbadges:credential` element's `verify` attribute (VC-JWT), else its text/CDATA (JSON).

    The text is returned exactly as XML delivers it (line ends normalised), whitespace included.
    """
    scan = _scan_svg(data)
    if not scan.credentials:
        raise InvalidCredential(
            f"this SVG is not a baked badge: no <credential> element in namespace {OB_NAMESPACE}", code="not_baked"
        )
    element = scan.credentials[0]
    if element.verify:
        return element.verify
    content = "".join(element.text)
    if not content.strip():
        raise InvalidCredential("the SVG's openbadges:credential element is empty", code="not_baked")
    return content


def bake_svg(svg: bytes, payload: str) -> bytes:
    """`svg` with one `<openbadges:credential>` directly after the root start tag, replacing existing ones.

    A compact JWS goes in `verify` on an empty element; JSON goes in CDATA (a `]]>` inside it is split across
    two CDATA sections and CR is written as `&#13;`, so extraction returns the payload exactly). The rest of the
    document is left byte for byte as it was. The document must be UTF-8 (or ASCII).
    """
    _check_payload(payload)
    try:
        scan = _scan_svg(svg)
    except InvalidCredential as exc:
        raise ValueError(f"cannot bake: {exc.detail}") from None
    if scan.root_name not in (SVG_NAMESPACE + " svg", "svg"):
        raise ValueError(f"cannot bake: the root element is not <svg> but {scan.root_name!r}")
    if svg.startswith((b"\xff\xfe", b"\xfe\xff")) or (scan.encoding or "utf-8").lower() not in (
        "utf-8",
        "utf8",
        "us-ascii",
        "ascii",
    ):
        raise ValueError("cannot bake: the SVG must be UTF-8 encoded")
    element = _credential_element(payload)
    root_tag = _TAG_END.match(svg, scan.root_start)
    if root_tag is None:  # expat accepted the tag, so this is not expected
        raise ValueError("cannot bake: the root start tag could not be located")
    tag = root_tag.group()
    self_closing = tag.endswith(b"/>")
    close_at = root_tag.end() - (2 if self_closing else 1)
    declared = scan.root_prefixes.get("openbadges")
    if declared not in (None, OB_NAMESPACE):
        raise ValueError(f"cannot bake: the prefix 'openbadges' is already bound to {declared!r}")
    xmlns = b"" if declared else f' xmlns:openbadges="{OB_NAMESPACE}"'.encode()
    if self_closing:
        qname = re.match(rb"<([^\s/>]+)", tag)
        if qname is None:
            raise ValueError("cannot bake: the root element name could not be read")
        opening = svg[scan.root_start : close_at].rstrip() + xmlns + b">" + element + b"</" + qname[1] + b">"
    else:
        opening = svg[scan.root_start : close_at] + xmlns + b">" + element
    out = [svg[: scan.root_start], opening]
    pos = root_tag.end()
    for old in scan.credentials:  # in document order, all after the root start tag
        out.append(svg[pos : old.start])
        pos = old.end
    out.append(svg[pos:])
    return b"".join(out)


def _credential_element(payload: str) -> bytes:
    if _JWT.fullmatch(payload):
        return f'<openbadges:credential verify="{payload}"/>'.encode("ascii")
    bad = _NOT_XML_CHAR.search(payload)
    if bad:
        raise ValueError(f"cannot bake: character U+{ord(bad.group()):04X} cannot appear in XML 1.0")
    body = payload.replace("]]>", "]]]]><![CDATA[>").replace("\r", "]]>&#13;<![CDATA[")
    return f"<openbadges:credential><![CDATA[{body}]]></openbadges:credential>".encode()
