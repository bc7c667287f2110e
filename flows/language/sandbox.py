"""The Jinja environment pipeline templates run in: Jinja's immutable sandbox, with bounded work.

Jinja's sandbox stops templates from reaching Python internals, not from
doing unbounded work. Left alone, ``{{ [1] * 10**9 }}`` takes 4 GB while a
pipeline is *validated* (Jinja folds constant expressions at compile time),
``{{ 10 ** 1000000000 }}`` hangs it, and nested ``range(100000)`` loops reach
3 GB. Here:

- nothing is folded at compile time: the optimizer is off, every arithmetic
  operator is intercepted (`call_binop`), and output is never pre-computed;
  so loading a pipeline never evaluates its expressions;
- at evaluation, each operation is checked before it runs: an integer result
  of more than `MAX_INT_BITS` bits, a string or list (counting nested items)
  longer than `MAX_LENGTH`, a `range` of more than `MAX_RANGE` items and a
  format width beyond `MAX_LENGTH` are refused;
- each evaluation has a work budget (`MAX_WORK` units: the characters and
  items it builds, plus a fixed cost per loop iteration, operator, filter and
  call), so nested loops and recursive macros end with an error within about
  a second instead of hanging. Reading a large value (a 1 MB document's
  `length`) costs nothing; building one costs its size.

A refused operation raises `LimitExceeded` (a `TemplateProblem`): the run
fails with a one-line error naming the node, the field and the limit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flows.language.problems import TemplateProblem

#: longest string, or list counting its nested items, an operation may produce (a 10 MB document passes)
MAX_LENGTH = 10_000_000
#: largest integer an operation may produce, in bits (10**3000 has ~10,000)
MAX_INT_BITS = 10_000
#: most items of one range()
MAX_RANGE = 10_000
#: work units per evaluation of one value: the characters and items it builds, plus ITERATION_COST per loop
#: iteration or operator and CALL_COST per call (~1 s of Python at most)
MAX_WORK = 50_000_000

#: characters of expressions and statements (inside {{ }} and {% %}) in one value; the text around them is free
MAX_EXPRESSION_CHARS = 10_000

LOOP_FILTER = "frugal_bounded_loop"
#: work units of one loop iteration, operator or filter
ITERATION_COST = 50
#: work units of one call (a macro call costs about ten loop iterations)
CALL_COST = 2000


class LimitExceeded(TemplateProblem):
    """An expression would pass one of the evaluation limits."""


_budget: ContextVar[list[int] | None] = ContextVar("frugal_template_budget", default=None)


def with_budget(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """`fn` run with a fresh work budget (MAX_WORK), and its result's size checked."""

    def run(ctx: dict[str, Any]) -> Any:
        token = _budget.set([MAX_WORK])
        try:
            result = fn(ctx)
        except RecursionError as exc:
            raise LimitExceeded("recursion too deep (a macro that calls itself without end?)") from exc
        finally:
            _budget.reset(token)
        check_size(result, "the value")
        return result

    return run


def charge(units: int = 1) -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget[0] -= units
    if budget[0] < 0:
        raise LimitExceeded(f"the expression does more than {MAX_WORK} units of work (the limit); loops or recursion too large")


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _children(item: Any) -> Iterable[Any]:
    return (*item.keys(), *item.values()) if isinstance(item, dict) else item


def size(value: Any, limit: int = MAX_LENGTH) -> int:
    """Characters of a string, or items of a list/tuple/dict counting nested ones (at most `limit` + 1).

    Each distinct container is measured once, so a value that shares its parts (`[x, x]` nested
    forty deep: 2**40 items once expanded) is measured in forty steps, not 2**40."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return 1
    measured: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, children_done = stack.pop()
        if children_done:
            total = len(item)
            for child in _children(item):
                if isinstance(child, (str, bytes)):
                    total += len(child)
                elif isinstance(child, _CONTAINERS):
                    total += measured.get(id(child), 0)
                if total > limit:
                    break
            measured[id(item)] = min(total, limit + 1)
            continue
        if id(item) in measured:
            continue
        measured[id(item)] = 0  # in progress: a container met again inside itself counts nothing more
        stack.append((item, True))
        stack.extend((child, False) for child in _children(item) if isinstance(child, _CONTAINERS) and id(child) not in measured)
    return measured[id(value)]


def check_size(value: Any, what: str) -> int:
    n = size(value)
    if n > MAX_LENGTH:
        raise LimitExceeded(f"{what} would be longer than {MAX_LENGTH} characters or items (the limit)")
    return n


def _check_int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(f"a number of more than {MAX_INT_BITS} bits (the limit)")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")


def check_format(fmt: str) -> None:
    """Refuse `%`/`format` widths and precisions beyond MAX_LENGTH (``'%999999999s'``) and `*` widths."""
    widths = [w for m in _PERCENT_SPEC.finditer(fmt) for w in m.groups() if w]
    widths += re.findall(r"\d+", " ".join(_BRACE_SPEC.findall(fmt)))
    if _NESTED_SPEC.search(fmt):
        widths.append("*")
    for width in widths:
        if width == "*" or int(width) > MAX_LENGTH:
            raise LimitExceeded(f"a format width or precision above {MAX_LENGTH} (the limit), or one given by an argument")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would pass a limit, before it runs."""
    if operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _check_int_bits(left.bit_length() * right)
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            _check_int_bits(left.bit_length() + right.bit_length())
        elif isinstance(right, int) and not isinstance(left, (int, float)):
            _check_repeat(left, right)
        elif isinstance(left, int) and not isinstance(right, (int, float)):
            _check_repeat(right, left)
    elif operator == "+":
        if not isinstance(left, (int, float)) and not isinstance(right, (int, float)):
            n = size(left) + size(right)
            if n > MAX_LENGTH:
                raise LimitExceeded(f"joining two values longer than {MAX_LENGTH} characters or items (the limit)")
            charge(n)
    elif operator == "%" and isinstance(left, str):
        check_format(left)
        check_size(right, "a %-format argument")


