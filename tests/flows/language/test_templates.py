"""Templates as a user meets them: data is never rendered, values keep their type,
a skipped node reads as None, a misspelt key on real data names node and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flows.language.compiler import Pipeline, load_pipeline_file
from flows.orchestration.flow import run_inline
from tasks.core.errors import StepError

TRICKY = "{{ 7*7 }} and {% raw %}"


def pipeline(tmp_path: Path, text: str) -> Pipeline:
    path = tmp_path / "demo.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_pipeline_file(path)


def user_message(peer, path: str) -> dict:
    bodies = [r.json for r in peer.requests if r.path == path]
    assert len(bodies) == 1, [r.path for r in peer.requests]
    return bodies[0]["messages"][-1]


@pytest.mark.parametrize(
    ("prompt", "path", "route"),
    [
        # the learned router reads template syntax alone as code (large): the small case wraps it in simple work
        (f'Is this review positive or negative? "Great little café, friendly staff. {TRICKY}"', "/api/chat", "small"),
        (TRICKY + " compare both step by step", "/v1/chat/completions", "large"),
    ],
    ids=["small model", "large model"],
)
async def test_prompt_with_template_syntax_reaches_the_model_verbatim(peer, prompt, path, route):
    answer = "{{ 1+1 }} is not 2 here {% endraw %}"
    peer.responder = lambda protocol, body: answer
    system = "Reply to {{ inputs.prompt }} {# not a comment #}"

    first = await run_inline("answer", {"prompt": prompt, "system": system})

    sent = user_message(peer, path)
    assert sent == {"role": "user", "content": prompt}
    system_sent = [r.json for r in peer.requests if r.path == path][0]["messages"][0]
    assert system_sent == {"role": "system", "content": system}
    assert first.output["route"] == route
    assert first.output["text"] == answer
    assert first.output["cache"] == "miss"

    again = await run_inline("answer", {"prompt": prompt, "system": system})
    assert again.output["cache"] == "hit"
    assert again.output["text"] == answer
    assert peer.count(path) == 1


async def test_model_output_is_not_rendered_by_the_next_node(tmp_path, peer):
    peer.responder = lambda protocol, body: "{{ 6*7 }}"
    flow = pipeline(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          first:
            uses: call_slm
            with: {prompt: "say braces"}
          second:
            uses: call_llm
            with:
              prompt: "Check: {{ first.text }}"
        output:
          first: "{{ first.text }}"
          second_prompt: "Check: {{ first.text }}"
        """,
    )
    result = await run_inline(flow, {})
    assert result.output == {"first": "{{ 6*7 }}", "second_prompt": "Check: {{ 6*7 }}"}
    assert user_message(peer, "/v1/chat/completions")["content"] == "Check: {{ 6*7 }}"


TYPES = """\
name: demo
version: "1"
inputs:
  n: {type: integer, default: 3}
  items: {type: list, default: [1, two, {three: 3}]}
  options: {type: object, default: {depth: 2, tags: [a, b]}}
  flag: {type: boolean, default: true}
  text: {type: string, default: "42"}
nodes:
  lookup:
    uses: cache_lookup
    with:
      key: k
      bypass: "{{ inputs.flag }}"
output:
  n: "{{ inputs.n }}"
  padded: "  {{ inputs.n }}  "
  sum: "{{ inputs.n + 1 }}"
  items: "{{ inputs.items }}"
  count: "{{ inputs.items | length }}"
  options: "{{ inputs.options }}"
  depth: "{{ inputs.options.depth }}"
  flag: "{{ inputs.flag }}"
  text: "{{ inputs.text }}"
  mixed: "n={{ inputs.n }}, depth={{ inputs.options.depth }}"
  pairs: "{% for k, v in inputs.options.items() %}{{ k }}={{ v | join('+') if v is sequence else v }};{% endfor %}"
  literal: "no templates here"
  number: 7
  nested: {list: ["{{ inputs.n }}", "x{{ inputs.n }}"], cache: "{{ lookup.cache }}"}
"""


