"""JSON-LD document -> RDFC-1.0 canonical N-Quads, behind one function: `canonicalize`.

Two ways to reach the RDF dataset, one canonicalization (`rdfc.py`):
- the reference: pyld's JSON-LD 1.1 expansion and toRdf, in "safe mode" (a dropped term or a relative IRI fails);
- the shape cache: a document's *shape* (keys, types, numbers, contexts; every other string replaced by a
  placeholder) is run through the reference once, with placeholders, and the resulting quads become a template.
  Later documents of the same shape fill the template with their own strings. A string lands in the same
  position whatever its value, except in IRI positions, where only plain absolute IRIs whose scheme is no
  context term are accepted; for anything else (blank-node ids, relative IRIs, inline contexts, a placeholder
  that did not come out verbatim) the document goes to the reference. Tests check both give identical bytes.
"""

from __future__ import annotations

import re
import secrets
import threading
import weakref
from typing import Any

from cachetools import LRUCache
from pyld import jsonld
from pyld.context_resolver import ContextResolver

from . import rdfc
from .errors import CannotCheck, InvalidCredential
from .loader import DocumentLoader, UnknownContext, default_loader

_RDF_TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
_ABSOLUTE_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:[^\s]*\Z")
_TYPE_KEYS = frozenset({"type", "@type"})


class _Dropped(Exception):
    pass


def _refuse_dropped(term: object) -> None:
    raise _Dropped(str(term))


# ---------------------------------------------------------------------------------------------- reference


def to_quads_reference(document: dict[str, Any], loader: DocumentLoader) -> list[rdfc.Quad]:
    """pyld expansion + toRdf in safe mode; the quads as N-Quads term strings."""
    processor = jsonld.JsonLdProcessor(on_property_dropped=_refuse_dropped)
    options = {"documentLoader": loader, "base": None, "contextResolver": _resolver(loader)}
    try:
        expanded = processor.expand(document, options)
        _refuse_relative_iris(expanded)
        dataset = processor.to_rdf(expanded, {**options, "contextResolver": _resolver(loader)})
    except _Dropped as dropped:
        raise InvalidCredential(
            f"property {dropped} is not defined by the credential's contexts (it would be silently ignored)",
            code="undefined_term",
        ) from None
    except jsonld.JsonLdError as error:
        raise _explain(error) from None
    quads: list[rdfc.Quad] = []
    for graph, triples in dataset.items():
        g = "" if graph == "@default" else (graph if graph.startswith("_:") else f"<{graph}>")
        for t in triples:
            quads.append((_term(t["subject"]), _term(t["predicate"]), _term(t["object"]), g))
    return quads


def _term(t: dict[str, str]) -> str:
    kind = t["type"]
    if kind == "IRI":
        return "<" + t["value"] + ">"
    if kind == "blank node":
        return t["value"]
    return rdfc.literal(t["value"], t.get("datatype"), t.get("language"))


def _resolver(loader: DocumentLoader) -> Any:
    """A pyld context resolver with a cache private to `loader`, so one loader's contexts never leak into another's."""
    return ContextResolver(_state(loader).resolved_contexts, loader)


class _LoaderState:
    """What canonicalization caches per document loader (contexts differ between loaders)."""

    def __init__(self, loader: DocumentLoader) -> None:
        self.resolved_contexts: LRUCache[Any, Any] = LRUCache(maxsize=256)
        self.shapes = _SharedLru(_SHAPE_CACHE_SIZE)  # shape -> template, or None: not templatable
        # The last few canonical forms, by leaf strings (with their template): the same document is canonicalized
        # twice when it is signed and then verified (issuing self-checks every credential). A pure function's memo.
        self.recent = _SharedLru(_RECENT_SIZE)
        self.terms = _all_keys(loader.documents.values())


_STATES: weakref.WeakKeyDictionary[DocumentLoader, _LoaderState] = weakref.WeakKeyDictionary()


def _state(loader: DocumentLoader) -> _LoaderState:
    state = _STATES.get(loader)
    if state is None:
        state = _STATES[loader] = _LoaderState(loader)
    return state


