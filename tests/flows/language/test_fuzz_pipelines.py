"""Property-based fuzzing of the pipeline language: generated pipeline files, expressions and inputs.

The property: whatever the file, the expressions or the inputs, only our own errors (`FrugalError`
subclasses) come out, each example within a time and memory bound. Generated are: YAML structures
close to valid pipelines (random node graphs over real and misspelt steps, cycles, self and unknown
references), expressions that mix the safe subset with the dangerous ones (huge powers and
repetitions, nested range loops, recursive macros, format widths, alias bombs), raw YAML text with
anchors, aliases and broken syntax, and random inputs. A pipeline that compiles is run inline when
its steps are pure (no model, cache or file).

The examples run in a child process with an address-space limit (`RLIMIT_AS`), each under a
SIGALRM deadline, so a hang or a memory blow-up fails the test instead of the machine; the child
prints one line of figures (examples, outcomes, slowest example, peak memory).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import string
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
#: seconds one example may take (a busy 2-core machine: the slowest legitimate case is ~1.5 s)
EXAMPLE_SECONDS = 10.0
#: the child's address-space limit; Python, pydantic, Jinja and Prefect's import take ~1.2 GB of it
MEMORY_BYTES = 3 * 1024**3
EXAMPLES = int(os.environ.get("FRUGAL_FUZZ_EXAMPLES", "750"))  # per property: 1,500 pipelines in all

PURE_STEPS = ("hash_prompt", "classify", "split_text")
OTHER_STEPS = ("cache_lookup", "cache_store", "call_slm", "call_llm", "read_document", "write_summary")
MISSPELT = ("call_sml", "hash_promt", "clasify", "", "os.system", "__import__", "HASH_PROMPT")

# -- expressions ------------------------------------------------------------------------------

NAMES = ("inputs.prompt", "inputs.n", "inputs.items", "inputs.missing", "settings.slm.model", "pipeline.name", "item")
SAFE_PIECES = (
    "1",
    "-3",
    "0.5",
    "'text'",
    "[1, 2, 3]",
    "{'a': 1}",
    "none",
    "true",
    "'%s-%d' % ('a', 2)",
    "'{}!'.format('hi')",
    "(inputs.prompt or '') | upper",
    "inputs.items | join(',')",
    "range(5) | list",
    "inputs.prompt | length",
)
DANGEROUS = (
    "10 ** 1000000000",
    "[1] * 10**9",
    "'x' * 10**8",
    "2 ** 2 ** 2 ** 2 ** 2",
    "(inputs.n or 1) ** 99999999",
    "'x' * (inputs.n or 1) * 10**7",
    "range(10**9)",
    "range(100000) | list",
    "'x' | center(10**9)",
    "'x'.ljust(999999999)",
    "'%999999999d' % 1",
    "'{:>999999999}'.format(1)",
    "'{:{}}'.format(1, 10**9)",
    "('a' * 1000) | replace('a', 'a' * 1000)",
    "'a\\n' * 100000 | indent(100000)",
    "[[1] * 1000] * 1000 | sum(start=[])",
    "lipsum(10**9)",
    "().__class__",
    "inputs.__class__.__mro__",
    "self",
    "cycler(1, 2).next()",
    "namespace(a=1)",
    "(" * 200 + "1" + ")" * 200,
    "1" + " + 1" * 2000,
)
STATEMENTS = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
    "{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% if inputs.n %}{{ inputs.n }}{% else %}none{% endif %}",
    "{% import 'x' as y %}",
    "{% include 'x' %}",
    "{% raw %}{{ not rendered }}{% endraw %}",
    "{% for",
    "{{ unclosed",
    "}} {{",
)
OPERATORS = (" + ", " - ", " * ", " / ", " // ", " % ", " ** ", " ~ ", " and ", " or ", " == ", " < ", " in ")


@st.composite
def expressions(draw: st.DrawFn, nodes: tuple[str, ...] = ()) -> str:
    atoms = st.sampled_from(NAMES + SAFE_PIECES + DANGEROUS + tuple(f"{n}.text" for n in nodes) + nodes)
    parts = [draw(atoms)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(st.sampled_from(OPERATORS)), draw(atoms)]
    expression = "".join(parts)
    if draw(st.booleans()):
        expression = f"({expression}) | {draw(st.sampled_from(['string', 'list', 'length', 'tojson', 'join', 'first', 'upper']))}"
    return expression


@st.composite
def template_values(draw: st.DrawFn, nodes: tuple[str, ...] = ()) -> Any:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return "{{ " + draw(expressions(nodes)) + " }}"
    if kind == 1:
        return draw(st.text(max_size=20)) + "{{ " + draw(expressions(nodes)) + " }}" + draw(st.text(max_size=20))
    if kind == 2:
        return draw(st.sampled_from(STATEMENTS))
    if kind == 3:
        return draw(st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.text(max_size=30)))
    if kind == 4:
        return [draw(template_values(nodes)) for _ in range(draw(st.integers(0, 3)))]
    if kind == 5:
        return {draw(st.sampled_from(["prompt", "text", "x", "_y"])): draw(template_values(nodes)) for _ in range(2)}
    return draw(st.text(alphabet=string.printable, max_size=40))


# -- pipeline structures -----------------------------------------------------------------------

ARG_NAMES = ("prompt", "text", "system", "namespace", "params", "max_words", "task", "key", "answer", "bogus")
INPUT_TYPES = ("string", "integer", "number", "boolean", "list", "object", "float")


@st.composite
def input_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": draw(st.sampled_from(INPUT_TYPES))}
    for key, values in (
        ("default", st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5), st.booleans())),
        ("min_length", st.integers(-1, 5)),
        ("max_length", st.integers(0, 5)),
        ("minimum", st.integers(-5, 5)),
        ("maximum", st.integers(-5, 5)),
        ("pattern", st.sampled_from([r"\S", "((", "^a", "[a-z]+"])),
        ("enum", st.lists(st.one_of(st.text(max_size=3), st.integers(0, 3)), max_size=3)),
        ("colour", st.just("red")),
    ):
        if draw(st.integers(0, 4)) == 0:
            spec[key] = draw(values)
    return spec


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, Any]:
    names = tuple(
        draw(
            st.lists(
                st.sampled_from(["a", "b", "c", "key", "route", "small", "in-valid", "_x", "inputs"]),
                min_size=1,
                max_size=5,
                unique=True,
            )
        )
    )
    nodes: dict[str, Any] = {}
    for name in names:
        node: dict[str, Any] = {"uses": draw(st.sampled_from(PURE_STEPS + PURE_STEPS + OTHER_STEPS + MISSPELT))}
        args = draw(st.lists(st.sampled_from(ARG_NAMES), max_size=3, unique=True))
        node["with"] = {arg: draw(template_values(names)) for arg in args}
        if draw(st.integers(0, 3)) == 0:
            node["if"] = draw(st.one_of(st.booleans(), expressions(names).map(lambda e: "{{ " + e + " }}")))
        if draw(st.integers(0, 5)) == 0:
            node["for_each"] = "{{ " + draw(expressions(names)) + " }}"
        if draw(st.integers(0, 6)) == 0:
            node[draw(st.sampled_from(["retries", "timeout_seconds", "cache_ttl", "on_error", "chunk_size", "colour"]))] = draw(
                st.one_of(st.integers(-2, 30), st.text(max_size=5))
            )
        nodes[name] = node
    spec: dict[str, Any] = {
        "name": draw(st.sampled_from(["fuzz", "Fuzz", "fuzz-1", ""])),
        "version": draw(st.one_of(st.just("1"), st.integers(0, 3), st.none())),
        "inputs": {
            k: draw(input_specs())
            for k in draw(st.lists(st.sampled_from(["prompt", "n", "items", "wait_for", "9x"]), max_size=3, unique=True))
        },
        "nodes": nodes,
        "output": draw(template_values(names)),
    }
    for key in draw(st.lists(st.sampled_from(list(spec)), max_size=1)):
        del spec[key]
    return spec


@st.composite
def pipeline_texts(draw: st.DrawFn) -> str:
    """YAML text: a dumped structure, sometimes with an alias bomb, deep nesting or a broken line spliced in."""
    text = yaml.safe_dump(draw(pipelines()), sort_keys=False, allow_unicode=True, width=10**6)
    splice = draw(st.integers(0, 8))
    if splice == 0:
        text += "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(draw(st.integers(1, 12)))
        )
    elif splice == 1:
        depth = draw(st.integers(10, 3000))
        text += "deep: " + "[" * depth + "]" * depth + "\n"
    elif splice == 2:
        text += "loop: &l\n  self: *l\n"
    elif splice == 3:
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines)))
        lines.insert(
            at,
            draw(
                st.sampled_from(
                    ["\t- x", ": :", "- [", "&a", "*undefined", "!!python/object:os.system x", "%YAML 9.9", "---\n---"]
                )
            ),
        )
        text = "\n".join(lines) + "\n"
    elif splice == 4:
        text += "version: " + "9" * draw(st.integers(1, 6000)) + "\n"
    elif splice == 5:
        text = draw(st.text(max_size=200))
    return text


@st.composite
def run_inputs(draw: st.DrawFn) -> dict[str, Any]:
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=True),
        st.text(max_size=50),
        st.lists(st.text(max_size=5), max_size=5),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    )
    return draw(st.dictionaries(st.sampled_from(["prompt", "n", "items", "extra", "wait_for"]), values, max_size=4))


# -- the property, run in the child --------------------------------------------------------------


class Overtime(Exception):
    """An example ran past EXAMPLE_SECONDS: a hang the limits did not stop."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def ring(signum: int, frame: object) -> None:
        raise Overtime(f"an example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


OUTCOMES: Counter[str] = Counter()
SLOWEST = [0.0]
CHECKING = [0.0]


def check_one(text: str, inputs: dict[str, Any]) -> None:
    """Parse, compile and (pure steps only) run one generated pipeline: only FrugalErrors may come out."""
    from flows.language.compiler import compile_spec
    from flows.language.loader import parse
    from flows.orchestration.flow import run_inline
    from tasks.core.errors import FrugalError

    started = time.perf_counter()
    with deadline(EXAMPLE_SECONDS):
        try:
            spec, lines = parse(text, "fuzz.yaml")
            pipeline = compile_spec(spec, "fuzz.yaml", lines)
            OUTCOMES["compiled"] += 1
            if all(node.step.name in PURE_STEPS for node in pipeline.nodes.values()):
                asyncio.run(run_inline(pipeline, inputs))
                OUTCOMES["ran"] += 1
        except FrugalError as exc:
            OUTCOMES[type(exc).__name__] += 1
    took = time.perf_counter() - started
    SLOWEST[0] = max(SLOWEST[0], took)
    CHECKING[0] += took


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the SIGALRM deadline bounds each example; hypothesis's own would only report afterwards
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("FRUGAL_FUZZ_SEED") is None,
)


