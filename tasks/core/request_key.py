"""The identity of a model request: its canonical JSON form and the sha256 key of that form.

One function, `request_identity`, makes both. Every layer that keys on a request uses it:
the prompt cache (`hash_prompt`: the pipeline's request, before routing), Prefect's result
cache of the model calls (`call_cache.RequestKey`) and single-flight of identical calls in
flight (`call_slm` / `call_llm`: the request as sent to one provider and model).

The projection hashed is

    {"k": KEY_SCHEMA, "namespace", "tier", "models", "messages", "params", "pipeline", "version"}

- `tier` is the tier asked for ("auto" lets a pipeline's router choose; a model call names
  "small" or "large") and `models` the model id of each tier that may answer.
- `messages` are already normalised (`tasks.core.records.build_messages`).
- `params` holds every parameter that changes the output; unset (None) ones are left out.
- per-run fields (run ids, timestamps) and secrets (API keys, URL userinfo) are never part of it.

The key is a pure function of JSON-native data (see `tasks.core.canonical`): the same request
gives the same key in any process, and never a live object's identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tasks.core.canonical import NotPlain, canonical_bytes, drop_none, plain

#: Bump when the projection changes meaning: every key changes with it.
KEY_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """A request's canonical JSON (UTF-8) and its sha256 hex key."""

    canonical: bytes
    key: str


def request_identity(
    *,
    namespace: str,
    tier: str,
    models: Mapping[str, str],
    messages: list[dict[str, str]],
    params: Mapping[str, Any],
    pipeline: str = "",
    version: str = "",
) -> RequestIdentity:
    """The canonical form and key of a request (see the module docstring for the projection)."""
    projection: dict[str, Any] = {
        "k": KEY_SCHEMA,
        "namespace": namespace,
        "tier": tier,
        "models": dict(models),  # the canonical text sorts keys
        "messages": messages,
        "params": drop_none(dict(params)),
        "pipeline": pipeline,
        "version": version,
    }
    try:  # only `params` may hold floats and the like: the rest is strings, walked by orjson as is
        projection["params"] = plain(projection["params"])
        data = orjson.dumps(projection, option=orjson.OPT_SORT_KEYS)
    except NotPlain:
        data = canonical_bytes(projection)
    return RequestIdentity(data, hashlib.sha256(data).hexdigest())
