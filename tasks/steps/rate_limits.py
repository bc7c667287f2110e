"""Each model call's rate-limit gate: its model's limits (FRUGAL_LIMITS), its bucket (the cache's
Redis when FRUGAL_CACHE_URL is one, shared by every process on it; else this process's own) and its
in-flight limit (`tasks.providers.limits`). The one place that wires the providers' limits to the stores.
"""

from __future__ import annotations

import fnmatch

from tasks.core.redact import public_url
from tasks.core.settings import ModelLimit, Settings
from tasks.core.tokens import count_tokens
from tasks.providers.base import ChatCall
from tasks.providers.limits import DEFAULT_CONCURRENCY, LOCAL, Buckets, Gate, SharedOrLocal, adaptive_for
from tasks.stores import REDIS_SCHEMES
from tasks.stores.rate_buckets import redis_buckets
from tasks.stores.redis_store import redis_store

_tables: dict[int, tuple[Settings, dict[str, ModelLimit]]] = {}


def limit_for(settings: Settings, model_id: str) -> ModelLimit | None:
    """The limits FRUGAL_LIMITS sets for `model_id` (``provider/model``): its own entry, else the first glob that matches."""
    kept = _tables.get(id(settings.limits))
    if kept is None or kept[0] is not settings:
        kept = (settings, settings.limits.table())
        _tables.clear()  # one snapshot's table at a time
        _tables[id(settings.limits)] = kept
    table = kept[1]
    found = table.get(model_id)
    if found is not None:
        return found
    return next((limit for pattern, limit in table.items() if fnmatch.fnmatchcase(model_id, pattern)), None)


def buckets_for(settings: Settings) -> Buckets:
    """The cache's Redis (falling back to this process's buckets while it is down), else this process's buckets."""
    url = settings.cache.url.strip()
    if url.startswith(REDIS_SCHEMES):
        store = redis_store(url, settings.cache.timeout)
        return SharedOrLocal(redis_buckets(store, settings.cache.prefix), public_url(url))
    return LOCAL


def estimate_tokens(call: ChatCall, model_id: str) -> int:
    """What a call counts for against tokens per minute before it is made: its prompt, and all it may answer."""
    return count_tokens((m.get("content") or "" for m in call.messages), model_id) + call.max_tokens


def gate_for(settings: Settings, model_id: str, call: ChatCall) -> Gate:
    """The gate a call to `model_id` goes through: always the adaptive in-flight limit, a bucket when rpm or tpm is set."""
    limit = limit_for(settings, model_id)
    if limit is None:
        return Gate(model_id, adaptive_for(model_id, DEFAULT_CONCURRENCY))
    paced = bool(limit.rpm or limit.tpm)
    return Gate(
        model_id,
        adaptive_for(model_id, limit.concurrency),
        buckets_for(settings) if paced else None,
        key=model_id,
        rpm=limit.rpm,
        tpm=limit.tpm,
        burst=limit.burst,
        estimate=estimate_tokens(call, model_id) if limit.tpm else 0,
    )
