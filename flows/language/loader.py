"""Read a pipeline file into a `PipelineSpec`, with errors that name the line.

Malformed YAML, a top level that is not a mapping, a key given twice (YAML
would silently keep the last) and every pydantic validation error become
`SpecError`s naming the file, the line, the node and the field, with a hint on
how to fix it. All errors of a file are reported together (`SpecErrors`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from flows.language.spec import InputSpec, NodeSpec, PipelineSpec
from tasks.core.errors import SpecError, SpecErrors

Path_ = tuple[str | int, ...]

_ALLOWED = {
    "pipeline": sorted(f.alias or n for n, f in PipelineSpec.model_fields.items()),
    "node": sorted(f.alias or n for n, f in NodeSpec.model_fields.items()),
    "input": sorted(InputSpec.model_fields),
}


def scan(text: str) -> tuple[dict[Path_, int], list[tuple[Path_, int, int]]]:
    """One pass over the YAML: the 1-based line of every mapping key and sequence
    item, by path; and every key given twice in one mapping (path, first line, repeated line)."""
    lines: dict[Path_, int] = {}
    repeated: list[tuple[Path_, int, int]] = []

    def walk(node: yaml.Node, path: Path_, above: frozenset[int]) -> None:
        if id(node) in above:
            raise yaml.MarkedYAMLError(
                problem="an alias refers to a mapping or list that contains it", problem_mark=node.start_mark
            )
        above = above | {id(node)}
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name, line = str(key.value), key.start_mark.line + 1
                if name in seen:
                    repeated.append(((*path, name), seen[name], line))
                seen.setdefault(name, line)
                walk(value, (*path, name), above)
                lines[(*path, name)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i), above)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, (), frozenset())
    return lines, repeated


def line_map(text: str) -> dict[Path_, int]:
    """1-based line of every mapping key and sequence item, by path."""
    return scan(text)[0]


def _line_of(lines: dict[Path_, int], loc: Path_) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _where(loc: Path_) -> tuple[str | None, str | None, str]:
    """(node, field, kind) of a location in the file."""
    node = str(loc[1]) if len(loc) >= 2 and loc[0] == "nodes" else None
    if node is not None:
        field_path, kind = loc[2:], "node"
    elif len(loc) >= 2 and loc[0] == "inputs":
        field_path, kind = loc, "input"
    else:
        field_path, kind = loc, "pipeline"
    return node, ".".join(str(p) for p in field_path) or None, kind


def _error_from(err: ErrorDetails, file: str, lines: dict[Path_, int]) -> SpecError:
    loc: Path_ = tuple(err["loc"])
    node, field, kind = _where(loc)
    line = _line_of(lines, loc)
    etype = err["type"]
    if etype == "extra_forbidden":
        return SpecError(
            f"unknown key '{loc[-1]}'",
            file=file,
            node=node,
            field=field,
            line=line,
            hint=f"remove it or fix its spelling; a {kind} takes: {', '.join(_ALLOWED[kind])}",
        )
    if etype == "missing":
        return SpecError(
            f"required key '{loc[-1]}' is missing", file=file, node=node, field=field, line=line, hint=f"add '{loc[-1]}:'"
        )
    if etype in ("dict_type", "model_type") and (node is not None or kind == "input") and len(loc) == 2:
        hint = f"a {kind} takes: {', '.join(_ALLOWED[kind])}"
        return SpecError(f"a {kind} must be a mapping", file=file, node=node, field=field, line=line, hint=hint)
    return SpecError(err["msg"], file=file, node=node, field=field, line=line)


def parse_spec(text: str, file: str = "<pipeline>") -> PipelineSpec:
    """Parse YAML text into a validated `PipelineSpec` or raise `SpecError(s)`."""
    try:
        data = yaml.safe_load(text)
        lines, repeated = scan(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(
            f"malformed YAML: {exc.problem or exc.context}",
            file=file,
            line=line,
            hint="check indentation and quoting around this line",
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", file=file) from exc
    if not isinstance(data, dict):
        raise SpecError(
            "a pipeline file must be a mapping with name, version, nodes and output",
            file=file,
            line=1,
            hint="write it as `key: value` lines from the first column: name:, version:, nodes:, output:",
        )
    if repeated:
        errors = []
        for loc, first, line in repeated:
            node, field, _ = _where(loc)
            errors.append(
                SpecError(
                    f"duplicate key '{loc[-1]}' (first on line {first}); YAML would silently keep only the last one",
                    file=file,
                    node=node,
                    field=field,
                    line=line,
                    hint="rename or remove one of them",
                )
            )
        raise errors[0] if len(errors) == 1 else SpecErrors(errors)
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        errors = [_error_from(e, file, lines) for e in exc.errors()]
        raise (errors[0] if len(errors) == 1 else SpecErrors(errors)) from exc


def read_spec(path: Path) -> tuple[PipelineSpec, dict[Path_, int]]:
    """Read and parse a file; also return its line map for later errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", file=str(path)) from exc
    spec = parse_spec(text, str(path))
    return spec, line_map(text)
