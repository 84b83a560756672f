"""Credentials carried inside a PDF: the embedded file `credential.json` of a certificate (PDF/A-3 attachment).

An issuer that prints a certificate can embed the signed credential in it (our issuer does, with
AFRelationship /Source), so the PDF a learner keeps is itself verifiable: extract, then verify as JSON-LD or
VC-JWT. The PDF is untrusted input: pypdf parses it (decompression is capped by pypdf's own limits), the
EmbeddedFiles name tree is walked with a depth and node limit and cycle detection, and the file is capped at
`MAX_TEXT` bytes. A PDF with no such file, or with two, is refused rather than guessed at.
"""

from __future__ import annotations

import io
from typing import Any

from .errors import InvalidCredential

PDF_MAGIC = b"%PDF-"
ATTACHMENT_NAME = "credential.json"
MAX_TEXT = 16 * 1024 * 1024  # as for baked images: a credential is kilobytes
_MAX_DEPTH = 16
_MAX_NODES = 10_000


def _corrupt(why: str) -> InvalidCredential:
    return InvalidCredential(why, code="pdf_corrupt")


def extract_from_pdf(data: bytes) -> str:
    """The text of the PDF's embedded `credential.json` (credential JSON, or a compact JWS)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if PDF_MAGIC not in data[:1024]:
        raise _corrupt("not a PDF (no %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise InvalidCredential("the PDF is encrypted: its credential cannot be read", code="pdf_encrypted")
        names = _embedded_files(reader.trailer["/Root"])
        found = [spec for names_of_file, spec in names if ATTACHMENT_NAME in names_of_file]
        if not found:
            raise InvalidCredential(
                f"this PDF carries no embedded {ATTACHMENT_NAME}: it is not a verifiable certificate", code="not_baked"
            )
        if len(found) > 1:
            raise _corrupt(f"the PDF embeds {ATTACHMENT_NAME} {len(found)} times; refusing to choose one")
        body = _file_bytes(found[0])
    except InvalidCredential:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise _corrupt(f"the PDF could not be read: {type(exc).__name__}: {exc}") from None
    if len(body) > MAX_TEXT:
        raise _corrupt(f"the embedded {ATTACHMENT_NAME} is larger than {MAX_TEXT} bytes; refused")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _corrupt(f"the embedded {ATTACHMENT_NAME} is not UTF-8 text") from None


def _embedded_files(root: Any) -> list[tuple[set[str], Any]]:
    """(names, file specification) pairs from the catalog's /Names /EmbeddedFiles name tree (ISO 32000 7.9.6)."""
    names_dict = _resolve(root.get("/Names"))
    tree = _resolve(names_dict.get("/EmbeddedFiles")) if isinstance(names_dict, dict) else None
    if not isinstance(tree, dict):
        return []
    out: list[tuple[set[str], Any]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > _MAX_DEPTH or len(seen) > _MAX_NODES:
            raise _corrupt("the PDF's embedded-files tree is too deep or too large")
        pairs = _resolve(node.get("/Names"))
        if isinstance(pairs, list):
            for i in range(0, len(pairs) - 1, 2):
                key, spec = _resolve(pairs[i]), _resolve(pairs[i + 1])
                if isinstance(key, str) and isinstance(spec, dict):
                    out.append(({str(key), *_file_names(spec)}, spec))
        kids = _resolve(node.get("/Kids"))
        for kid in kids if isinstance(kids, list) else []:
            kid = _resolve(kid)
            if isinstance(kid, dict):
                stack.append((kid, depth + 1))
    return out


def _file_names(spec: Any) -> list[str]:
    """The file specification's own names: /UF (Unicode) and /F."""
    return [str(v) for v in (_resolve(spec.get("/UF")), _resolve(spec.get("/F"))) if isinstance(v, str)]


def _file_bytes(spec: Any) -> bytes:
    streams = _resolve(spec.get("/EF"))
    stream = _resolve(streams.get("/UF") or streams.get("/F")) if isinstance(streams, dict) else None
    if stream is None or not hasattr(stream, "get_data"):
        raise _corrupt(f"the PDF's {ATTACHMENT_NAME} entry has no embedded file stream")
    data = stream.get_data()
    if not isinstance(data, bytes):
        raise _corrupt(f"the PDF's {ATTACHMENT_NAME} stream could not be decoded")
    return data


def _resolve(value: Any) -> Any:
    return value.get_object() if hasattr(value, "get_object") else value