async def test_whole_expressions_keep_their_type_and_mixed_text_is_a_string(tmp_path, peer):
    result = await run_inline(pipeline(tmp_path, TYPES), {})
    out = result.output
    assert out["n"] == 3 and type(out["n"]) is int
    assert out["padded"] == 3 and type(out["padded"]) is int
    assert out["sum"] == 4
    assert out["items"] == [1, "two", {"three": 3}]  # the input `items`, not dict.items
    assert out["count"] == 3
    assert out["options"] == {"depth": 2, "tags": ["a", "b"]}
    assert out["depth"] == 2
    assert out["flag"] is True
    assert out["text"] == "42" and type(out["text"]) is str  # data that looks like a number stays text
    assert out["mixed"] == "n=3, depth=2"
    assert out["pairs"] == "depth=2;tags=a+b;"  # methods of a mapping still work when no key shadows them
    assert out["literal"] == "no templates here"
    assert out["number"] == 7
    assert out["nested"] == {"list": [3, "x3"], "cache": "bypass"}  # the boolean reached the step as a boolean
    assert peer.count() == 0


async def test_given_inputs_keep_their_type(tmp_path, peer):
    result = await run_inline(
        pipeline(tmp_path, TYPES),
        {"items": [], "options": {"depth": 0, "tags": []}, "flag": False, "text": "[1, 2]"},
    )
    assert result.output["items"] == [] and result.output["count"] == 0
    assert result.output["depth"] == 0
    assert result.output["flag"] is False
    assert result.output["text"] == "[1, 2]"
    assert result.output["nested"]["cache"] == "miss"


async def test_mixed_text_renders_to_a_string_a_step_may_refuse(tmp_path, peer):
    flow = pipeline(
        tmp_path,
        """\
        name: demo
        version: "1"
        inputs:
          limit: {type: integer, default: 5}
        nodes:
          route:
            uses: classify
            with:
              text: hello
              max_simple_words: "about {{ inputs.limit }}"
        output: "{{ route }}"
        """,
    )
    with pytest.raises(StepError, match=r"node 'route'.*max_simple_words"):
        await run_inline(flow, {})


SKIPPED = """\
name: demo
version: "1"
inputs:
  go: {type: boolean, default: false}
nodes:
  route:
    uses: classify
    if: "{{ inputs.go }}"
    with: {text: hello}
  after:
    uses: classify
    if: "{{ route.label == 'simple' }}"
    with: {text: "{{ route.reason }}"}
output:
  label: "{{ route.label }}"
  item: "{{ route['label'] }}"
  deeper: "{{ route.label.upper }}"
  after: "{{ after }}"
  fallback: "{{ route.label or 'none' }}"
"""


async def test_attribute_access_on_a_skipped_node_is_none(tmp_path, peer):
    result = await run_inline(pipeline(tmp_path, SKIPPED), {})
    assert result.output == {"label": None, "item": None, "deeper": None, "after": None, "fallback": "none"}
    assert result.nodes["route"].status == "skipped"
    assert result.nodes["after"].status == "skipped"
    assert "route.label == 'simple'" in result.nodes["after"].reason


async def test_the_same_pipeline_reads_real_data_when_the_node_runs(tmp_path, peer):
    result = await run_inline(pipeline(tmp_path, SKIPPED), {"go": True})
    assert result.output["label"] == "simple"
    assert result.output["item"] == "simple"
    assert result.output["after"]["label"] == "simple"
    assert result.nodes["after"].status == "ran"


