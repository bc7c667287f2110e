"""Turn a `PipelineSpec` into a runnable `Pipeline`: steps resolved, templates
compiled once, references checked, dependencies inferred, cycles refused.

Every problem becomes a `SpecError` naming the file, line, node and field and
saying how to fix it; all of a file's problems are raised together.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import SchemaError

from flows.language import registry
from flows.language.loader import Path_, read_spec
from flows.language.registry import Step
from flows.language.spec import CONSTRAINT_TYPES, PY_TYPES, RESERVED_NAMES, InputSpec, NodeSpec, PipelineSpec, annotation
from flows.language.templates import Compiled, TemplateProblem, compile_expression, compile_mapping, compile_value
from tasks.core.errors import InputError, SpecError, SpecErrors

CONTEXT_NAMES = frozenset({"inputs", "settings", "pipeline"})
ITEM_NAMES = frozenset({"item", "index"})


@dataclass
class Node:
    """A node ready to run."""

    id: str
    spec: NodeSpec
    step: Step
    args: Compiled
    condition: Compiled | None
    condition_source: str | None
    deps: tuple[str, ...]
    for_each: Compiled | None = None
    #: the pipeline file the node comes from ("<pipeline>" when compiled from memory)
    file: str = ""

    @cached_property
    def skip_reason(self) -> str:
        """What a skipped run of this node reports."""
        return f"if: {self.condition_source} was false"


@dataclass
class Pipeline:
    """A validated, compiled pipeline."""

    spec: PipelineSpec
    file: str
    nodes: dict[str, Node]
    levels: list[list[str]]
    output: Compiled
    inputs_model: type[BaseModel]
    edges: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def identity(self) -> dict[str, str]:
        """What templates read as ``pipeline``: its name and version (shared by its runs, read-only)."""
        return {"name": self.spec.name, "version": self.spec.version}

    @cached_property
    def batched(self) -> bool:
        """True when a node has for_each: such runs keep spool files until they end."""
        return any(n.for_each is not None for n in self.nodes.values())

    @property
    def order(self) -> list[str]:
        return [n for level in self.levels for n in level]

    def validate_inputs(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Check a run's inputs against the declared ones; apply defaults."""
        try:
            # the validated values themselves: validation already made new containers (model_dump costs 3x more)
            return dict(self.inputs_model.__pydantic_validator__.validate_python(given or {}).__dict__)
        except ValidationError as exc:
            problems = []
            reported: set[str] = set()
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "?"
                if name in reported:  # a `number` is float | int: one error per member of the union
                    continue
                reported.add(name)
                if err["type"] == "missing":
                    problems.append(f"missing required input '{name}'")
                elif err["type"] == "extra_forbidden":
                    problems.append(f"unknown input '{name}' (inputs: {', '.join(self.spec.inputs) or 'none'})")
                elif err["type"] in _CONSTRAINT_ERRORS:
                    problems.append(f"input '{name}': {err['msg']} (got {_shown(err.get('input'))})")
                else:
                    want = self.spec.inputs[name].type if name in self.spec.inputs else "?"
                    problems.append(f"input '{name}' must be {want}: {err['msg']} (got {_shown(err.get('input'))})")
            raise InputError(f"pipeline '{self.name}': " + "; ".join(problems)) from exc


def _input_field(inp: InputSpec) -> tuple[Any, Any]:
    default = ... if inp.required else inp.default
    kind = annotation(inp, PY_TYPES)
    kind = kind if default is not None else kind | None  # `default: null`: optional
    return kind, Field(default, description=inp.description or None)


def _inputs_model(spec: PipelineSpec) -> type[BaseModel]:
    fields = {name: _input_field(inp) for name, inp in spec.inputs.items()}
    return create_model(f"{spec.name}_inputs", __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload]


#: pydantic error types that mean "the right type, but outside the declared constraints"
_CONSTRAINT_ERRORS = frozenset(
    {
        "greater_than_equal",
        "less_than_equal",
        "string_too_short",
        "string_too_long",
        "too_short",
        "too_long",
        "string_pattern_mismatch",
        "literal_error",
    }
)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    listed = f"use one of: {', '.join(known)}"
    return f"did you mean '{close[0]}'? {listed}" if close else listed


