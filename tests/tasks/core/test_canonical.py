"""Canonical JSON: orjson's fast path writes exactly what the standard library writes."""

from __future__ import annotations

import enum
import math
import random
from typing import Any

import pytest

from tasks.core.canonical import canonical_json, canonical_json_stdlib, sha256_of

TEXTS = [
    "",
    "plain",
    "é à ç",
    "line\nbreak\ttab\r",
    "\x00\x01\x1f\x7f",
    '"quoted" \\ back',
    "\u2028\u2029",
    "日本語",
    "😀",
    "</script>",
]
FLOATS = [0.0, -0.0, 1.0, 256.0, 0.1, 0.7, 1e-5, 1.5e-7, 123456789.123, 1e16, 1.5e300, -2.5, 3.141592653589793, 1e22, 2.0**70]
INTS = [0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(8 if depth < 3 else 5)
    if pick == 0:
        return rng.choice(TEXTS) + "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(5)))
    if pick == 1:
        return rng.choice(FLOATS) * rng.choice([1, -1])
    if pick == 2:
        return rng.choice(INTS)
    if pick == 3:
        return rng.choice([True, False, None])
    if pick == 4:
        return rng.uniform(-1e6, 1e6)
    if pick == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if pick == 6:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    return {rng.choice(TEXTS) + str(i): _random_value(rng, depth + 1) for i in range(rng.randrange(5))}


def test_fast_path_writes_what_the_standard_library_writes():
    rng = random.Random(20261126)
    for _ in range(3000):
        value = {"v": _random_value(rng)}
        assert canonical_json(value) == canonical_json_stdlib(value), value


@pytest.mark.parametrize("value", FLOATS + INTS + TEXTS)
def test_every_scalar_is_written_alike(value):
    assert canonical_json([value, {"x": value}]) == canonical_json_stdlib([value, {"x": value}])


def test_integral_floats_are_ints():
    assert canonical_json({"t": 0.0, "m": 256.0}) == '{"m":256,"t":0}'
    assert sha256_of({"t": 0.0}) == sha256_of({"t": 0})


def test_keys_that_are_not_strings_are_written_by_the_standard_library():
    value = {"x": {1: "a", 2: "b"}, "y": {2.5: True}}
    assert canonical_json(value) == canonical_json_stdlib(value) == '{"x":{"1":"a","2":"b"},"y":{"2.5":true}}'


def test_subclasses_are_written_as_their_base_values():
    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    value = {"c": Colour.RED, "n": Name("x")}
    assert canonical_json(value) == canonical_json_stdlib(value) == '{"c":1,"n":"x"}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ValueError):
        canonical_json({"x": bad})
    with pytest.raises(ValueError):
        canonical_json_stdlib({"x": bad})


def test_objects_that_are_not_json_are_refused():
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_the_request_key_skips_the_walk_but_not_the_text():
    from tasks.core.records import build_messages
    from tasks.steps.hash_prompt import HashRequest, request_key

    rng = random.Random(7)
    for params in [{}, {"temperature": 0.0, "max_tokens": 256.0}, {"t": 1e-5, "big": 2**70}, {"schema": {1: "a"}}]:
        params = {**params, "extra": _random_value(rng)}
        request = HashRequest(namespace="n", models={"small": "a/b"}, system="s", prompt="p é", params=params)
        projection = {
            "k": 1,
            "namespace": "n",
            "tier": "auto",
            "models": {"small": "a/b"},
            "messages": build_messages("s", "p é", None),
            "params": {k: v for k, v in sorted(params.items()) if v is not None},
            "pipeline": "",
            "version": "",
        }
        assert request_key(request) == sha256_of(projection), params
