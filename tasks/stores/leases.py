"""Leases: one paid call per request key, across processes and workers sharing a cache.

On a miss, a caller claims the key's lease before calling a model. Another
caller that misses on the same key while the lease is held (a concurrent run,
another worker) does not call the model: it waits for the holder's answer to
appear in the cache and serves it as a hit. `cache_store` releases the lease,
whether it stored an answer or not. A holder that dies keeps its lease until
`FRUGAL_CACHE_LEASE_SECONDS` have passed; then the next caller claims it.
A cache that is down is no reason to wait: the caller goes on (fail open).
"""

from __future__ import annotations

import asyncio
import time

from tasks.core.errors import CacheError
from tasks.core.log import step_logger
from tasks.stores import AnswerStore

FIRST_POLL, MAX_POLL = 0.02, 0.5


async def claim_or_wait(store: AnswerStore, key: str, seconds: float, claimed: bool | None = None) -> bytes | None:
    """Claim `key` (return None: go and answer it) or wait for its holder's answer (return it).

    `claimed`: what the look-up's own claim came to (`AnswerStore.get_or_claim`), None if it made none.
    """
    if seconds <= 0 or claimed:
        return None
    deadline = time.monotonic() + seconds
    poll = FIRST_POLL
    waited = False
    try:
        while claimed is False or not await store.claim(key, seconds):
            claimed = None
            waited = True
            await asyncio.sleep(poll)
            poll = min(poll * 2, MAX_POLL)
            value = await store.get(key)
            if value is not None:
                return value
            if time.monotonic() > deadline:
                step_logger().warning("lease on %s outlived %.0fs; answering it here", key[-12:], seconds)
                return None
    except CacheError as exc:
        step_logger().warning("prompt cache unavailable while waiting for a lease, answering here: %s", exc)
        return None
    if waited:
        return await store.get(key)  # the holder may have stored and released just before we claimed
    return None


async def release(store: AnswerStore, key: str) -> None:
    try:
        await store.release(key)
    except CacheError as exc:
        step_logger().warning("prompt cache unavailable, lease on %s not released: %s", key[-12:], exc)