def _all_keys(node: Any) -> frozenset[str]:
    """Every key that appears anywhere in the contexts: a superset of the terms any of them defines."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple) or type(item).__name__ == "dict_values":
            stack.extend(item)
    return frozenset(found)


def _refuse_relative_iris(node: Any) -> None:
    """Safe mode, part two: toRdf silently drops relative IRIs, so refuse them up front."""
    if isinstance(node, list):
        for item in node:
            _refuse_relative_iris(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "@id" and not _is_absolute_or_blank(value):
            raise InvalidCredential(f"identifier {value!r} is not an absolute IRI", code="relative_iri")
        if key == "@type" and "@value" not in node:
            for t in value if isinstance(value, list) else [value]:
                if not _is_absolute_or_blank(t):
                    raise InvalidCredential(
                        f"type {t!r} is not defined by the credential's contexts", code="undefined_term"
                    )
        if key != "@value":
            _refuse_relative_iris(value)


def _is_absolute_or_blank(value: object) -> bool:
    return isinstance(value, str) and bool(_ABSOLUTE_IRI.match(value))


def _explain(error: Exception) -> Exception:
    """Turn a pyld error chain into our two channels, with the innermost useful message."""
    chain: list[BaseException] = []
    cause: Any = error
    while isinstance(cause, BaseException) and len(chain) < 20:
        if isinstance(cause, UnknownContext):
            return cause
        chain.append(cause)
        details = getattr(cause, "details", None)
        cause = cause.__cause__ or (details.get("cause") if isinstance(details, dict) else None)
    message = str(getattr(chain[-1], "message", None) or chain[-1]).split("\n")[0]
    return InvalidCredential("JSON-LD processing failed: " + message, code="jsonld_error")


# ---------------------------------------------------------------------------------------------- shape cache

_NONCE = secrets.token_hex(8)
_SHAPE_CACHE_SIZE = 512

# A template slot is either a constant term or (leaf index, is_iri, prefix, suffix).
_Slot = str | tuple[int, bool, str, str]
_Template = tuple[tuple[_Slot, _Slot, _Slot, _Slot], ...]


_RECENT_SIZE = 32


class _SharedLru:
    """A bounded LRU map shared by threads (request threads and job workers canonicalize concurrently)."""

    def __init__(self, maxsize: int) -> None:
        self._entries: LRUCache[Any, Any] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, missing: Any = None) -> Any:
        with self._lock:
            return self._entries.get(key, missing)

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._entries[key] = value


def _keeps_value(key: str | None, value: str, terms: frozenset[str]) -> bool:
    """Strings that stay in the shape: types, keyword values, and context terms (a @vocab value may name one)."""
    return key in _TYPE_KEYS or (key is not None and key.startswith("@")) or value in terms


def _shape(document: dict[str, Any], terms: frozenset[str]) -> tuple[Any, list[str]] | None:
    """(hashable shape, leaf strings), or None when the document is outside what the shape cache handles."""
    leaves: list[str] = []

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, str):
            if _keeps_value(key, node, terms):
                return ("=", node)
            leaves.append(node)
            return None
        if isinstance(node, dict):
            return tuple((k, _context_key(v) if k == "@context" else walk(v, k)) for k, v in node.items())
        if isinstance(node, list):
            return ("[", *(walk(v, key) for v in node))
        if isinstance(node, bool) or node is None:
            return ("b", node)
        if isinstance(node, int | float):
            return ("n", type(node).__name__, node)
        raise _Unsupported

    try:
        return walk(document, None), leaves
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _context_key(context: Any) -> tuple[str, ...]:
    """Contexts by URL only: an inline context could define terms the IRI check does not know about."""
    urls = context if isinstance(context, list) else [context]
    if not all(isinstance(url, str) for url in urls):
        raise _Unsupported
    return ("@context", *urls)


def _marker(i: int) -> str:
    return f"urn:x-ob3-shape:{_NONCE}:{i}"


def _compile(
    document: dict[str, Any], n_leaves: int, loader: DocumentLoader, terms: frozenset[str]
) -> _Template | None:
    """Run the reference on the placeholder document; None if the result is not a faithful template."""
    counter = iter(range(n_leaves))

    def substitute(node: Any, key: str | None) -> Any:
        if isinstance(node, str):
            return node if _keeps_value(key, node, terms) else _marker(next(counter))
        if isinstance(node, dict):
            return {k: (v if k == "@context" else substitute(v, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [substitute(v, key) for v in node]
        return node

    try:
        quads = to_quads_reference(substitute(document, None), loader)
    except (InvalidCredential, CannotCheck):
        return None  # the real document will fail the same way through the reference
    prefix = f"urn:x-ob3-shape:{_NONCE}:"
    seen: set[int] = set()
    template = []
    for quad in quads:
        slots: list[_Slot] = []
        for position, term in enumerate(quad):
            if prefix not in term:
                slots.append(term)
                continue
            slot = _slot(term, prefix)
            if slot is None or (position == 2 and quad[1] == _RDF_TYPE):
                return None  # not verbatim, or a string in a type position (its value picks scoped contexts)
            seen.add(slot[0])
            slots.append(slot)
        template.append((slots[0], slots[1], slots[2], slots[3]))
    if len(seen) != n_leaves:
        return None  # some string did not come out verbatim (e.g. @json, @index, language maps)
    return tuple(template)


def _slot(term: str, prefix: str) -> tuple[int, bool, str, str] | None:
    if term.startswith("<" + prefix) and term.endswith(">"):
        index = term[len(prefix) + 1 : -1]
        return (int(index), True, "<", ">") if index.isdigit() else None
    if term.startswith('"' + prefix):
        close = term.find('"', 1)
        index = term[len(prefix) + 1 : close]
        return (int(index), False, '"', term[close:]) if index.isdigit() else None
    return None


def _iri_is_plain(value: str, terms: frozenset[str]) -> bool:
    """An absolute IRI that no JSON-LD context could rewrite: its scheme is not a term, nor is the whole value."""
    if not _ABSOLUTE_IRI.match(value) or value in terms:
        return False
    scheme, rest = value.split(":", 1)
    return scheme != "_" and (scheme not in terms or rest.startswith("//"))


def _fill(template: _Template, leaves: list[str], terms: frozenset[str]) -> list[rdfc.Quad] | None:
    escape = rdfc.escape_literal
    out: list[rdfc.Quad] = []
    for quad in template:
        terms_out = []
        for slot in quad:
            if isinstance(slot, str):
                terms_out.append(slot)
                continue
            index, is_iri, prefix, suffix = slot
            value = leaves[index]
            if is_iri:
                if not _iri_is_plain(value, terms):
                    return None
                terms_out.append(prefix + value + suffix)
            else:
                terms_out.append(prefix + escape(value) + suffix)
        out.append((terms_out[0], terms_out[1], terms_out[2], terms_out[3]))
    return out


def _template_for(
    document: dict[str, Any], state: _LoaderState, loader: DocumentLoader
) -> tuple[_Template, list[str]] | None:
    """The document's shape template and its leaf strings, or None when it must go to the reference."""
    shaped = _shape(document, state.terms)
    if shaped is None:
        return None
    shape, leaves = shaped
    template = state.shapes.get(shape, False)
    if template is False:
        state.shapes.misses += 1
        template = _compile(document, len(leaves), loader, state.terms)
        state.shapes.put(shape, template)
    return None if template is None else (template, leaves)


def canonicalize(document: dict[str, Any], loader: DocumentLoader | None = None) -> str:
    """RDFC-1.0 canonical N-Quads of a JSON-LD document (safe mode: undefined terms fail)."""
    loader = loader or default_loader()
    state = _state(loader)
    found = _template_for(document, state, loader)
    if found is None:
        return rdfc.canonicalize(to_quads_reference(document, loader))
    template, leaves = found
    key = tuple(leaves)
    recent: tuple[_Template, str] | None = state.recent.get(key)
    if recent is not None and recent[0] is template:
        state.shapes.hits += 1
        return recent[1]
    quads = _fill(template, leaves, state.terms)
    if quads is None:
        return rdfc.canonicalize(to_quads_reference(document, loader))
    state.shapes.hits += 1
    canonical = rdfc.canonicalize(quads)
    state.recent.put(key, (template, canonical))
    return canonical


def canonicalize_reference(document: dict[str, Any], loader: DocumentLoader | None = None) -> str:
    """The same, always through pyld: what the shape cache is tested against."""
    return rdfc.canonicalize(to_quads_reference(document, loader or default_loader()))
