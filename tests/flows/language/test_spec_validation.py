"""Every error the pipeline language promises, as a user meets it.

Each pipeline is a YAML file in tmp_path. A load-time error must name the
file, the line, the node and the field, and say how to fix it; all of a file's
errors come together; run-time input errors come before any model is called.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flows.language import catalog
from flows.language.compiler import Pipeline, load_pipeline_file
from flows.orchestration.flow import run_inline
from tasks.core.errors import InputError, SpecError, SpecErrors, StepError

VALID = """\
name: demo
version: "1"
inputs:
  prompt:
    type: string
nodes:
  key:
    uses: hash_prompt
    with:
      prompt: "{{ inputs.prompt }}"
  route:
    uses: classify
    with:
      text: "{{ inputs.prompt }}"
output: "{{ key }}"
"""


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(path: Path, marker: str) -> int:
    """1-based line of the only line of `path` containing `marker`."""
    found = [i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line]
    assert len(found) == 1, f"marker {marker!r} must be on exactly one line, found {found}"
    return found[0]


def load_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_pipeline_file(path)
    return caught.value


def assert_names(error: SpecError, path: Path, *, line: int | None, node: str | None = None, field: str | None = None) -> str:
    """The rendered message names the file (and line), node, field and carries a fix hint."""
    text = str(error)
    where = f"{path}:{line}" if line is not None else str(path)
    assert text.startswith(where + ":") or text.startswith(where + ","), text
    if node is not None:
        assert f"node '{node}'" in text, text
    if field is not None:
        assert f"field '{field}'" in text, text
    assert "(fix: " in text, text
    assert (error.file, error.line, error.node, error.field) == (str(path), line, node, field)
    return text


def test_the_baseline_pipeline_loads(tmp_path):
    pipeline = load_pipeline_file(write(tmp_path, VALID))
    assert isinstance(pipeline, Pipeline)
    assert pipeline.order == ["key", "route"]


# -- one error per file: (yaml, marker line, node, field, words the message must contain) ----

NODE_ERRORS = {
    "unknown step": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: nope
        output: "{{ key }}"
        """,
        "uses: nope",
        "key",
        "uses",
        ["unknown step 'nope'", "hash_prompt", "call_llm"],
    ),
    "reference to an unknown node": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            with:
              system: fixed
              prompt: "{{ ghost.text }}"
        output: "{{ key }}"
        """,
        "ghost.text",
        "key",
        "with.prompt",
        ["unknown node or input 'ghost'", "inputs.NAME"],
    ),
    "reference to an unknown input": (
        """\
        name: demo
        version: "1"
        inputs:
          prompt: {type: string}
        nodes:
          key:
            uses: hash_prompt
            with:
              system: fixed
              prompt: "{{ inputs.nope }}"
        output: "{{ key }}"
        """,
        "inputs.nope",
        "key",
        "with.prompt",
        ["unknown input 'nope'", "prompt"],
    ),
    "unknown input read by item": (
        """\
        name: demo
        version: "1"
        inputs:
          prompt: {type: string}
        nodes:
          key:
            uses: hash_prompt
            with:
              prompt: "{{ inputs['nope'] }}"
        output: "{{ key }}"
        """,
        "inputs['nope']",
        "key",
        "with.prompt",
        ["unknown input 'nope'"],
    ),
    "a node refers to itself": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            with:
              prompt: "{{ key }}"
        output: "{{ key }}"
        """,
        'prompt: "{{ key }}"',
        "key",
        "with.prompt",
        ["refers to itself"],
    ),
    "a condition refers to an unknown node": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            if: "{{ not lokup.hit }}"
        output: "{{ key }}"
        """,
        "lokup.hit",
        "key",
        "if",
        ["unknown node or input 'lokup'"],
    ),
    "unknown key in a node": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            retires: 2
        output: "{{ key }}"
        """,
        "retires: 2",
        "key",
        "retires",
        ["unknown key 'retires'", "retries"],
    ),
    "unknown argument in with": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            with:
              namespace: docs
              promt: hello
        output: "{{ key }}"
        """,
        "promt: hello",
        "key",
        "with.promt",
        ["unknown argument 'promt' for step 'hash_prompt'", "prompt"],
    ),
    "missing required step argument": (
        """\
        name: demo
        version: "1"
        nodes:
          lookup:
            uses: cache_lookup
            with:
              namespace: docs
        output: "{{ lookup }}"
        """,
        "with:",
        "lookup",
        "with",
        ["missing argument 'key' for step 'cache_lookup'", "add 'key:'"],
    ),
    "cache_ttl on a step it does not apply to": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            cache_ttl: 600
        output: "{{ key }}"
        """,
        "cache_ttl: 600",
        "key",
        "cache_ttl",
        ["cache_ttl has no effect on step 'hash_prompt'", "cache_store"],
    ),
    "item outside for_each": (
        """\
        name: demo
        version: "1"
        inputs:
          docs: {type: list}
        nodes:
          key:
            uses: hash_prompt
            with: {prompt: "{{ item }}"}
        output: "{{ key }}"
        """,
        "prompt:",
        "key",
        "with.prompt",
        ["'item' is only defined in a node with for_each", "add for_each"],
    ),
    "chunk_size without for_each": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            chunk_size: 10
        output: "{{ key }}"
        """,
        "chunk_size: 10",
        "key",
        "chunk_size",
        ["chunk_size and concurrency only apply to a node with for_each", "add for_each"],
    ),
    "sandbox: dunder attribute": (
        """\
        name: demo
        version: "1"
        inputs:
          prompt: {type: string}
        nodes:
          key:
            uses: hash_prompt
            with:
              prompt: "{{ inputs.__class__ }}"
        output: "{{ key }}"
        """,
        "__class__",
        "key",
        "with.prompt",
        ["'__class__' is not allowed"],
    ),
    "sandbox: dunder item": (
        """\
        name: demo
        version: "1"
        nodes:
          first:
            uses: hash_prompt
          key:
            uses: hash_prompt
            with:
              prompt: "{{ first['__globals__'] }}"
        output: "{{ key }}"
        """,
        "__globals__",
        "key",
        "with.prompt",
        ["'__globals__' is not allowed"],
    ),
    "sandbox: import": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            with:
              prompt: "{% import 'x' as y %}hello"
        output: "{{ key }}"
        """,
        "import 'x'",
        "key",
        "with.prompt",
        ["'import' is not allowed"],
    ),
    "sandbox: dunder in a condition": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            if: "{{ pipeline.__class__ }}"
        output: "{{ key }}"
        """,
        "__class__",
        "key",
        "if",
        ["'__class__' is not allowed"],
    ),
    "template syntax error": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
            with:
              system: fixed
              prompt: "{{ 1 + }}"
        output: "{{ key }}"
        """,
        "{{ 1 + }}",
        "key",
        "with.prompt",
        ["syntax error"],
    ),
    "reserved node id": (
        """\
        name: demo
        version: "1"
        nodes:
          inputs:
            uses: hash_prompt
        output: "done"
        """,
        "  inputs:",
        "inputs",
        None,
        ["node id 'inputs' is not allowed", "settings"],
    ),
    "node id that is not an identifier": (
        """\
        name: demo
        version: "1"
        nodes:
          my-key:
            uses: hash_prompt
        output: "done"
        """,
        "my-key:",
        "my-key",
        None,
        ["node id 'my-key' is not allowed"],
    ),
    "duplicate node id": (
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
          route:
            uses: classify
            with:
              text: hello
          key:
            uses: classify
            with:
              text: hello
        output: "{{ key }}"
        """,
        None,  # the second `key:`, line 10
        "key",
        None,
        ["duplicate key 'key'", "line 4"],
    ),
}


@pytest.mark.parametrize("case", list(NODE_ERRORS), ids=list(NODE_ERRORS))
def test_node_error_names_file_line_node_field_and_fix(tmp_path, case):
    text, marker, node, field, words = NODE_ERRORS[case]
    path = write(tmp_path, text)
    line = line_of(path, marker) if marker is not None else 10
    error = load_error(path)
    assert not isinstance(error, SpecErrors), str(error)
    message = assert_names(error, path, line=line, node=node, field=field)
    for word in words:
        assert word in message, message


def test_cycle_between_two_nodes_names_both(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          a:
            uses: hash_prompt
            with:
              prompt: "{{ b }}"
          b:
            uses: hash_prompt
            with:
              prompt: "{{ a }}"
        output: "{{ b }}"
        """,
    )
    error = load_error(path)
    message = assert_names(error, path, line=line_of(path, "  a:"), node="a")
    assert "nodes a, b depend on each other in a cycle" in message
    assert "break the cycle" in message


