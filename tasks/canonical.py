"""Canonical JSON and the sha256 request key built on it.

The key is a pure function of JSON-native data: sorted keys, no white space,
UTF-8, no NaN, integral floats written as ints (0.0 is 0). Never string
concatenation, never live objects, never per-run fields (run ids, timestamps).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Bump when the projection hashed by `request_key` changes meaning.
KEY_SCHEMA = 1


def _plain(value: Any) -> Any:
    """Integral floats as ints: 0.0 and 0 (256.0 and 256) ask for the same output."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def drop_none(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters left unset do not change the output, so they do not change the key."""
    return {k: v for k, v in sorted(params.items()) if v is not None}