async def test_misspelt_key_on_real_data_names_node_and_field(tmp_path, peer):
    flow = pipeline(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          route:
            uses: classify
            with: {text: hello}
          large:
            uses: call_llm
            with:
              system: fixed
              prompt: "Route was {{ route.lable }}"
        output: "{{ large.text }}"
        """,
    )
    with pytest.raises(StepError) as caught:
        await run_inline(flow, {})
    message = str(caught.value)
    assert caught.value.node == "large"
    assert message.startswith("node 'large': with: prompt: ")
    assert "lable" in message
    assert peer.count() == 0  # the model was never called


async def test_misspelt_nested_key_names_the_path(tmp_path, peer):
    flow = pipeline(
        tmp_path,
        """\
        name: demo
        version: "1"
        inputs:
          options: {type: object, default: {max: 5}}
        nodes:
          key:
            uses: hash_prompt
            with:
              prompt: hi
              params:
                temperature: 0
                max_tokens: "{{ inputs.options.maximum }}"
        output: "{{ key }}"
        """,
    )
    with pytest.raises(StepError, match=r"^node 'key': with: params\.max_tokens: .*'maximum'"):
        await run_inline(flow, {})


async def test_misspelt_key_in_a_condition_and_in_the_output(tmp_path, peer):
    condition = pipeline(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          route:
            uses: classify
            with: {text: hello}
          after:
            uses: classify
            if: "{{ route.labell == 'simple' }}"
            with: {text: hello}
        output: "{{ after }}"
        """,
    )
    with pytest.raises(StepError, match=r"^node 'after': if: .*'labell'"):
        await run_inline(condition, {})

    output = pipeline(
        tmp_path,
        """\
        name: demo
        version: "2"
        nodes:
          route:
            uses: classify
            with: {text: hello}
        output:
          label: "{{ route.label }}"
          why: "{{ route.reasn }}"
        """,
    )
    with pytest.raises(StepError, match=r"^node 'output': why: .*'reasn'"):
        await run_inline(output, {})


FAST_CASES = [
    "inputs.prompt",
    "inputs['prompt']",
    "not lookup.hit",
    "route.label == 'simple' or (route.label == 'complex' and not small.valid)",
    "lookup.answer or store.answer",
    "(lookup.answer or store.answer).text",
    "skipped.label",
    "skipped.label == 'x'",
    "inputs.n > 3 and inputs.n <= 10",
    "'b' in inputs.tags",
    "'z' not in inputs.tags",
    "inputs.prompt if lookup.hit else 'none'",
    "[inputs.n, {'k': inputs.prompt}]",
    "inputs.missing",
    "nobody",
    "inputs.items",
]
FAST_CONTEXT = {
    "inputs": {"prompt": "hi {{ 7*7 }}", "n": 5, "tags": ["a", "b"], "items": [1, 2]},
    "lookup": {"hit": False, "answer": None},
    "store": {"answer": {"text": "stored"}},
    "route": {"label": "complex"},
    "small": {"valid": False},
    "skipped": None,
}


@pytest.mark.parametrize("expr", FAST_CASES)
def test_fast_evaluation_means_what_jinja_means(expr):
    """The closures that skip Jinja's runtime give Jinja's answers, and its errors."""
    from jinja2.exceptions import UndefinedError

    from flows.language.fast_eval import compile_node
    from flows.language.templates import ENV

    output = ENV.parse("{{ " + expr + " }}").body[0]
    fast = compile_node(output.nodes[0], ENV)
    assert fast is not None, "this expression should take the fast path"
    slow = ENV.compile_expression(expr, undefined_to_none=False)
    try:
        expected = slow(**FAST_CONTEXT)
        if hasattr(expected, "_undefined_name") or type(expected).__name__.endswith("Undefined"):
            str(expected)
    except UndefinedError:
        with pytest.raises(UndefinedError):
            fast(FAST_CONTEXT)
        return
    assert fast(FAST_CONTEXT) == expected


def test_text_with_expressions_renders_like_jinja():
    from flows.language.fast_eval import compile_text
    from flows.language.templates import ENV

    source = "{{ inputs.prompt }}/{{ inputs.n }}/{{ skipped.label }}/{{ lookup.hit }}"
    fast = compile_text(ENV.parse(source), ENV)
    assert fast is not None
    assert fast(FAST_CONTEXT) == ENV.from_string(source).render(**FAST_CONTEXT)
