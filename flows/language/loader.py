"""Read a pipeline file into a `PipelineSpec`, with errors that name the line.

Malformed YAML, a top level that is not a mapping, a key given twice (YAML
would silently keep the last) and every pydantic validation error become
`SpecError`s naming the file, the line, the node and the field, with a hint on
how to fix it. All errors of a file are reported together (`SpecErrors`).

The file is parsed once, bounded, so a hostile or careless file fails fast
instead of eating memory or hanging `frugal validate`:

- at most ``FRUGAL_PIPELINE_MAX_BYTES`` (1 MB) are read; only regular files;
- the YAML is composed once into a node tree (libyaml's C parser when
  present; with the data and validation, ~9x faster than the three pure-Python
  parses this replaced on a 0.9 MB file: tests/benchmarks/bench_loader.py),
  then checked before any
  Python object is built: nesting depth (`MAX_DEPTH`) and the number of nodes
  *as expanded through aliases* (`MAX_NODES`), so a "billion laughs" file of a
  few hundred bytes is refused in microseconds; an alias may still name a
  shared block (`system: *system`), as long as the expanded file stays small;
- the same tree gives each path's line and the repeated keys (each node
  visited once, aliases not walked again), and is then turned into data.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from flows.language.spec import InputSpec, NodeSpec, PipelineSpec
from tasks.core.errors import SpecError, SpecErrors
from tasks.core.settings import get_settings

Path_ = tuple[str | int, ...]

_ALLOWED = {
    "pipeline": sorted(f.alias or n for n, f in PipelineSpec.model_fields.items()),
    "node": sorted(f.alias or n for n, f in NodeSpec.model_fields.items()),
    "input": sorted(InputSpec.model_fields),
}


#: deepest nesting of mappings and lists, counted through aliases
MAX_DEPTH = 64
#: most mapping keys, values and list items in the file as expanded through aliases
MAX_NODES = 100_000


def _compose(text: str) -> tuple[yaml.SafeLoader | yaml.CSafeLoader, yaml.Node | None]:
    """The node tree of one YAML document (libyaml's C parser when installed), not yet data."""
    loader = _Loader(text)
    try:
        return loader, loader.get_single_node()
    except BaseException:
        loader.dispose()
        raise


_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _too_big(message: str, node: yaml.Node, file: str, hint: str) -> SpecError:
    return SpecError(message, file=file, line=node.start_mark.line + 1, hint=hint)


def check_size(root: yaml.Node, file: str = "<pipeline>") -> int:
    """Nodes in the tree as expanded through aliases; raises SpecError past MAX_DEPTH / MAX_NODES
    or on an alias inside the block it names. Each distinct node is measured once."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (expanded nodes, height)
    open_: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        known = measured.get(key)
        if known is None:
            if key in open_:
                raise yaml.MarkedYAMLError(
                    problem="an alias refers to a mapping or list that contains it", problem_mark=node.start_mark
                )
            if depth > MAX_DEPTH:
                raise _too_big(
                    f"nesting deeper than {MAX_DEPTH} levels (the limit)", node, file, "flatten the mappings and lists"
                )
            open_.add(key)
            size, height = 1, 0
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            for child in children:
                child_size, child_height = measure(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
                if size > MAX_NODES:
                    raise _too_big(
                        f"more than {MAX_NODES} keys, values and items once aliases are expanded (the limit)",
                        node,
                        file,
                        "use fewer aliases (*name), or split the pipeline",
                    )
            open_.discard(key)
            known = measured[key] = (size, height)
        if depth + known[1] > MAX_DEPTH:
            raise _too_big(
                f"nesting deeper than {MAX_DEPTH} levels (the limit) once aliases are expanded",
                node,
                file,
                "flatten the mappings and lists",
            )
        return known

    return measure(root, 0)[0]


def scan_tree(root: yaml.Node | None) -> tuple[dict[Path_, int], list[tuple[Path_, int, int]]]:
    """The 1-based line of every mapping key and sequence item, by path; and every key given
    twice in one mapping (path, first line, repeated line). A node reached again through an
    alias is not walked again: paths inside it take the line of the alias."""
    lines: dict[Path_, int] = {}
    repeated: list[tuple[Path_, int, int]] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: Path_) -> None:
        lines[path] = node.start_mark.line + 1
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name, line = str(key.value), key.start_mark.line + 1
                if name in seen:
                    repeated.append(((*path, name), seen[name], line))
                seen.setdefault(name, line)
                walk(value, (*path, name))
                lines[(*path, name)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return lines, repeated


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


def _data(text: str, file: str) -> tuple[object, dict[Path_, int], list[tuple[Path_, int, int]]]:
    """Compose once, check the limits, map lines, then build the data from the same tree."""
    limit = get_settings().engine.pipeline_max_bytes
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        raise SpecError(
            f"the file is larger than {limit} bytes (the limit)",
            file=file,
            hint="split the pipeline, or raise FRUGAL_PIPELINE_MAX_BYTES",
        )
    try:
        loader, root = _compose(text)
        try:
            if root is None:
                return None, {}, []
            check_size(root, file)
            lines, repeated = scan_tree(root)
            return loader.construct_document(root), lines, repeated
        finally:
            loader.dispose()
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
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise SpecError(f"malformed YAML: {exc}", file=file, hint="quote the value or shorten it") from exc


def parse(text: str, file: str = "<pipeline>") -> tuple[PipelineSpec, dict[Path_, int]]:
    """Parse YAML text into a validated `PipelineSpec` and its line map, or raise `SpecError(s)`."""
    data, lines, repeated = _data(text, file)
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
        return PipelineSpec.model_validate(data), lines
    except ValidationError as exc:
        errors = [_error_from(e, file, lines) for e in exc.errors()]
        raise (errors[0] if len(errors) == 1 else SpecErrors(errors)) from exc


def read_text(path: Path) -> str:
    """A pipeline file's text: a regular file of at most FRUGAL_PIPELINE_MAX_BYTES, read no further."""
    limit = get_settings().engine.pipeline_max_bytes
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:  # a FIFO must not block the open
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise SpecError("not a regular file", file=str(path), hint="give the path of a .yaml file")
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            raise SpecError(
                f"the file is larger than {limit} bytes (the limit)",
                file=str(path),
                hint="split the pipeline, or raise FRUGAL_PIPELINE_MAX_BYTES",
            )
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", file=str(path)) from exc


def read_spec(path: Path) -> tuple[PipelineSpec, dict[Path_, int]]:
    """Read and parse a file (once); also return its line map for later errors."""
    return parse(read_text(path), str(path))
