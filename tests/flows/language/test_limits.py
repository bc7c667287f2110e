"""Bounded parsing, evaluation and inputs: each hostile or careless input ends in one clear error
naming the file, node or input and the limit, fast, instead of eating memory or hanging."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from flows.cli.main import parse_inputs
from flows.language import catalog
from flows.language.compiler import all_errors, load_pipeline_file
from flows.language.sandbox import MAX_INT_BITS, MAX_LENGTH, MAX_RANGE, MAX_WORK
from flows.language.templates import LimitExceeded, compile_value, evaluate
from flows.orchestration.flow import run_inline
from tasks.core.errors import InputError, SpecError, SpecErrors, StepError

VALID = """\
name: demo
version: "1"
inputs:
  prompt: {type: string}
nodes:
  key:
    uses: hash_prompt
    with:
      prompt: "{{ inputs.prompt }}"
output: "{{ key }}"
"""

BOMB = (
    'name: bomb\nversion: "1"\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
    + "nodes: {key: {uses: classify, with: {text: *j}}}\noutput: x\n"
)


def write(folder: Path, text: str, name: str = "demo.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_an_alias_bomb_is_refused_on_its_line(tmp_path):
    path = write(tmp_path, BOMB)
    with pytest.raises(SpecError) as caught:
        load_pipeline_file(path)
    assert str(caught.value).startswith(f"{path}:")
    assert "more than 100000 keys, values and items once aliases are expanded (the limit)" in str(caught.value)


def test_a_shared_block_through_an_alias_still_loads():
    pipeline = catalog.load("sentiment")  # system: &system ... / system: *system
    assert pipeline.nodes["small"].spec.with_["system"] == pipeline.nodes["key"].spec.with_["system"]


def test_nesting_deeper_than_the_limit_is_refused(tmp_path):
    deep = "{a: " * 70 + "1" + "}" * 70
    path = write(tmp_path, VALID + f"extra: {deep}\n")
    with pytest.raises(SpecError, match="nesting deeper than 64 levels"):
        load_pipeline_file(path)


def test_a_file_over_the_size_limit_is_not_read_past_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGAL_PIPELINE_MAX_BYTES", "2000")
    path = write(tmp_path, VALID + "# " + "x" * 5000 + "\n")
    with pytest.raises(SpecError, match=r"larger than 2000 bytes \(the limit\).*FRUGAL_PIPELINE_MAX_BYTES"):
        load_pipeline_file(path)
    load_pipeline_file(write(tmp_path, VALID, "small.yaml"))


def test_a_fifo_is_not_a_pipeline_file(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):  # and the open does not wait for a writer
        load_pipeline_file(fifo)


def test_an_integer_of_more_digits_than_python_converts_is_a_spec_error(tmp_path):
    path = write(tmp_path, VALID.replace('version: "1"', "version: " + "9" * 5000))
    with pytest.raises(SpecError, match="malformed YAML"):
        load_pipeline_file(path)


def test_one_bad_file_does_not_hide_the_others(tmp_path, monkeypatch):
    write(tmp_path, VALID, "good.yaml")
    write(tmp_path, BOMB, "bomb.yaml")
    write(tmp_path, "name: [unclosed\n", "broken.yaml")
    monkeypatch.setenv("FRUGAL_PIPELINES_DIR", str(tmp_path))
    found = {path.name: result for path, result in catalog.load_each()}
    assert found["good.yaml"].name == "demo"
    assert isinstance(found["bomb.yaml"], SpecError) and isinstance(found["broken.yaml"], SpecError)
    errors = {Path(f).name: e for f, e in all_errors(catalog.pipeline_paths()).items()}
    assert errors["good.yaml"] == [] and errors["bomb.yaml"] and errors["broken.yaml"]


def test_a_misspelt_step_reports_only_itself_with_a_suggestion(tmp_path):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        nodes:
          small:
            uses: call_sml
            with: {prompt: hi}
          store:
            uses: cache_store
            with: {key: k, answer: "{{ small }}"}
        output: "{{ store }}"
        """,
    )
    with pytest.raises(SpecError) as caught:
        load_pipeline_file(path)
    assert not isinstance(caught.value, SpecErrors), str(caught.value)
    assert "unknown step 'call_sml'" in str(caught.value) and "did you mean 'call_slm'?" in str(caught.value)
    assert "cycle" not in str(caught.value)