def _levels(nodes: dict[str, tuple[str, ...]]) -> tuple[list[list[str]], list[str]]:
    """Kahn's algorithm by levels; also returns the nodes left in a cycle."""
    remaining = {n: set(d) for n, d in nodes.items()}
    levels: list[list[str]] = []
    while remaining:
        ready = sorted(n for n, d in remaining.items() if not d)
        if not ready:
            return levels, sorted(remaining)
        levels.append(ready)
        for n in ready:
            del remaining[n]
        for d in remaining.values():
            d.difference_update(ready)
    return levels, []


class _Compiler:
    def __init__(self, spec: PipelineSpec, file: str, lines: dict[Path_, int]) -> None:
        self.spec, self.file, self.lines = spec, file, lines
        self.errors: list[SpecError] = []

    def error(
        self, message: str, *, node: str | None = None, field: str | None = None, loc: Path_ = (), hint: str | None = None
    ) -> None:
        line = None
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                line = self.lines[loc[:end]]
                break
        self.errors.append(SpecError(message, file=self.file, node=node, field=field, line=line, hint=hint))

    def check_refs(self, compiled: Compiled, *, node: str | None, field: str, loc: Path_) -> None:
        known = set(self.spec.nodes)
        allowed = CONTEXT_NAMES | ITEM_NAMES if node is not None and self.spec.nodes[node].for_each is not None else CONTEXT_NAMES
        if field == "for_each":
            allowed = CONTEXT_NAMES
        for ref in sorted(compiled.refs - allowed):
            if ref in ITEM_NAMES:
                self.error(
                    f"'{ref}' is only defined in a node with for_each",
                    node=node,
                    field=field,
                    loc=loc,
                    hint="add for_each: to this node, or read the item elsewhere",
                )
                continue
            if ref not in known:
                self.error(
                    f"reference to unknown node or input '{ref}'",
                    node=node,
                    field=field,
                    loc=loc,
                    hint=f"inputs are read as inputs.NAME; nodes are: {', '.join(sorted(known))}",
                )
        for name, attr in sorted(compiled.attrs):
            if name == "inputs" and attr not in self.spec.inputs:
                self.error(
                    f"reference to unknown input '{attr}'",
                    node=node,
                    field=field,
                    loc=loc,
                    hint=f"declare it under inputs:, or use one of: {', '.join(self.spec.inputs) or 'none declared'}",
                )
        if node is not None and node in compiled.refs:
            self.error(
                f"node '{node}' refers to itself",
                node=node,
                field=field,
                loc=loc,
                hint="a node can only read nodes that run before it",
            )

    def compile_template(
        self, value: Any, *, node: str | None, field: str, loc: Path_, expression: bool = False
    ) -> Compiled | None:
        try:
            compiled = compile_expression(value) if expression else compile_value(value)
        except TemplateProblem as exc:
            self.error(
                str(exc), node=node, field=field, loc=loc, hint="templates read inputs, settings, pipeline and node outputs only"
            )
            return None
        self.check_refs(compiled, node=node, field=field, loc=loc)
        return compiled

    def compile_fields(self, value: Any, *, node: str | None, field: str, loc: Path_) -> Compiled | None:
        """A mapping compiled key by key, so an error names its own field and line."""
        if not isinstance(value, dict):
            return self.compile_template(value, node=node, field=field, loc=loc)
        parts = {str(k): self.compile_template(v, node=node, field=f"{field}.{k}", loc=(*loc, str(k))) for k, v in value.items()}
        compiled = {k: p for k, p in parts.items() if p is not None}
        return compile_mapping(compiled) if len(compiled) == len(parts) else None

    def check_inputs(self) -> None:
        for name, inp in self.spec.inputs.items():
            loc: Path_ = ("inputs", name)
            if not name.isidentifier() or name.startswith("_"):
                self.error(
                    f"input name '{name}' is not an identifier", field=f"inputs.{name}", loc=loc, hint="use letters, digits and _"
                )
            if not self.check_constraints(name, inp):
                continue
            if not inp.required and inp.default is not None:
                try:
                    create_model("d", v=(PY_TYPES[inp.type], ...)).model_validate({"v": inp.default})
                except ValidationError:
                    self.error(
                        f"default {inp.default!r} is not a {inp.type}",
                        field=f"inputs.{name}.default",
                        loc=(*loc, "default"),
                        hint=f"give a {inp.type} default or change the type",
                    )
                    continue
                try:
                    create_model("d", v=_input_field(inp)).model_validate({"v": inp.default})
                except ValidationError as exc:
                    self.error(
                        f"default {_shown(inp.default)} breaks the input's own constraints: {exc.errors()[0]['msg']}",
                        field=f"inputs.{name}.default",
                        loc=(*loc, "default"),
                        hint="change the default or the constraint",
                    )

    def check_constraints(self, name: str, inp: InputSpec) -> bool:
        """Constraints that fit the input's type, a minimum not above the maximum, a pattern that compiles."""
        loc: Path_ = ("inputs", name)
        ok = True
        for key, types in CONSTRAINT_TYPES.items():
            if getattr(inp, key) is not None and inp.type not in types:
                self.error(
                    f"'{key}' does not apply to a {inp.type} input",
                    field=f"inputs.{name}.{key}",
                    loc=(*loc, key),
                    hint=f"'{key}' applies to: {', '.join(sorted(types))}",
                )
                ok = False
        for low, high in (("min_length", "max_length"), ("minimum", "maximum")):
            if getattr(inp, low) is not None and getattr(inp, high) is not None and getattr(inp, low) > getattr(inp, high):
                self.error(
                    f"{low} {getattr(inp, low)} is above {high} {getattr(inp, high)}",
                    field=f"inputs.{name}.{low}",
                    loc=(*loc, low),
                    hint="swap them or fix one",
                )
                ok = False
        if not ok:
            return False
        if inp.enum is not None:
            try:
                for value in inp.enum:
                    create_model("d", v=(PY_TYPES[inp.type], ...)).model_validate({"v": value})
            except ValidationError:
                self.error(
                    f"enum value {_shown(value)} is not a {inp.type}",
                    field=f"inputs.{name}.enum",
                    loc=(*loc, "enum"),
                    hint=f"list {inp.type} values only",
                )
                return False
        try:
            create_model("d", v=_input_field(inp))
        except (SchemaError, TypeError, ValueError) as exc:
            self.error(
                f"the constraints cannot be applied: {str(exc).splitlines()[0]}",
                field=f"inputs.{name}",
                loc=loc,
                hint="check the pattern (a regular expression) and the bounds",
            )
            return False
        return True

    def compile_node(self, node_id: str, spec: NodeSpec) -> Node | None:
        loc: Path_ = ("nodes", node_id)
        ok = True
        if not node_id.isidentifier() or node_id.startswith("_") or node_id in RESERVED_NAMES:
            self.error(
                f"node id '{node_id}' is not allowed",
                node=node_id,
                loc=loc,
                hint=f"use an identifier that is not one of: {', '.join(sorted(RESERVED_NAMES))}",
            )
            ok = False
        step = registry.get(spec.uses)
        if step is None:
            self.error(
                f"unknown step '{spec.uses}'",
                node=node_id,
                field="uses",
                loc=(*loc, "uses"),
                hint=_did_you_mean(spec.uses, registry.names()),
            )
            return None
        for_each = None
        if spec.for_each is not None:
            for_each = self.compile_template(
                spec.for_each, node=node_id, field="for_each", loc=(*loc, "for_each"), expression=True
            )
            ok = ok and for_each is not None
        elif spec.chunk_size is not None or spec.concurrency is not None:
            self.error(
                "chunk_size and concurrency only apply to a node with for_each",
                node=node_id,
                field="chunk_size" if spec.chunk_size is not None else "concurrency",
                loc=(*loc, "chunk_size" if spec.chunk_size is not None else "concurrency"),
                hint="add for_each: or remove them",
            )
            ok = False
        fields = step.request.model_fields
        accepted = {f.alias or n for n, f in fields.items()} | set(fields)
        for arg in spec.with_:
            if arg not in accepted:
                self.error(
                    f"unknown argument '{arg}' for step '{spec.uses}'",
                    node=node_id,
                    field=f"with.{arg}",
                    loc=(*loc, "with", arg),
                    hint=f"'{spec.uses}' takes: {', '.join(sorted(f.alias or n for n, f in fields.items()))}",
                )
                ok = False
        for name, f in fields.items():
            if f.is_required() and name not in spec.with_ and (f.alias or name) not in spec.with_:
                self.error(
                    f"missing argument '{f.alias or name}' for step '{spec.uses}'",
                    node=node_id,
                    field="with",
                    loc=(*loc, "with"),
                    hint=f"add '{f.alias or name}:' under with:",
                )
                ok = False
        if spec.cache_ttl is not None and not step.model_call and "ttl" not in fields:
            self.error(
                f"cache_ttl has no effect on step '{spec.uses}'",
                node=node_id,
                field="cache_ttl",
                loc=(*loc, "cache_ttl"),
                hint="set it on cache_store or model-call nodes",
            )
            ok = False
        args = self.compile_fields(spec.with_, node=node_id, field="with", loc=(*loc, "with"))
        condition = None
        condition_source = None
        if isinstance(spec.if_, str):
            condition_source = spec.if_
            condition = self.compile_template(spec.if_, node=node_id, field="if", loc=(*loc, "if"), expression=True)
            ok = ok and condition is not None
        elif spec.if_ is False:
            condition_source = "false"
            condition = Compiled(evaluate=lambda ctx: False)
        if not ok or args is None:
            return None
        refs = args.refs | (condition.refs if condition else frozenset()) | (for_each.refs if for_each else frozenset())
        deps = tuple(sorted(refs & set(self.spec.nodes) - {node_id}))
        return Node(node_id, spec, step, args, condition, condition_source, deps, for_each, self.file)

    def compile(self) -> Pipeline:
        self.check_inputs()
        nodes: dict[str, Node] = {}
        for node_id, spec in self.spec.nodes.items():
            node = self.compile_node(node_id, spec)
            if node is not None:
                nodes[node_id] = node
        output = self.compile_fields(self.spec.output, node=None, field="output", loc=("output",))
        # a node that did not compile (an unknown step, say) has its own error: the nodes that read it
        # are not in a cycle for that
        levels, cyclic = _levels({n: tuple(d for d in node.deps if d in nodes) for n, node in nodes.items()})
        if cyclic:
            self.error(
                f"the nodes {', '.join(cyclic)} depend on each other in a cycle",
                node=cyclic[0],
                loc=("nodes", cyclic[0]),
                hint="break the cycle: a node can only read nodes that run before it",
            )
        if self.errors:
            raise self.errors[0] if len(self.errors) == 1 else SpecErrors(self.errors)
        assert output is not None
        edges = [(dep, n) for n, node in nodes.items() for dep in node.deps]
        return Pipeline(self.spec, self.file, nodes, levels, output, _inputs_model(self.spec), edges)


def compile_spec(spec: PipelineSpec, file: str = "<pipeline>", lines: dict[Path_, int] | None = None) -> Pipeline:
    return _Compiler(spec, file, lines or {}).compile()


def load_pipeline_file(path: Path) -> Pipeline:
    """Read, validate and compile one pipeline file."""
    spec, lines = read_spec(path)
    return compile_spec(spec, str(path), lines)


def all_errors(paths: Iterable[Path]) -> dict[str, list[SpecError]]:
    """Every problem of every file, for `frugal validate`."""
    found: dict[str, list[SpecError]] = {}
    for path in paths:
        try:
            load_pipeline_file(path)
        except SpecErrors as exc:
            found[str(path)] = exc.errors
        except SpecError as exc:
            found[str(path)] = [exc]
        else:
            found[str(path)] = []
    return found