def test_cache_ttl_is_accepted_where_it_applies(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        inputs:
          prompt: {type: string}
        nodes:
          key:
            uses: hash_prompt
            with: {prompt: "{{ inputs.prompt }}"}
          large:
            uses: call_llm
            cache_ttl: 60
            with: {prompt: "{{ inputs.prompt }}"}
          store:
            uses: cache_store
            cache_ttl: 60
            with: {key: "{{ key }}", answer: "{{ large }}"}
        output: "{{ store }}"
        """,
    )
    pipeline = load_pipeline_file(path)
    assert pipeline.levels == [["key", "large"], ["store"]]


@pytest.mark.parametrize(
    ("text", "marker", "field", "words"),
    [
        (
            """\
            name: demo
            version: "1"
            nodez: {}
            nodes:
              key: {uses: hash_prompt}
            output: "{{ key }}"
            """,
            "nodez:",
            "nodez",
            ["unknown key 'nodez'", "nodes", "output"],
        ),
        (
            """\
            name: demo
            version: "1"
            inputs:
              prompt:
                type: string
                defualt: hello
            nodes:
              key: {uses: hash_prompt}
            output: "{{ key }}"
            """,
            "defualt:",
            "inputs.prompt.defualt",
            ["unknown key 'defualt'", "default", "description", "type"],
        ),
        (
            """\
            name: demo
            version: "1"
            inputs:
              max_tokens:
                type: integer
                default: lots
            nodes:
              key: {uses: hash_prompt}
            output: "{{ key }}"
            """,
            "default: lots",
            "inputs.max_tokens.default",
            ["default 'lots' is not a integer"],
        ),
        (
            """\
            name: demo
            version: "1"
            inputs:
              strict:
                type: boolean
                default: "yes"
            nodes:
              key: {uses: hash_prompt}
            output: "{{ key }}"
            """,
            "default:",
            "inputs.strict.default",
            ["is not a boolean"],
        ),
        (
            """\
            name: demo
            version: "1"
            nodes:
              key: {uses: hash_prompt}
            """,
            "name: demo",
            "output",
            ["required key 'output' is missing", "add 'output:'"],
        ),
    ],
    ids=["unknown top-level key", "unknown input key", "bad integer default", "bad boolean default", "missing output"],
)
def test_pipeline_and_input_errors_name_file_line_field_and_fix(tmp_path, text, marker, field, words):
    path = write(tmp_path, text)
    error = load_error(path)
    message = assert_names(error, path, line=line_of(path, marker), field=field)
    for word in words:
        assert word in message, message


def test_node_that_is_not_a_mapping(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          key: hash_prompt
        output: "{{ key }}"
        """,
    )
    error = load_error(path)
    message = assert_names(error, path, line=line_of(path, "key: hash_prompt"), node="key")
    assert "uses" in message and "with" in message


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          key:
            uses: hash_prompt
           with: {prompt: x}
        output: "{{ key }}"
        """,
    )
    error = load_error(path)
    message = assert_names(error, path, line=line_of(path, "with: {prompt: x}"))
    assert "malformed YAML" in message
    assert "indentation" in message


def test_unclosed_quote_names_a_line(tmp_path):
    path = write(tmp_path, 'name: demo\nversion: "1"\nnodes:\n  key:\n    uses: "hash_prompt\noutput: x\n')
    error = load_error(path)
    assert "malformed YAML" in str(error)
    assert error.line is not None and error.line >= 5
    assert f"{path}:{error.line}:" in str(error)


def test_recursive_alias_is_a_yaml_error_not_a_crash(tmp_path):
    path = write(tmp_path, 'name: demo\nversion: "1"\nnodes: &all\n  key: *all\noutput: x\n')
    error = load_error(path)
    message = assert_names(error, path, line=3)
    assert "malformed YAML" in message and "alias" in message


@pytest.mark.parametrize("text", ["- name: demo\n- nodes: {}\n", "just a sentence\n", ""], ids=["list", "scalar", "empty"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    error = load_error(path)
    message = assert_names(error, path, line=1)
    assert "must be a mapping" in message
    assert "name" in message and "nodes" in message


def test_several_errors_in_one_file_are_all_reported(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        inputs:
          prompt: {type: string}
        nodes:
          key:
            uses: nope
          route:
            uses: classify
            with:
              txt: "{{ inputs.prompt }}"
          small:
            uses: call_slm
            with:
              prompt: "{{ inputs.promt }}"
          store:
            uses: hash_prompt
            cache_ttl: 5
        output: "{{ small }}"
        """,
    )
    error = load_error(path)
    assert isinstance(error, SpecErrors)
    found = {(e.node, e.field, e.line) for e in error.errors}
    assert found >= {
        ("key", "uses", line_of(path, "uses: nope")),
        ("route", "with.txt", line_of(path, "txt:")),
        ("route", "with", line_of(path, "txt:") - 1),  # `text` is required and missing
        ("small", "with.prompt", line_of(path, "inputs.promt")),
        ("store", "cache_ttl", line_of(path, "cache_ttl: 5")),
    }
    message = str(error)
    assert message.count(f"{path}:") == len(error.errors) >= 5
    assert message.count("(fix: ") == len(error.errors)


