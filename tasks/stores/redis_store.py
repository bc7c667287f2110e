"""Redis backend: one pooled asyncio client per URL and event loop.

redis-py's asyncio clients belong to the loop that created them, so clients are
kept per loop, and let go when their loop is closed (`tasks.loops`). Timeouts
are short and retries minimal: a cache that is down must cost a request
milliseconds, not seconds.

The timeout bounds each whole operation (`tasks.stores.deadlines`: one timer
per loop for every call in flight) rather than being redis-py's
`socket_timeout` (5 s by default since redis-py 6): that one wraps every write
in `asyncio.wait_for`, which starts a task per command, and arms a timer per
read. A cancelled command makes redis-py drop its connection, so no reply is
read out of turn.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from flows.errors import CacheError
from tasks.loops import for_loop
from tasks.stores.deadlines import Deadlines

_clients: dict[asyncio.AbstractEventLoop, dict[tuple[str, float], RedisStore]] = {}


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class RedisStore:
    name = "redis"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._deadlines = Deadlines(asyncio.get_running_loop(), timeout)
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=None,  # bounded per operation below; redis-py's default (5 s) would wrap each write in wait_for
            retry=Retry(NoBackoff(), 1),
            max_connections=64,
        )

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._deadlines.bound(self._client.execute_command("GET", key))  # `get` adds a wrapper
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode("utf-8")

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store the value and release the key's lease, in one round trip."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, value, ex=ttl)
                pipe.delete(f"{key}:lease")
                await self._deadlines.bound(pipe.execute())
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc

    async def claim(self, key: str, seconds: float) -> bool:
        """Take the lease on `key` unless someone holds it (SET NX PX)."""
        try:
            return bool(
                await self._deadlines.bound(self._client.set(f"{key}:lease", b"1", nx=True, px=max(int(seconds * 1000), 1)))
            )
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc

    async def release(self, key: str) -> None:
        try:
            await self._deadlines.bound(self._client.delete(f"{key}:lease"))
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> CacheError:
        reason = str(exc) or type(exc).__name__
        return CacheError(f"Redis at {_redact(self.url)} is unreachable: {reason}")

    async def aclose(self) -> None:
        await self._client.aclose()


def redis_store(url: str, timeout: float) -> RedisStore:
    loop = asyncio.get_running_loop()
    per_loop = for_loop(_clients, loop, dict)
    store = per_loop.get((url, timeout))
    if store is None:
        store = per_loop[(url, timeout)] = RedisStore(url, timeout)
    return store
