"""RDF Dataset Canonicalization (RDFC-1.0, W3C REC 2024-05-21) over quads of N-Quads term strings.

A quad is a 4-tuple of already-serialized terms: `<iri>`, `_:label`, or a literal (`"…"`, `"…"@lang`,
`"…"^^<dt>`); the graph is "" for the default graph. Working on strings keeps the hashing steps to plain string
joins. Written here rather than taken from pyld because pyld 3.3.0 escapes control characters in literals
wrongly (W3C rdf-canon test060), and that escaping feeds the hashes; the test suite checks this implementation
against pyld's URDNA2015 byte for byte wherever pyld is right.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable

from .errors import CannotCheck

Quad = tuple[str, str, str, str]

# A poison dataset can make Hash N-Degree Quads exponential; RDFC-1.0 §4.1 asks implementations to bound it.
MAX_N_DEGREE_CALLS = 2000

_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}
for _c in [*range(0x20), 0x7F]:
    _ESCAPES.setdefault(_c, f"\\u{_c:04X}")
_NEEDS_ESCAPE = frozenset(chr(c) for c in _ESCAPES)


def escape_literal(value: str) -> str:
    """Canonical N-Quads string escaping (RDF 1.2 N-Triples canonical form, as RDFC-1.0 requires)."""
    if _NEEDS_ESCAPE.isdisjoint(value):
        return value
    return value.translate(_ESCAPES)


def literal(value: str, datatype: str | None = None, language: str | None = None) -> str:
    text = '"' + escape_literal(value) + '"'
    if language:
        return text + "@" + language
    if datatype and datatype != "http://www.w3.org/2001/XMLSchema#string":
        return text + "^^<" + datatype + ">"
    return text


def serialize(quad: Quad) -> str:
    s, p, o, g = quad
    return f"{s} {p} {o} {g} .\n" if g else f"{s} {p} {o} .\n"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Issuer:
    __slots__ = ("issued", "prefix")

    def __init__(self, prefix: str, issued: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self.issued: dict[str, str] = issued if issued is not None else {}

    def issue(self, label: str) -> str:
        new = self.issued.get(label)
        if new is None:
            new = self.issued[label] = f"{self.prefix}{len(self.issued)}"
        return new

    def copy(self) -> _Issuer:
        return _Issuer(self.prefix, dict(self.issued))


class _State:
    def __init__(self, quads: Iterable[Quad]) -> None:
        self.quads = list(dict.fromkeys(quads))  # a dataset is a set: drop duplicates, keep order
        self.bnode_quads: dict[str, list[Quad]] = defaultdict(list)
        for quad in self.quads:
            for term in (quad[0], quad[2], quad[3]):
                if term.startswith("_:"):
                    quads_of = self.bnode_quads[term]
                    if not quads_of or quads_of[-1] is not quad:
                        quads_of.append(quad)
        self.canonical = _Issuer("_:c14n")
        self.first_degree: dict[str, str] = {}
        self.calls = 0

    def hash_first_degree(self, node: str) -> str:
        cached = self.first_degree.get(node)
        if cached is not None:
            return cached
        lines = []
        for s, p, o, g in self.bnode_quads[node]:
            lines.append(
                serialize(
                    (
                        (("_:a" if s == node else "_:z") if s.startswith("_:") else s),
                        p,
                        (("_:a" if o == node else "_:z") if o.startswith("_:") else o),
                        (("_:a" if g == node else "_:z") if g.startswith("_:") else g),
                    )
                )
            )
        lines.sort()
        result = self.first_degree[node] = _sha256("".join(lines))
        return result

    def hash_related(self, related: str, quad: Quad, issuer: _Issuer, position: str) -> str:
        label = self.canonical.issued.get(related) or issuer.issued.get(related)
        if label is None:
            label = self.hash_first_degree(related)
        text = position + (quad[1] if position != "g" else "") + label
        return _sha256(text)

    def hash_n_degree(self, node: str, issuer: _Issuer) -> tuple[str, _Issuer]:
        self.calls += 1
        if self.calls > MAX_N_DEGREE_CALLS:
            raise CannotCheck("RDF dataset too complex to canonicalize (blank-node hashing limit reached)")
        related_by_hash: dict[str, list[str]] = defaultdict(list)
        for quad in self.bnode_quads[node]:
            for term, position in ((quad[0], "s"), (quad[2], "o"), (quad[3], "g")):
                if term.startswith("_:") and term != node:
                    related_by_hash[self.hash_related(term, quad, issuer, position)].append(term)
        data = []
        for related_hash in sorted(related_by_hash):
            data.append(related_hash)
            chosen_path = ""
            chosen_issuer: _Issuer | None = None
            for permutation in itertools.permutations(related_by_hash[related_hash]):
                issuer_copy = issuer.copy()
                path = ""
                recursion: list[str] = []
                skip = False
                for related in permutation:
                    canonical = self.canonical.issued.get(related)
                    if canonical is not None:
                        path += canonical
                    else:
                        if related not in issuer_copy.issued:
                            recursion.append(related)
                        path += issuer_copy.issue(related)
                    if chosen_path and len(path) >= len(chosen_path) and path > chosen_path:
                        skip = True
                        break
                if skip:
                    continue
                for related in recursion:
                    result_hash, result_issuer = self.hash_n_degree(related, issuer_copy)
                    path += issuer_copy.issue(related) + "<" + result_hash + ">"
                    issuer_copy = result_issuer
                    if chosen_path and len(path) >= len(chosen_path) and path > chosen_path:
                        skip = True
                        break
                if skip:
                    continue
                if not chosen_path or path < chosen_path:
                    chosen_path, chosen_issuer = path, issuer_copy
            data.append(chosen_path)
            assert chosen_issuer is not None
            issuer = chosen_issuer
        return _sha256("".join(data)), issuer


def canonicalize(quads: Iterable[Quad]) -> str:
    """The canonical N-Quads document of a dataset (sorted lines, each ending in newline)."""
    state = _State(quads)
    if not state.bnode_quads:
        return "".join(sorted({serialize(q) for q in state.quads}))

    by_hash: dict[str, list[str]] = defaultdict(list)
    for node in state.bnode_quads:
        by_hash[state.hash_first_degree(node)].append(node)
    for first_hash in sorted(by_hash):
        nodes = by_hash[first_hash]
        if len(nodes) == 1:
            state.canonical.issue(nodes[0])
    for first_hash in sorted(by_hash):
        nodes = by_hash[first_hash]
        if len(nodes) == 1:
            continue
        results = []
        for node in nodes:
            if node in state.canonical.issued:
                continue
            temporary = _Issuer("_:b")
            temporary.issue(node)
            results.append(state.hash_n_degree(node, temporary))
        for _, result_issuer in sorted(results, key=lambda r: r[0]):
            for existing in result_issuer.issued:
                state.canonical.issue(existing)

    labels = state.canonical.issued
    lines = {
        serialize(
            (
                labels.get(s, s),
                p,
                labels.get(o, o),
                labels.get(g, g),
            )
        )
        for s, p, o, g in state.quads
    }
    return "".join(sorted(lines))
