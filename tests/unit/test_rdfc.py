"""Our RDFC-1.0 against pyld's URDNA2015 (same algorithm) and against the escaping pyld gets wrong."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyld import jsonld

from verifier import rdfc
from verifier.errors import CannotCheck


def _pyld_canonical(nquads: str) -> str:
    result: str = jsonld.normalize(
        nquads,
        {"algorithm": "URDNA2015", "inputFormat": "application/n-quads", "format": "application/n-quads"},
    )
    return result


def _parse(nquads: str) -> list[rdfc.Quad]:
    quads = []
    for line in nquads.splitlines():
        parts = line.removesuffix(" .").split(" ")
        quads.append((parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return quads


# Blank-node-heavy graphs: cycles, symmetric structures and named graphs exercise Hash N-Degree Quads.
_nodes = st.sampled_from(["_:a", "_:b", "_:c", "_:d", "_:e", "<http://ex.org/x>", "<http://ex.org/y>"])
_preds = st.sampled_from(["<http://ex.org/p>", "<http://ex.org/q>"])
_objects = st.one_of(_nodes, st.sampled_from(['"v"', '"w"@en', '"1"^^<http://www.w3.org/2001/XMLSchema#integer>']))
_graphs = st.sampled_from(["", "", "", "_:g", "<http://ex.org/g>"])


def _no_repeated_blank_node(quad: rdfc.Quad) -> bool:
    """pyld lists a quad twice for a blank node that occurs twice in it; RDFC-1.0 maps a node to the *set* of its
    quads (as jsonld.js's rdf-canonize and others do), so such quads are compared separately below."""
    blanks = [t for t in (quad[0], quad[2], quad[3]) if t.startswith("_:")]
    return len(blanks) == len(set(blanks))


_quads = st.lists(st.tuples(_nodes, _preds, _objects, _graphs).filter(_no_repeated_blank_node), min_size=1, max_size=14)


@settings(max_examples=300, deadline=None)
@given(_quads)
def test_same_output_as_pyld_on_random_blank_node_graphs(quads: list[rdfc.Quad]) -> None:
    text = "".join(rdfc.serialize(q) for q in quads)
    assert rdfc.canonicalize(quads) == _pyld_canonical(text)


def test_symmetric_cycle_needs_n_degree_hashing() -> None:
    text = (
        "_:a <http://ex.org/p> _:b .\n_:b <http://ex.org/p> _:c .\n_:c <http://ex.org/p> _:a .\n"
        "_:d <http://ex.org/p> _:e .\n_:e <http://ex.org/p> _:d .\n"
    )
    assert rdfc.canonicalize(_parse(text)) == _pyld_canonical(text)
    assert "_:c14n4" in rdfc.canonicalize(_parse(text))


def test_control_characters_are_escaped_as_rdfc_requires() -> None:
    """W3C rdf-canon test060: \\b \\t \\n \\f \\r \\" \\\\ as ECHAR, other C0 and DEL as uppercase UCHAR."""
    value = 'a\bb\tc\nd\fe\rf"g\\h\x01i\x7fj\x1fk é'
    assert rdfc.literal(value) == '"a\\bb\\tc\\nd\\fe\\rf\\"g\\\\h\\u0001i\\u007Fj\\u001Fk é"'
    quads = [("<http://ex.org/s>", "<http://ex.org/p>", rdfc.literal(value), "")]
    assert rdfc.canonicalize(quads) == f"<http://ex.org/s> <http://ex.org/p> {rdfc.literal(value)} .\n"


def test_literal_forms() -> None:
    assert rdfc.literal("x", "http://www.w3.org/2001/XMLSchema#string") == '"x"'
    assert rdfc.literal("5", "http://www.w3.org/2001/XMLSchema#integer") == (
        '"5"^^<http://www.w3.org/2001/XMLSchema#integer>'
    )
    assert rdfc.literal("hi", None, "en-GB") == '"hi"@en-GB'


def test_poison_dataset_is_refused_not_hung() -> None:
    """A clique of indistinguishable blank nodes makes N-degree hashing explode; the budget stops it."""
    nodes = [f"_:n{i}" for i in range(9)]
    quads = [(a, "<http://ex.org/p>", b, "") for a in nodes for b in nodes if a != b]
    with pytest.raises(CannotCheck, match="too complex"):
        rdfc.canonicalize(quads)


def test_duplicates_collapse() -> None:
    quad = ("<http://ex.org/s>", "<http://ex.org/p>", '"o"', "")
    assert rdfc.canonicalize([quad, quad]) == '<http://ex.org/s> <http://ex.org/p> "o" .\n'


def test_a_quad_counts_once_for_a_blank_node_that_occurs_twice_in_it() -> None:
    """Set semantics: `_:a p _:a` contributes one line to _:a's first-degree hash."""
    quads = [("_:a", "<http://ex.org/p>", "_:a", ""), ("_:a", "<http://ex.org/p>", "_:a", "_:g")]
    state = rdfc._State(quads)
    assert len(state.bnode_quads["_:a"]) == 2
    first = rdfc._sha256("_:a <http://ex.org/p> _:a .\n_:a <http://ex.org/p> _:a _:z .\n")
    assert state.hash_first_degree("_:a") == first
    assert rdfc.canonicalize(quads) == (
        "_:c14n0 <http://ex.org/p> _:c14n0 .\n_:c14n0 <http://ex.org/p> _:c14n0 _:c14n1 .\n"
    )