def test_several_structural_errors_are_all_reported(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        bogus: 1
        inputs:
          prompt: {type: string, requried: true}
        nodes:
          key:
            uses: hash_prompt
            retires: 2
        output: "{{ key }}"
        """,
    )
    error = load_error(path)
    assert isinstance(error, SpecErrors)
    assert {(e.field, e.line) for e in error.errors} == {
        ("bogus", 3),
        ("inputs.prompt.requried", 5),
        ("retires", 9),
    }
    assert all(e.hint for e in error.errors)


def test_catalog_load_reports_spec_errors_too(tmp_path):
    path = write(tmp_path, VALID.replace("uses: classify", "uses: clasify"))
    with pytest.raises(SpecError, match=r"unknown step 'clasify'.*\(fix: "):
        catalog.load(str(path))


# -- run time ------------------------------------------------------------------------------


async def test_attr_filter_escape_is_refused_when_run_and_nothing_runs(tmp_path, peer):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        inputs:
          prompt: {type: string}
        nodes:
          large:
            uses: call_llm
            with:
              prompt: "{{ inputs|attr('__class__') }}"
        output: "{{ large.text }}"
        """,
    )
    pipeline = load_pipeline_file(path)  # filters are not checked at load time ...
    with pytest.raises(StepError) as caught:
        await run_inline(pipeline, {"prompt": "hi"})  # ... but the sandbox refuses them
    message = str(caught.value)
    assert "node 'large'" in message
    assert "unsafe" in message and "__class__" in message
    assert caught.value.node == "large"
    assert peer.count() == 0


