"""The pipeline as a picture (`frugal graph`, flows/language/graph.py) and the run artifact's Markdown."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from flows.cli.main import main
from flows.engine.results import NodeReport
from flows.language import catalog
from flows.language.graph import dot, edges, mermaid, render
from flows.orchestration.run_artifact import markdown


@pytest.fixture
def answer():
    return catalog.load("answer")


def test_edges_come_from_references_and_carry_conditions(answer):
    found = {(e.source, e.target): e.label for e in edges(answer)}
    assert found[("key", "lookup")] is None
    assert found[("lookup", "route")] == "if not lookup.hit"
    assert found[("route", "small")] == "if route.label == 'simple'"
    # a condition reading two nodes is written once, on the edge from the node it names first
    assert found[("route", "large")].startswith("if route.label == 'complex' or")
    assert found[("small", "small_check")] is None  # the large model runs on the small answer's verdict
    assert ("small_check", "large") in found and ("small", "large") not in found
    assert ("large", "store") in found and ("store", "output") in found
    assert len(found) == len(edges(answer))


def test_mermaid_labels_nodes_with_their_task(answer):
    text = mermaid(answer)
    assert text.startswith("flowchart TD\n")
    assert 'n_key["<b>key</b><br/>hash_prompt"]' in text
    assert "n_route -->|\"if route.label == 'simple'\"| n_small" in text
    assert "classDef" not in text  # no run: no colours


def test_a_run_colours_the_path(answer):
    statuses = {
        "key": "ran",
        "lookup": "cache_hit",
        "route": "skipped",
        "small": "skipped",
        "large": "skipped",
        "store": "skipped",
    }
    text = mermaid(answer, statuses)
    assert "class n_lookup cache_hit" in text and "class n_route,n_small,n_large,n_store skipped" in text
    source = dot(answer, statuses)
    assert '"lookup" [label="lookup\\ncache_lookup\\n[cache hit]", fillcolor="#dbeafe"' in source
    assert 'style="rounded,filled,dashed"' in source


def test_a_condition_on_inputs_only_goes_under_the_node(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: p
            version: "1"
            inputs: {go: {type: boolean, default: true}, prompt: {type: string}}
            nodes:
              key: {uses: hash_prompt, if: "{{ inputs.go }}", with: {prompt: "{{ inputs.prompt }}"}}
            output: "{{ key }}"
            """
        )
    )
    pipeline = catalog.load(str(path))
    assert 'n_key["<b>key</b><br/>hash_prompt<br/><i>if inputs.go</i>"]' in mermaid(pipeline)
    assert [(e.source, e.target, e.label) for e in edges(pipeline)] == [("key", "output", None)]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed: apt-get install graphviz")
def test_svg_and_png_through_graphviz(answer):
    svg = render(answer, "svg").decode()
    assert svg.lstrip().startswith("<?xml") and "hash_prompt" in svg and "if not lookup.hit" in svg
    assert render(answer, "png").startswith(b"\x89PNG")


def test_frugal_graph_writes_each_format(tmp_path, capsys):
    assert main(["graph", "sentiment"]) == 0
    assert 'n_lookup -->|"if not lookup.hit"| n_small' in capsys.readouterr().out
    assert main(["graph", "answer", "--format", "dot", "-o", str(tmp_path / "a.dot")]) == 0
    assert (tmp_path / "a.dot").read_text().startswith('digraph "answer"')
    if shutil.which("dot"):
        assert main(["graph", "answer", "-f", "png", "-o", str(tmp_path / "a.png")]) == 0
        assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    assert main(["graph", "nope"]) == 1
    assert "unknown pipeline 'nope'" in capsys.readouterr().err


def test_run_artifact_tells_the_path(answer):
    reports = {
        "key": NodeReport("hash_prompt", "ran", 1.0),
        "lookup": NodeReport("cache_lookup", "cache_hit", 2.0, cache="hit"),
        **{
            n: NodeReport(answer.nodes[n].step.name, "skipped", 0.5, reason="if: {{ not lookup.hit }} was false")
            for n in ("route", "small", "large", "store")
        },
    }
    text = markdown(answer, reports, None, None)
    assert "**Path:** key → lookup (cache hit) → output" in text
    assert "**Skipped:** route, small, large, store" in text
    assert "| route | classify | skipped | 0.5 | if: not lookup.hit was false |" in text
    assert "```mermaid\nflowchart TD" in text

    failed = markdown(answer, {"key": reports["key"]}, "lookup", "node 'lookup': boom")
    assert "v2: failed" in failed and "**Failed:** lookup: node 'lookup': boom" in failed
    assert "| lookup | cache_lookup | failed |" in failed and "| route | classify | not reached |" in failed
