"""The shape cache must give the reference's bytes, or defer to it, for every document."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import make_credential
from verifier.canonical import canonicalize, canonicalize_reference
from verifier.errors import CannotCheck, InvalidCredential, VerifierError

_IRI_FIELDS: list[list[str | int]] = [
    ["id"],
    ["issuer", "id"],
    ["issuer", "url"],
    ["credentialSubject", "achievement", "id"],
    ["credentialSubject", "achievement", "image", "id"],
    ["credentialStatus", "statusListCredential"],
]
_TEXT_FIELDS: list[list[str | int]] = [
    ["name"],
    ["issuer", "name"],
    ["credentialSubject", "achievement", "description"],
    ["credentialSubject", "achievement", "criteria", "narrative"],
    ["validFrom"],
    ["credentialSubject", "identifier", 0, "salt"],
    ["credentialStatus", "statusListIndex"],
]
_TRICKY_IRIS = st.sampled_from(
    [
        "https://example.org/a b",
        "relative/path",
        "_:b0",
        "Badge",
        "assertionMethod",
        "xsd:string",
        "ob:Achievement",
        "did:example:123",
        "urn:uuid:7a1c2b0e-5a4f-4a3b-9a0e-1f2e3d4c5b6a",
        "mailto:someone@example.org",
        "https://example.org/ünïcode?q=1#frag",
        "http:relative-looking",
        "",
    ]
)
_ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


def _set(document: dict[str, Any], path: list[str | int], value: Any) -> None:
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _outcome(function: Any, document: dict[str, Any]) -> tuple[str, str]:
    try:
        return ("ok", function(document))
    except VerifierError as error:
        return (type(error).__name__, error.code)


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=10_000),
    iri_edits=st.lists(st.tuples(st.sampled_from(range(len(_IRI_FIELDS))), _TRICKY_IRIS), max_size=2),
    text_edits=st.lists(st.tuples(st.sampled_from(range(len(_TEXT_FIELDS))), _ANY_TEXT), max_size=3),
    extra_key=st.sampled_from([None, "nickname", "ex:custom", "https://example.org/vocab#custom"]),
)
def test_fast_path_is_byte_identical_to_reference(
    n: int, iri_edits: list[tuple[int, str]], text_edits: list[tuple[int, str]], extra_key: str | None
) -> None:
    document = make_credential(n)
    for index, value in iri_edits:
        _set(document, _IRI_FIELDS[index], value)
    for index, value in text_edits:
        _set(document, _TEXT_FIELDS[index], value)
    if extra_key:
        document["credentialSubject"][extra_key] = "added after signing?"
    reference = _outcome(canonicalize_reference, copy.deepcopy(document))
    assert _outcome(canonicalize, copy.deepcopy(document)) == reference
    assert _outcome(canonicalize, copy.deepcopy(document)) == reference  # shape now cached


def test_distinct_credentials_share_a_shape_and_differ_in_output() -> None:
    a, b = make_credential(1, variant=3), make_credential(5, variant=3)
    assert canonicalize(a) == canonicalize_reference(a)
    assert canonicalize(b) == canonicalize_reference(b)
    assert canonicalize(a) != canonicalize(b)


def test_undefined_term_fails_in_safe_mode() -> None:
    document = make_credential(2)
    document["credentialSubject"]["favouriteColour"] = "green"
    with pytest.raises(InvalidCredential, match="favouriteColour") as raised:
        canonicalize(document)
    assert raised.value.code == "undefined_term"


def test_undefined_type_fails() -> None:
    document = make_credential(2)
    document["type"] = ["VerifiableCredential", "OpenBadgeCredential", "MadeUpCredential"]
    with pytest.raises(InvalidCredential, match="MadeUpCredential"):
        canonicalize(document)


def test_unknown_context_is_refused_not_fetched() -> None:
    document = make_credential(3)
    document["@context"] = [*document["@context"], "https://example.com/extra-context.jsonld"]
    with pytest.raises(CannotCheck, match="not one of the pinned contexts"):
        canonicalize(document)


def test_relative_identifier_fails() -> None:
    document = make_credential(4)
    document["id"] = "credentials/4"
    with pytest.raises(InvalidCredential, match="not an absolute IRI"):
        canonicalize(document)


def test_inline_context_goes_to_reference_and_matches() -> None:
    document = make_credential(6)
    document["@context"] = [*document["@context"], {"nickname": "https://example.org/vocab#nickname"}]
    document["credentialSubject"]["nickname"] = "Ada"
    assert canonicalize(document) == canonicalize_reference(document)
    assert "https://example.org/vocab#nickname" in canonicalize(document)


def test_a_repeat_comes_from_the_memo_and_only_an_identical_document_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issuing canonicalizes each document twice (signing, then the self-check): the second is a lookup. A document
    with the very same strings but another shape (here a number) is canonicalized on its own."""
    from verifier import rdfc

    runs: list[int] = []
    real = rdfc.canonicalize

    def counted(quads: Any) -> str:
        runs.append(1)
        return real(quads)

    monkeypatch.setattr(rdfc, "canonicalize", counted)
    one = make_credential(4242)
    one["credentialSubject"]["achievement"]["creditsAvailable"] = 1.5
    first = canonicalize(one)
    again = canonicalize(copy.deepcopy(one))
    assert again == first == canonicalize_reference(one)
    assert len(runs) == 2  # the first call and the reference: the repeat ran no canonicalization

    other = copy.deepcopy(one)
    other["credentialSubject"]["achievement"]["creditsAvailable"] = 2.5  # same strings, another shape
    assert canonicalize(other) == canonicalize_reference(other) != first
