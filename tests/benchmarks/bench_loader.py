"""Parsing a pipeline file: once with libyaml's composer (flows/language/loader.py) against the
former way (pure-Python `yaml.safe_load` plus two more pure-Python compositions for lines and
repeated keys), on the same ~1 MB file, in the same run; and how fast an alias bomb is refused.

    .venv/bin/python tests/benchmarks/bench_loader.py
"""

from __future__ import annotations

import statistics
import time

import yaml

from flows.language.loader import parse
from tasks.core.errors import SpecError


def big_pipeline(nodes: int) -> str:
    lines = ['name: big\nversion: "1"\ninputs:\n  prompt: {type: string}\nnodes:']
    for i in range(nodes):
        lines.append(f'  n{i}:\n    uses: hash_prompt\n    with:\n      prompt: "{{{{ inputs.prompt }}}} {"x" * 60}"')
        lines.append(f"      params: {{a: {i}, b: [1, 2, 3], c: {{d: e}}}}")
    lines.append('output: "{{ n0 }}"\n')
    return "\n".join(lines)


def former(text: str) -> None:
    yaml.safe_load(text)
    yaml.compose(text, Loader=yaml.SafeLoader)  # the line map
    yaml.compose(text, Loader=yaml.SafeLoader)  # the repeated keys


def timed(fn, *args, repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(*args)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    text = big_pipeline(4_700)
    print(f"file: {len(text.encode()) / 1e6:.2f} MB, libyaml: {yaml.__with_libyaml__}")
    old, new = timed(former, text, repeat=3), timed(parse, text)
    print(f"former (3 pure-Python parses): {old * 1000:8.0f} ms")
    print(f"now (one C composition + data + validation): {new * 1000:8.0f} ms   ({old / new:.1f}x faster)")
    bomb = 'name: b\nversion: "1"\na: &a [x,x,x,x,x,x,x,x,x]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
    )
    started = time.perf_counter()
    try:
        parse(bomb + "nodes: {}\noutput: x\n")
    except SpecError as exc:
        print(f"alias bomb (9^10 nodes expanded) refused in {(time.perf_counter() - started) * 1000:.2f} ms: {exc}")


if __name__ == "__main__":
    main()
