"""The pipeline as a picture: Mermaid text, Graphviz DOT, and SVG/PNG through Graphviz.

Nodes are labelled with their id and the task they use; edges come from the
references between nodes (the same edges the engine orders the run by); an
edge from a node that a condition reads carries that condition (`if: route.label
== 'simple'` labels the edge route → small). A condition that reads no node
(only inputs) is written under the node's label instead. The output is a sink
node fed by the nodes it reads.

Given the statuses of a run (node id → ran | skipped | cache_hit | failed), the
picture also shows the path the run took: colours per status, skipped nodes
dashed. Mermaid needs nothing installed; SVG and PNG need Graphviz's `dot`
(Debian: `apt-get install graphviz`) and the `graphviz` Python package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.core.errors import ConfigError

if TYPE_CHECKING:
    from flows.language.compiler import Pipeline

FORMATS = ("mermaid", "dot", "svg", "png")
OUTPUT = "output"

#: fill and stroke per node status, shared by Mermaid and DOT
STYLES: dict[str, tuple[str, str]] = {
    "ran": ("#d1fae5", "#047857"),
    "cache_hit": ("#dbeafe", "#1d4ed8"),
    "skipped": ("#f3f4f6", "#9ca3af"),
    "failed": ("#fee2e2", "#b91c1c"),
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None = None


def condition_text(source: str | None) -> str | None:
    """`{{ not lookup.hit }}` → `not lookup.hit`."""
    if source is None:
        return None
    match = re.fullmatch(r"\s*\{\{(.*)\}\}\s*", source, re.DOTALL)
    return " ".join((match.group(1) if match else source).split())


def edges(pipeline: Pipeline) -> list[Edge]:
    """Every dependency edge, labelled with the target's condition when the condition reads the source."""
    found: list[Edge] = []
    for node_id, node in pipeline.nodes.items():
        condition_refs = node.condition.refs if node.condition is not None else frozenset()
        text = condition_text(node.condition_source) or ""
        carrier = _carrier(text, [d for d in node.deps if d in condition_refs])
        for dep in node.deps:
            found.append(Edge(dep, node_id, f"if {text}" if dep == carrier else None))
    for ref in sorted(pipeline.output.refs & set(pipeline.nodes)):
        found.append(Edge(ref, OUTPUT))
    return found


def _carrier(text: str, refs: list[str]) -> str | None:
    """The edge that carries a condition: from the node the condition names first."""
    positions = {ref: m.start() for ref in refs if (m := re.search(rf"\b{re.escape(ref)}\b", text))}
    return min(positions, key=positions.__getitem__) if positions else (refs[0] if refs else None)


def unattached_condition(pipeline: Pipeline, node_id: str) -> str | None:
    """A condition that reads no node has no edge to carry it: it goes under the node's label."""
    node = pipeline.nodes[node_id]
    if node.condition is None or node.condition.refs & set(node.deps):
        return None
    return f"if {condition_text(node.condition_source)}"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def mermaid(pipeline: Pipeline, statuses: dict[str, str] | None = None) -> str:
    """A Mermaid flowchart (renders on GitHub, GitLab, mermaid.live); no dependency."""
    lines = ["flowchart TD"]
    for node_id, node in pipeline.nodes.items():
        label = f"<b>{node_id}</b><br/>{node.step.name}"
        extra = unattached_condition(pipeline, node_id)
        if extra:
            label += f"<br/><i>{_mermaid_text(extra)}</i>"
        if statuses and node_id in statuses:
            label += f"<br/>{statuses[node_id].replace('_', ' ')}"
        lines.append(f'    n_{node_id}["{label}"]')
    lines.append(f'    n_{OUTPUT}(["{OUTPUT}"])')
    for edge in edges(pipeline):
        arrow = f' -->|"{_mermaid_text(edge.label)}"| ' if edge.label else " --> "
        lines.append(f"    n_{edge.source}{arrow}n_{edge.target}")
    if statuses:
        for status, (fill, stroke) in STYLES.items():
            dash = ",stroke-dasharray: 4 3" if status == "skipped" else ""
            lines.append(f"    classDef {status} fill:{fill},stroke:{stroke}{dash}")
        for status in STYLES:
            members = [f"n_{n}" for n in pipeline.nodes if statuses.get(n) == status]
            if members:
                lines.append(f"    class {','.join(members)} {status}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(pipeline: Pipeline, statuses: dict[str, str] | None = None) -> str:
    """Graphviz DOT source of the same picture."""
    lines = [
        f"digraph {_dot_quote(pipeline.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#6b7280"];',
    ]
    for node_id, node in pipeline.nodes.items():
        label = f"{node_id}\n{node.step.name}"
        extra = unattached_condition(pipeline, node_id)
        if extra:
            label += f"\n{extra}"
        status = (statuses or {}).get(node_id)
        if status:
            label += f"\n[{status.replace('_', ' ')}]"
        attrs = [f"label={_dot_quote(label)}"]
        if status in STYLES:
            fill, stroke = STYLES[status]
            attrs += [f'fillcolor="{fill}"', f'color="{stroke}"']
            if status == "skipped":
                attrs.append('style="rounded,filled,dashed"')
        lines.append(f"  {_dot_quote(node_id)} [{', '.join(attrs)}];")
    lines.append(f'  "{OUTPUT}" [shape=oval, label="{OUTPUT}", fillcolor="#f9fafb"];')
    for edge in edges(pipeline):
        label = f" [label={_dot_quote(edge.label)}]" if edge.label else ""
        lines.append(f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(pipeline: Pipeline, fmt: str, statuses: dict[str, str] | None = None) -> bytes:
    """`svg` or `png` bytes, drawn by Graphviz's `dot`."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"render() draws svg or png, not {fmt!r}")
    try:
        import graphviz
    except ImportError as exc:
        raise ConfigError("drawing svg/png needs the graphviz Python package: pip install graphviz") from exc
    try:
        return graphviz.Source(dot(pipeline, statuses)).pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise ConfigError(
            "drawing svg/png needs Graphviz's `dot` program: apt-get install graphviz (or use --format mermaid)"
        ) from exc
    except graphviz.CalledProcessError as exc:
        raise ConfigError(f"Graphviz could not draw pipeline '{pipeline.name}': {exc.stderr!r}") from exc


def draw(pipeline: Pipeline, fmt: str, statuses: dict[str, str] | None = None) -> bytes:
    """The picture in any of FORMATS, as bytes (text formats are UTF-8)."""
    if fmt == "mermaid":
        return mermaid(pipeline, statuses).encode()
    if fmt == "dot":
        return dot(pipeline, statuses).encode()
    if fmt in ("svg", "png"):
        return render(pipeline, fmt, statuses)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
