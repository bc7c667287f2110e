"""Evaluate the common subset of pipeline expressions without Jinja's runtime.

Jinja builds a new render context (copying every variable) on each call, which
costs more than the Redis GET a cache hit is made of. Most pipeline
expressions are plain look-ups and logic (``inputs.prompt``, ``not lookup.hit``,
``route.label == 'simple' or not small.valid``), so those are compiled from
Jinja's own AST into closures with the same meaning:

- names, ``a.b`` and ``a['b']`` (a dict's key first, None propagates,
  anything that is not plain data goes through the sandbox's getattr);
- constants, lists, tuples, dicts; ``not``, ``and``, ``or``, comparisons,
  ``x if c else y``; and text with such expressions inside.

Anything else (filters, calls, tests, arithmetic, ...) returns None here and
the caller keeps Jinja's sandboxed evaluation. A missing name or key raises
Jinja's `UndefinedError`, as `StrictUndefined` would.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import UndefinedError
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

Fn = Callable[[dict[str, Any]], Any]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "gt": operator.gt,
    "lteq": operator.le,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_MISSING = object()


def _lookup(env: SandboxedEnvironment, obj: Any, key: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            raise UndefinedError(f"'dict object' has no attribute '{key}'")
        return value
    value = env.getattr(obj, key) if isinstance(key, str) else env.getitem(obj, key)
    if isinstance(value, Undefined):
        raise UndefinedError(f"'{type(obj).__name__} object' has no attribute '{key}'")
    return value


def compile_node(node: nodes.Node, env: SandboxedEnvironment) -> Fn | None:
    """A closure evaluating `node`, or None when it is outside the subset."""
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda ctx: value
    if isinstance(node, nodes.Name) and node.ctx == "load":
        name = node.name

        def load(ctx: dict[str, Any]) -> Any:
            try:
                return ctx[name]
            except KeyError:
                raise UndefinedError(f"'{name}' is undefined") from None

        return load
    path = _path(node)
    if path is not None:
        return _walk(path[0], path[1], env)
    if isinstance(node, nodes.Getattr):
        obj, attr = compile_node(node.node, env), node.attr
        if obj is None:
            return None
        getattr_fn: Fn = obj
        return lambda ctx: _lookup(env, getattr_fn(ctx), attr)
    if isinstance(node, nodes.Getitem):
        container, key = compile_node(node.node, env), compile_node(node.arg, env)
        if container is None or key is None:
            return None
        container_fn: Fn = container
        key_fn: Fn = key
        return lambda ctx: _lookup(env, container_fn(ctx), key_fn(ctx))
    if isinstance(node, nodes.Not):
        inner = compile_node(node.node, env)
        return None if inner is None else (lambda ctx: not inner(ctx))
    if isinstance(node, (nodes.And, nodes.Or)):
        left, right = compile_node(node.left, env), compile_node(node.right, env)
        if left is None or right is None:
            return None
        if isinstance(node, nodes.And):
            return lambda ctx: left(ctx) and right(ctx)
        return lambda ctx: left(ctx) or right(ctx)
    if isinstance(node, nodes.Compare):
        return _compare(node, env)
    if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
        test, then, other = (compile_node(n, env) for n in (node.test, node.expr1, node.expr2))
        if test is None or then is None or other is None:
            return None
        return lambda ctx: then(ctx) if test(ctx) else other(ctx)
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = [compile_node(n, env) for n in node.items]
        if any(i is None for i in items):
            return None
        kind = list if isinstance(node, nodes.List) else tuple
        return lambda ctx: kind(i(ctx) for i in items)  # type: ignore[misc]
    if isinstance(node, nodes.Dict):
        pairs = [(compile_node(p.key, env), compile_node(p.value, env)) for p in node.items]
        if any(k is None or v is None for k, v in pairs):
            return None
        return lambda ctx: {k(ctx): v(ctx) for k, v in pairs}  # type: ignore[misc]
    return None


def _path(node: nodes.Node) -> tuple[str, tuple[Any, ...]] | None:
    """``name.a['b'].c`` as ("name", ("a", "b", "c")); None for anything else."""
    keys: list[Any] = []
    while True:
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            keys.append(node.arg.value)
        else:
            break
        node = node.node
    if not keys or not isinstance(node, nodes.Name) or node.ctx != "load":
        return None
    return node.name, tuple(reversed(keys))


def _walk(name: str, keys: tuple[Any, ...], env: SandboxedEnvironment) -> Fn:
    """One closure for a whole path (the common case: ``inputs.prompt``, ``settings.slm.model``),
    with the meaning of the nested look-ups it replaces."""

    def walk(ctx: dict[str, Any]) -> Any:
        try:
            obj = ctx[name]
        except KeyError:
            raise UndefinedError(f"'{name}' is undefined") from None
        for key in keys:
            if type(obj) is dict:
                value = obj.get(key, _MISSING)
                if value is _MISSING:
                    raise UndefinedError(f"'dict object' has no attribute '{key}'")
                obj = value
            else:
                obj = _lookup(env, obj, key)
        return obj

    return walk


def _compare(node: nodes.Compare, env: SandboxedEnvironment) -> Fn | None:
    first = compile_node(node.expr, env)
    ops = [(_COMPARE.get(op.op), compile_node(op.expr, env)) for op in node.ops]
    if first is None or any(f is None or e is None for f, e in ops):
        return None

    def compare(ctx: dict[str, Any]) -> bool:
        left = first(ctx)
        for fn, expr in ops:
            right = expr(ctx)  # type: ignore[misc]
            if not fn(left, right):  # type: ignore[misc]
                return False
            left = right
        return True

    return compare


def _constant(value: Any) -> Fn:
    return lambda ctx: value


def compile_text(template: nodes.Template, env: SandboxedEnvironment) -> Fn | None:
    """Text with expressions inside (``"{{ a }}/{{ b }}"``), rendered like Jinja renders it."""
    if len(template.body) != 1 or not isinstance(template.body[0], nodes.Output):
        return None
    parts: list[Fn] = []
    for node in template.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(_constant(node.data))
            continue
        fn = compile_node(node, env)
        if fn is None:
            return None
        parts.append(fn)
    return lambda ctx: "".join(str(p(ctx)) for p in parts)
