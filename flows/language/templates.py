"""Sandboxed Jinja2 expressions for `with:`, `if:` and `output:`, compiled once.

A string value is one of:

- a whole expression ``"{{ lookup.hit }}"``: evaluated natively, so it may
  yield a dict, list, number or None, not only text;
- text with expressions inside ``"Summarise: {{ inputs.doc }}"``: rendered to a string;
- plain text: a literal, never rendered.

The value an expression yields is data and is never rendered again, so a
prompt containing ``{{ 7*7 }}`` reaches the model as those exact characters.

The environment is Jinja's immutable sandbox with every operation bounded
(`flows.language.sandbox`: nothing folded at load time; limits on integer
size, built length, range length, format widths and work per evaluation), and
at most MAX_EXPRESSION_CHARS of expressions per value. On top of it, attribute or item
access to names starting with ``_``, and `import` / `include` / `extends`, are
refused when the pipeline is loaded. Attribute access on None yields None, so
a skipped node's output can be read without guards (``route.label`` is None
when `route` was skipped); a misspelt key on real data is an error. On a
mapping, ``.name`` reads the key before any method, so an input called
`items` or `values` is that input.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError

from flows.language.fast_eval import compile_node, compile_text
from flows.language.problems import TemplateProblem
from flows.language.sandbox import MAX_EXPRESSION_CHARS, MAX_LENGTH, BoundedSandbox, LimitExceeded, bound_loops, with_budget

__all__ = ["Compiled", "LimitExceeded", "TemplateProblem", "compile_expression", "compile_mapping", "compile_value", "evaluate"]

_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
_FORBIDDEN_NODES = (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)


class _Env(BoundedSandbox):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if obj is None:
            return None
        if isinstance(obj, dict):  # data first: `inputs.items` is the input `items`, not dict.items
            return self.getitem(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if obj is None:
            return None
        return super().getitem(obj, argument)


ENV = _Env(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _check_safe(tree: nodes.Node) -> None:
    for node in tree.find_all(_FORBIDDEN_NODES):
        raise TemplateProblem(f"'{type(node).__name__.lower()}' is not allowed in pipeline templates")
    for attr in tree.find_all((nodes.Getattr,)):
        assert isinstance(attr, nodes.Getattr)
        if attr.attr.startswith("_"):
            raise TemplateProblem(f"access to '{attr.attr}' is not allowed (names starting with '_' are private)")
    for item in tree.find_all((nodes.Getitem,)):
        assert isinstance(item, nodes.Getitem)
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str) and item.arg.value.startswith("_"):
            raise TemplateProblem(f"access to '{item.arg.value}' is not allowed (names starting with '_' are private)")


def _attrs(tree: nodes.Node) -> frozenset[tuple[str, str]]:
    dotted = {(n.node.name, n.attr) for n in tree.find_all((nodes.Getattr,)) if isinstance(n.node, nodes.Name)}
    indexed = {
        (n.node.name, n.arg.value)
        for n in tree.find_all((nodes.Getitem,))
        if isinstance(n.node, nodes.Name) and isinstance(n.arg, nodes.Const) and isinstance(n.arg.value, str)
    }
    return frozenset(dotted | indexed)


_CODE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def _parse(source: str) -> nodes.Template:
    code = sum(len(m.group()) for m in _CODE.finditer(source)) if len(source) > MAX_EXPRESSION_CHARS else 0
    if code > MAX_EXPRESSION_CHARS:
        raise TemplateProblem(f"{code} characters of expressions in one value; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from exc
    _check_safe(tree)
    return tree


def _guarded(fn: Callable[[Any], Compiled]) -> Callable[[Any], Compiled]:
    """Compilation of a huge or deeply nested template ends in a TemplateProblem, not a crash."""

    def compile_(source: Any) -> Compiled:
        try:
            return fn(source)
        except (RecursionError, MemoryError, SyntaxError) as exc:  # Jinja's parser or Python's compiler gave up
            raise TemplateProblem(f"template too large or nested too deeply to compile ({type(exc).__name__})") from exc

    return functools.update_wrapper(compile_, fn)


@dataclass
class Compiled:
    """A compiled value: call `evaluate(context)`; `refs` are the top-level names it reads."""

    evaluate: Callable[[dict[str, Any]], Any]
    refs: frozenset[str] = field(default_factory=frozenset)
    #: (name, attribute) pairs read as `name.attribute` or `name['attribute']`, e.g. ("inputs", "prompt")
    attrs: frozenset[tuple[str, str]] = field(default_factory=frozenset)


@_guarded
def compile_expression(source: str) -> Compiled:
    """Compile a bare expression (``not lookup.hit``) or ``{{ expr }}``."""
    m = _WHOLE.match(source)
    expr = m.group("expr") if m else source
    tree = _parse("{{ " + expr + " }}")
    try:
        fn = ENV.compile_expression(expr, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"expression syntax error: {exc.message}") from exc

    @with_budget
    def run(ctx: dict[str, Any]) -> Any:
        result = fn(**ctx)
        if isinstance(result, Undefined):
            str(result)  # StrictUndefined raises UndefinedError naming what is missing
        return result

    output = tree.body[0]
    fast = compile_node(output.nodes[0], ENV) if isinstance(output, nodes.Output) and len(output.nodes) == 1 else None
    return Compiled(evaluate=fast or run, refs=frozenset(meta.find_undeclared_variables(tree)), attrs=_attrs(tree))


def _render(template: Template, ctx: dict[str, Any]) -> str:
    """The template's text, refused as soon as it passes MAX_LENGTH characters."""
    parts: list[str] = []
    total = 0
    for part in template.generate(**ctx):
        total += len(part)
        if total > MAX_LENGTH:
            raise LimitExceeded(f"the text would be longer than {MAX_LENGTH} characters (the limit)")
        parts.append(part)
    return "".join(parts)


