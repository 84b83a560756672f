"""The Jinja2 sandbox that certificate templates run in, with a budget.

Templates uploaded for an achievement are written by an administrator, but they are text from outside the code:
the sandbox (`ImmutableSandboxedEnvironment`) stops attribute tricks such as `''.__class__.__mro__`, there is no
loader (so `include`/`import`/`extends` find nothing), and autoescaping keeps learner names and descriptions
text. What the sandbox does not limit is cost: a nested loop, a recursive macro or `'x' * 10**9` would hold a
worker for minutes or exhaust memory. So every render gets a budget of steps (loop iterations, calls, filters
and operators) and a deadline, and strings, numbers and the output are capped before they are built.

Values never become template source: names and descriptions are variables, so `{{ 7*7 }}` inside a name is
printed as written, whatever the template.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import ChainableUndefined, DictLoader, Template, TemplateError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import do_replace
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

MAX_STEPS = 100_000  # loop iterations + calls + filters + operators per render
MAX_SECONDS = 2.0
MAX_LENGTH = 200_000  # characters of a string, or items of a sequence, that a template builds
MAX_OUTPUT = 2_000_000  # characters of rendered HTML
MAX_NUMBER = 10_000  # largest integer given to a call, filter or format (widths, counts, repeats)
_WIDE_FORMAT = re.compile(r"[%:][^a-zA-Z%}]*\d{5}")  # a %-format or str.format width of 10,000 or more


class TemplateRefused(TemplateError):
    """The template broke a rule of the sandbox or went over its budget."""


class _Budget:
    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS

    def spend(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise TemplateRefused(f"the template takes more than {MAX_STEPS} steps (loop iterations and calls)")
        if time.monotonic() > self.deadline:
            raise TemplateRefused(f"the template took longer than {MAX_SECONDS:g} s to render")


_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("certificate_template_budget")


def _spend() -> None:
    budget = _budget.get(None)
    if budget is None:
        raise TemplateRefused("sandboxed templates render through render_sandboxed() only")
    budget.spend()


def _sized(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict):
        _length(len(value))
    if isinstance(value, int) and value.bit_length() > 256:
        raise TemplateRefused("the template built a number that is too large")
    return value


def _length(n: int) -> None:
    if n > MAX_LENGTH:
        raise TemplateRefused(f"the template built a value longer than {MAX_LENGTH:,}")


def _small_numbers(values: Iterable[Any]) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            raise TemplateRefused(f"numbers given to filters, functions and formats are limited to {MAX_NUMBER:,}")


def _narrow_format(text: Any) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateRefused(f"format widths above {MAX_NUMBER:,} are refused")


def _replaced_length(text: str, old: str, new: str) -> None:
    _length(len(text) + text.count(old) * max(0, len(new) - len(old)))


def _bounded_iter(value: Any) -> Iterator[Any]:
    for item in value:
        _spend()
        yield item


def _concat(parts: list[Any]) -> Any:
    """`a ~ b ~ c` as Jinja does it (escaping when any part is markup), refusing a result over the cap."""
    markup = any(hasattr(part, "__html__") for part in parts)
    pieces = [escape(part) if markup else str(part) for part in parts]
    _length(sum(len(piece) for piece in pieces))
    return Markup("").join(pieces) if markup else "".join(pieces)


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        _small_numbers([*args, *kwargs.values()])
        if function is do_replace and len(args) >= 4:
            _replaced_length(str(args[1]), str(args[2]), str(args[3]))
        if getattr(function, "__name__", "") == "do_format" and args:
            _narrow_format(args[0])
        return _sized(function(*args, **kwargs))

    guarded.__dict__.update(getattr(function, "__dict__", {}))  # keeps Jinja's pass_context marker
    return guarded


class _AddGuards(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 (NodeTransformer's naming)
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_bounded_iter", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes), "_concat", [], [], None, None, lineno=node.lineno)


class CertificateSandbox(ImmutableSandboxedEnvironment):
    """Autoescaping, immutable, no loader, and every loop, call, filter and operator counted and capped."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/", "-"})

    def __init__(self) -> None:
        super().__init__(
            loader=DictLoader({}), autoescape=True, undefined=ChainableUndefined, auto_reload=False, cache_size=0
        )  # the empty loader makes include/import/extends fail with TemplateNotFound
        for name in ("lipsum", "namespace"):  # lipsum(n) builds n paragraphs; namespace carries state out of loops
            self.globals.pop(name, None)
        self.filters = {name: _guard_filter(f) for name, f in self.filters.items()}
        self.filters["_bounded_iter"] = _bounded_iter
        self.filters["_concat"] = _concat

    def compile_template(self, source: str) -> Template:
        """Parse, give every loop and `~` its guard, compile. Raises `TemplateError` (syntax, security)."""
        tree = _AddGuards().visit(self.parse(source))
        return self.from_string(tree)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _spend()
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateRefused("exponents above 64 are refused")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _length(len(seq) * max(times, 0))
        if operator == "%" and isinstance(left, str):
            _narrow_format(left)
            _small_numbers(right if isinstance(right, tuple) else [right])
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's)
        _spend()
        _small_numbers([*args, *kwargs.values()])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") == "replace" and len(args) >= 2:
            _replaced_length(owner, str(args[0]), str(args[1]))
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if getattr(value, "__name__", "") in ("format", "format_map"):
            _narrow_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """Fail the render at once rather than print an empty string (the default with a lenient Undefined)."""
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")


def render_sandboxed(template: Template, context: Mapping[str, Any]) -> str:
    """Render a template from `CertificateSandbox.compile_template` within the budget and the output cap."""
    token = _budget.set(_Budget())
    try:
        size = 0
        parts: list[str] = []
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateRefused(f"the template's output is longer than {MAX_OUTPUT:,} characters")
            parts.append(chunk)
        return "".join(parts)
    finally:
        _budget.reset(token)
