"""The Redis store's scripts: fewer round trips for the misses of a cold batch.

- Once most recent look-ups missed, a look-up that misses takes the request's
  lease in the same call; while they hit, a look-up is a plain GET.
- Storing an answer releases its lease in the same call.
- Scripts the server forgot (restart, SCRIPT FLUSH) are loaded again.
- A server that refuses scripts (here: an ACL user without @scripting) gets the
  plain commands, and the cache works as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tasks.stores.redis_store import RedisStore
from tests.conftest import REDIS_URL


@pytest.fixture
def prefix(redis_cache: redis.Redis) -> str:
    return os.environ["FRUGAL_CACHE_PREFIX"]


async def test_a_miss_claims_the_lease_in_the_same_call_once_most_lookups_miss(redis_cache: redis.Redis, prefix: str) -> None:
    store = RedisStore(REDIS_URL, 1.0)
    try:
        await store.set(f"{prefix}:hot", b"v", 60)
        for _ in range(20):  # look-ups that hit are plain GETs; a miss among them claims nothing
            assert await store.get_or_claim(f"{prefix}:hot", 5) == (b"v", None)
        assert await store.get_or_claim(f"{prefix}:cold0", 5) == (None, None)
        assert redis_cache.exists(f"{prefix}:cold0:lease") == 0

        for i in range(1, 20):  # a run of misses
            await store.get_or_claim(f"{prefix}:cold{i}", 5)
        assert await store.get_or_claim(f"{prefix}:new", 5) == (None, True)
        assert 4000 < redis_cache.pttl(f"{prefix}:new:lease") <= 5000
        assert await store.get_or_claim(f"{prefix}:new", 5) == (None, False)  # held: its holder answers it

        await store.set(f"{prefix}:new", b"answer", 60)  # stores and releases the lease in one call
        assert redis_cache.exists(f"{prefix}:new:lease") == 0 and 50 < redis_cache.ttl(f"{prefix}:new") <= 60
        assert await store.get_or_claim(f"{prefix}:new", 5) == (b"answer", None)
    finally:
        await store.aclose()


async def test_scripts_the_server_forgot_are_loaded_again(redis_cache: redis.Redis, prefix: str) -> None:
    store = RedisStore(REDIS_URL, 1.0)
    try:
        await store.set(f"{prefix}:a", b"1", 60)
        redis_cache.script_flush()
        await store.set(f"{prefix}:b", b"2", 60)
        assert redis_cache.get(f"{prefix}:b") == b"2"
    finally:
        await store.aclose()


@pytest.fixture
def no_script_url(redis_cache: redis.Redis) -> Iterator[str]:
    """A Redis user that may run every command but scripts."""
    user = "frugal-test-noscript"
    redis_cache.acl_setuser(user, enabled=True, passwords=["+no-script-pass"], keys=["*"], commands=["+@all", "-@scripting"])
    try:
        yield REDIS_URL.replace("redis://", f"redis://{user}:no-script-pass@", 1)
    finally:
        redis_cache.acl_deluser(user)


async def test_a_server_that_refuses_scripts_gets_plain_commands(
    redis_cache: redis.Redis, prefix: str, no_script_url: str
) -> None:
    store = RedisStore(no_script_url, 1.0)
    try:
        await store.set(f"{prefix}:plain", b"answer", 60)
        assert redis_cache.get(f"{prefix}:plain") == b"answer"
        for i in range(20):  # mostly misses: it would claim in the look-up, but cannot
            assert await store.get_or_claim(f"{prefix}:none{i}", 5) == (None, None)
        assert await store.claim(f"{prefix}:none0", 5) is True
        assert await store.get_or_claim(f"{prefix}:plain", 5) == (b"answer", None)
    finally:
        await store.aclose()