async def test_attr_filter_escape_in_mixed_text_is_refused(tmp_path, peer):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          large:
            uses: call_llm
            with:
              prompt: "Say {{ pipeline|attr('__init__') }}"
        output: "{{ large.text }}"
        """,
    )
    with pytest.raises(StepError, match=r"node 'large'.*unsafe"):
        await run_inline(load_pipeline_file(path), {})
    assert peer.count() == 0


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({}, ["missing required input 'prompt'"]),
        ({"prompt": "hi", "promt": "hi"}, ["unknown input 'promt'", "max_tokens"]),
        ({"prompt": "hi", "max_tokens": "abc"}, ["input 'max_tokens' must be integer", "'abc'"]),
        ({"prompt": "hi", "max_tokens": "12"}, ["input 'max_tokens' must be integer", "'12'"]),
        ({"prompt": 42}, ["input 'prompt' must be string", "42"]),
        ({"prompt": "hi", "bypass_cache": "no"}, ["input 'bypass_cache' must be boolean"]),
    ],
    ids=["missing", "unknown", "int from text", "int from digits", "string from int", "bool from text"],
)
async def test_input_errors_come_before_any_model_call(peer, inputs, words):
    with pytest.raises(InputError) as caught:
        await run_inline("answer", inputs)
    message = str(caught.value)
    assert message.startswith("pipeline 'answer': ")
    for word in words:
        assert word in message, message
    assert peer.count() == 0


async def test_number_input_error_names_the_input_once(peer):
    with pytest.raises(InputError) as caught:
        await run_inline("answer", {"prompt": "hi", "temperature": "hot"})
    message = str(caught.value)
    assert "input 'temperature' must be number" in message, message
    assert message.count("temperature") == 1, message
    assert peer.count() == 0


async def test_several_input_errors_are_reported_together(peer):
    with pytest.raises(InputError) as caught:
        await run_inline("answer", {"max_tokens": "abc", "colour": "red"})
    message = str(caught.value)
    assert "missing required input 'prompt'" in message
    assert "input 'max_tokens' must be integer" in message
    assert "unknown input 'colour'" in message
    assert peer.count() == 0