@_guarded
def _compile_template(value: str) -> Compiled:
    """Text with expressions or statements inside, rendered to a string."""
    tree = _parse(value)
    fast = compile_text(tree, ENV)
    refs = frozenset(meta.find_undeclared_variables(tree))
    template = ENV.from_string(bound_loops(tree))
    return Compiled(evaluate=fast or with_budget(lambda ctx: _render(template, ctx)), refs=refs, attrs=_attrs(tree))


def compile_value(value: Any) -> Compiled:
    """Compile a `with:` / `output:` value: nested lists and dicts of strings and literals."""
    if isinstance(value, str):
        if _WHOLE.match(value):
            return compile_expression(value)
        if "{{" in value or "{%" in value:
            return _compile_template(value)
        return Compiled(evaluate=lambda ctx: value)
    if isinstance(value, list):
        parts = [compile_value(v) for v in value]
        return Compiled(
            evaluate=lambda ctx: [p.evaluate(ctx) for p in parts],
            refs=frozenset().union(*(p.refs for p in parts)),
            attrs=frozenset().union(*(p.attrs for p in parts)),
        )
    if isinstance(value, dict):
        return compile_mapping({str(k): compile_value(v) for k, v in value.items()})
    return Compiled(evaluate=lambda ctx: value)


def compile_mapping(items: dict[str, Compiled]) -> Compiled:
    """A mapping of compiled values; a value that fails names its key."""

    parts = [(key, part.evaluate) for key, part in items.items()]

    def run(ctx: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, part in parts:
            try:
                out[key] = part(ctx)
            except TemplateProblem as exc:
                raise TemplateProblem(exc.message, f"{key}.{exc.key}" if exc.key else key) from exc
            except _RUNTIME_ERRORS as exc:
                raise TemplateProblem(_describe(exc), key) from exc
        return out

    return Compiled(
        evaluate=run,
        refs=frozenset().union(*(p.refs for p in items.values())),
        attrs=frozenset().union(*(p.attrs for p in items.values())),
    )


_RUNTIME_ERRORS = (SecurityError, UndefinedError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, UndefinedError):
        return f"{exc.message}"
    return f"{type(exc).__name__}: {exc}"


def evaluate(compiled: Compiled, context: dict[str, Any]) -> Any:
    """Evaluate, translating Jinja's runtime errors into `TemplateProblem`."""
    try:
        return compiled.evaluate(context)
    except TemplateProblem:
        raise
    except _RUNTIME_ERRORS as exc:
        raise TemplateProblem(_describe(exc)) from exc