@FUZZ_SETTINGS
@given(pipeline_texts(), run_inputs())
def fuzz_pipeline_files(text: str, inputs: dict[str, Any]) -> None:
    check_one(text, inputs)


@FUZZ_SETTINGS
@given(expressions(), run_inputs())
def fuzz_expressions(expression: str, inputs: dict[str, Any]) -> None:
    """One expression as the output of a valid pipeline, run with random inputs."""
    spec = {
        "name": "fuzz",
        "version": "1",
        "inputs": {
            "prompt": {"type": "string", "default": None},
            "n": {"type": "integer", "default": 3},
            "items": {"type": "list", "default": ["a"]},
        },
        "nodes": {"key": {"uses": "hash_prompt", "with": {"prompt": "{{ " + expression + " }}"}}},
        "output": "{{ " + expression + " }}",
    }
    valid = {k: v for k, v in inputs.items() if k in ("prompt", "n", "items")}
    check_one(yaml.safe_dump(spec, width=10**6), valid)


def main() -> None:
    """Run every fuzz property; print one line of figures as JSON."""
    started = time.perf_counter()
    import flows.orchestration.flow  # noqa: F401 (imported once, before the clock of any example starts)

    fuzz_pipeline_files()
    fuzz_expressions()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "examples": 2 * EXAMPLES,
        "outcomes": dict(OUTCOMES.most_common()),
        "slowest_example_s": round(SLOWEST[0], 3),
        "checking_s": round(CHECKING[0], 1),
        "peak_rss_mb": round(peak_mb),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print("FUZZ " + json.dumps(figures))


# -- the test --------------------------------------------------------------------------------


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def test_generated_pipelines_and_inputs_raise_only_our_errors_within_bounds(tmp_path):
    env = {**os.environ, "FRUGAL_DATA_DIR": str(tmp_path), "FRUGAL_LEDGER_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", "from tests.flows.language.test_fuzz_pipelines import main; main()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_limit_memory,
        timeout=600,  # a backstop: each example has its own deadline
    )
    figures = [line for line in done.stdout.splitlines() if line.startswith("FUZZ ")]
    assert done.returncode == 0 and figures, done.stdout[-3000:] + done.stderr[-6000:]
    print(figures[0])
    outcomes = json.loads(figures[0][5:])["outcomes"]
    assert outcomes.get("compiled", 0) > 0 and outcomes.get("SpecError", 0) + outcomes.get("SpecErrors", 0) > 0


if __name__ == "__main__":
    pytest.main([__file__, "-s"])
