"""Canonical JSON and the sha256 request key built on it.

The key is a pure function of JSON-native data: sorted keys, no white space,
UTF-8, no NaN. Never string concatenation, never live objects, never per-run
fields (run ids, timestamps).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Bump when the projection hashed by `request_key` changes meaning.
KEY_SCHEMA = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def drop_none(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters left unset do not change the output, so they do not change the key."""
    return {k: v for k, v in sorted(params.items()) if v is not None}
