"""Canonical JSON, and sha256 over it (`tasks.core.request_key` builds the request key on it).

The key is a pure function of JSON-native data: sorted keys, no white space,
UTF-8, no NaN, integral floats written as ints (0.0 is 0). Never string
concatenation, never live objects, never per-run fields (run ids, timestamps).

The text is exactly what ``json.dumps(value, sort_keys=True, separators=(",",
":"), ensure_ascii=False, allow_nan=False)`` writes (a test holds them equal),
made by orjson: a 2 KB prompt costs 0.5 µs instead of 7 µs, on every request.
orjson writes floats and large integers its own way, so those go in as
`orjson.Fragment`s of the standard library's text; data orjson cannot take as
it is (keys that are not strings) is written by the standard library.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_INT64 = 2**63


class NotPlain(ValueError):
    """A value that `plain` cannot make plain for orjson (a key that is not a string): the
    standard library writes it."""


def _float(value: float) -> Any:
    """Integral floats as ints: 0.0 and 0 (256.0 and 256) ask for the same output."""
    if value.is_integer():
        return _int(int(value))
    return orjson.Fragment(json.dumps(value, allow_nan=False))


def _int(value: int) -> Any:
    return value if -_INT64 <= value < _INT64 else orjson.Fragment(str(value))


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return _int(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise NotPlain(f"a key that is not a string: {k!r}")
            out[k] = _plain(v)
        return out
    if kind is list or kind is tuple:
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):  # bool is handled above; an int subclass (an IntEnum) is written as its number
        return _int(int(value))
    if isinstance(value, dict):
        return _plain(dict(value))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _stdlib_plain(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _stdlib_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stdlib_plain(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """`value` as the canonical text writes it (see `sha256_of_plain`); raises NotPlain for non-string keys."""
    return _plain(value)


def sha256_of_plain(value: Any) -> str:
    """sha256 of a value whose parts are already plain: strings, bools, None, 64-bit ints, the results
    of `plain`, and lists and string-keyed dicts of those. The same key `sha256_of` gives, without
    walking the parts known to be plain (a 2 KB prompt's messages, on every request)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON of `value`, UTF-8 encoded."""
    try:
        return orjson.dumps(_plain(value), option=orjson.OPT_SORT_KEYS)
    except NotPlain:
        return canonical_json_stdlib(value).encode("utf-8")


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


def canonical_json_stdlib(value: Any) -> str:
    """The reference implementation, with the standard library."""
    return json.dumps(_stdlib_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


def drop_none(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters left unset do not change the output, so they do not change the key."""
    return {k: v for k, v in params.items() if v is not None}  # no need to sort: the canonical text does