# -- expressions: nothing evaluated at load time, every operation bounded when run -----------------


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ [1] * 10**9 }}", f"more than {MAX_LENGTH} characters or items"),
        ("{{ 10 ** 1000000000 }}", f"more than {MAX_INT_BITS} bits"),
        ("{{ 'x' * 10**8 }}", f"more than {MAX_LENGTH} characters or items"),
        ("{% for i in range(100000) %}{% endfor %}", f"range() of 100000 items; the limit is {MAX_RANGE}"),
        (
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            f"more than {MAX_WORK} units of work",
        ),
        ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}", "units of work"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion too deep"),
        ("{{ 'x' | center(1000000000) }}", "center() given 1000000000"),
        ("{{ 'x'.ljust(10**9) }}", "ljust() given 1000000000"),
        ("{{ '%999999999s' % 1 }}", "format width or precision"),
        ("{{ '{:>999999999}'.format(1) }}", "format width or precision"),
        ("{{ ('a' * 1000) | replace('a', 'a' * 1000) | replace('a', 'a' * 1000) }}", "(the limit)"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "(the limit)",
        ),
        ("{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}", "longer"),
    ],
)
def test_unbounded_work_is_refused_at_evaluation_not_at_load(template, words):
    compiled = compile_value("text: " + template)  # compiling evaluates nothing
    with pytest.raises(LimitExceeded) as caught:
        evaluate(compiled, {})
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bounded_expressions_still_work():
    compiled = compile_value("{{ 2 ** 10 }} {{ [1, 2] * 2 }} {{ 'ab' ~ 'c' }} {{ range(3) | list }} {{ '%3s' % 'x' }}")
    assert evaluate(compiled, {}) == "1024 [1, 2, 1, 2] abc [0, 1, 2]   x"
    assert evaluate(compile_value("{{ inputs.n * 3 }}"), {"inputs": {"n": 2}}) == 6


def test_an_expression_longer_than_the_limit_is_a_spec_error(tmp_path):
    expression = " + ".join(["1"] * 4000)
    path = write(tmp_path, VALID.replace('output: "{{ key }}"', f'output: "{{{{ {expression} }}}}"'))
    with pytest.raises(SpecError, match=r"characters of expressions in one value; the limit is 10000"):
        load_pipeline_file(path)


def test_a_huge_expression_is_a_spec_error_not_a_crash(tmp_path):
    expression = "(" * 3000 + "1" + ")" * 3000
    path = write(tmp_path, VALID.replace('output: "{{ key }}"', f'output: "{{{{ {expression} }}}}"'))
    with pytest.raises(SpecError, match="too large or nested too deeply"):
        load_pipeline_file(path)


async def test_a_limit_met_at_run_time_names_the_node_and_field(tmp_path, peer):
    path = write(
        tmp_path,
        """\
        name: demo
        version: "1"
        inputs:
          n: {type: integer, default: 100000000}
        nodes:
          key:
            uses: hash_prompt
            with:
              prompt: "{{ 'x' * inputs.n }}"
        output: "{{ key }}"
        """,
    )
    with pytest.raises(StepError) as caught:
        await run_inline(load_pipeline_file(path), {})
    message = str(caught.value)
    assert message.startswith("node 'key': with: prompt: repeating a value to more than"), message
    assert "(the limit)" in message and peer.count() == 0


# -- inputs ----------------------------------------------------------------------------------


async def test_an_empty_or_blank_prompt_is_refused_before_any_model_call(peer):
    for prompt in ("", "  \n"):
        with pytest.raises(InputError, match="input 'prompt'"):
            await run_inline("answer", {"prompt": prompt})
    with pytest.raises(InputError, match=r"input 'max_tokens': Input should be greater than or equal to 1 \(got -5\)"):
        await run_inline("answer", {"prompt": "hi", "max_tokens": -5})
    assert peer.count() == 0


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ("n: {type: integer, min_length: 1}", "'min_length' does not apply to a integer input"),
        ("n: {type: integer, minimum: 5, maximum: 1}", "minimum 5.0 is above maximum 1.0"),
        ("n: {type: integer, default: 0, minimum: 1}", "default 0 breaks the input's own constraints"),
        ("s: {type: string, enum: [a, 1]}", "enum value 1 is not a string"),
        ("s: {type: string, pattern: '(('}", "the constraints cannot be applied"),
    ],
)
def test_bad_constraints_are_spec_errors(tmp_path, inputs, words):
    path = write(tmp_path, VALID.replace("  prompt: {type: string}", f"  prompt: {{type: string}}\n  {inputs}"))
    with pytest.raises(SpecError) as caught:
        load_pipeline_file(path)
    assert words in str(caught.value) and f"{path}:" in str(caught.value)


def test_input_files_are_bounded_and_regular(tmp_path, monkeypatch):
    text = tmp_path / "prompt.txt"
    text.write_text("What is 2+2?")
    assert parse_inputs([f"prompt=@{text}"], {"prompt": "string"}) == {"prompt": "What is 2+2?"}
    with pytest.raises(InputError, match="/dev/zero is not a regular file"):
        parse_inputs(["prompt=@/dev/zero"], {"prompt": "string"})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="is not a regular file"):  # the open does not wait for a writer
        parse_inputs([f"prompt=@{fifo}"], {"prompt": "string"})
    monkeypatch.setenv("FRUGAL_INPUT_FILE_MAX_BYTES", "5")
    with pytest.raises(InputError, match=r"larger than 5 bytes \(FRUGAL_INPUT_FILE_MAX_BYTES\)"):
        parse_inputs([f"prompt=@{text}"], {"prompt": "string"})