def _check_repeat(sequence: Any, times: int) -> None:
    if times > 0 and size(sequence) * times > MAX_LENGTH:
        raise LimitExceeded(f"repeating a value to more than {MAX_LENGTH} characters or items (the limit)")
    charge(size(sequence) * max(times, 0))


def bounded_range(*args: int) -> range:
    """range() of at most MAX_RANGE items."""
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise LimitExceeded(f"range() of {len(found)} items; the limit is {MAX_RANGE}")
    return found


def bounded_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` loop iterates through this: each iteration costs one unit of the budget."""
    for item in iterable:
        charge(ITERATION_COST)
        yield item


def bounded_join(parts: Iterable[Any]) -> str:
    """The `~` operator: text joined, no longer than MAX_LENGTH."""
    texts = []
    total = 0
    for part in parts:
        check_size(part, "a value joined with ~")
        text = str(part)
        total += len(text)
        if total > MAX_LENGTH:
            raise LimitExceeded(f"text joined with ~ longer than {MAX_LENGTH} characters (the limit)")
        texts.append(text)
    charge(total)
    return "".join(texts)


def _check_args(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_LENGTH:
            raise LimitExceeded(f"{name}() given {arg}, above the limit of {MAX_LENGTH}")
        charge(check_size(arg, f"an argument of {name}()"))


def _pre_check(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Filters and methods whose result can be far larger than what they are given."""
    if name == "replace" and isinstance(value, str) and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], str(args[1])
        grows = max(len(new) - len(old), 0) * (value.count(old) if old else len(value) + 1)
        if len(value) + grows > MAX_LENGTH:
            raise LimitExceeded(f"replace() would make a text longer than {MAX_LENGTH} characters (the limit)")
    elif name == "indent" and isinstance(value, str):
        width = args[0] if args else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else int(width) if isinstance(width, int) else 4
        if len(value) + pad * (value.count("\n") + 1) > MAX_LENGTH:
            raise LimitExceeded(f"indent() would make a text longer than {MAX_LENGTH} characters (the limit)")
    elif name in ("join", "sum") and not isinstance(value, str):
        items = list(value) if not isinstance(value, (list, tuple)) else value
        sep = args[0] if args and isinstance(args[0], str) else ""
        if size(items) + len(sep) * len(items) > MAX_LENGTH:
            raise LimitExceeded(f"{name}() would make a value longer than {MAX_LENGTH} characters or items (the limit)")
    elif name in ("format", "format_map") and isinstance(value, str):
        check_format(value)


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    passes = getattr(fn, "jinja_pass_arg", None)

    @functools.wraps(fn)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        given = args[1:] if passes is not None else args  # a context/environment first, then the value
        value, rest = (given[0], given[1:]) if given else (None, ())
        charge(ITERATION_COST)
        check_size(value, f"the value given to {name}")
        _check_args(name, rest, kwargs)
        _pre_check(name, value, rest, kwargs)
        result = fn(*args, **kwargs)
        if isinstance(result, Iterator):  # map, select, ...: materialised, so the size is known
            result = list(bounded_loop(result))
        charge(check_size(result, f"the result of {name}"))
        return result

    return bounded


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator without compile-time evaluation of output, and `~` through `bounded_join`."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with every operator, call, loop and filter bounded (see the module doc)."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, finalize=self._finalize, **options)
        self.globals.pop("lipsum", None)  # lipsum(n=10**9) is unbounded text
        self.globals["range"] = bounded_range
        self.filters = {name: _bounded_filter(name, fn) for name, fn in self.filters.items()}
        self.filters[LOOP_FILTER] = bounded_loop
        self.bounded_join = bounded_join

    @staticmethod
    def _finalize(value: Any) -> Any:
        check_size(value, "a value written into text")
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str):
            check_format(owner)
        return super().wrap_str_format(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        charge(ITERATION_COST)
        check_binop(operator, left, right)
        return self.binop_table[operator](left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        charge(CALL_COST)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "a function")
        if isinstance(owner, (str, bytes, list, tuple, dict)):
            _check_args(name, args, kwargs)
            _pre_check(name, owner, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(owner, (str, bytes, list, tuple, dict)) or result is not None and isinstance(result, (str, list)):
            charge(check_size(result, f"the result of {name}()"))
        return result


def bound_loops(tree: nodes.Template) -> nodes.Template:
    """Route every `{% for %}` loop's iterable through `bounded_loop`, so each iteration is charged."""
    for loop in tree.find_all(nodes.For):
        assert isinstance(loop, nodes.For)
        loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
    return tree
