"""Redis backend: one pooled asyncio client per URL and event loop.

redis-py's asyncio clients belong to the loop that created them, so clients are
kept per loop, and let go when their loop is closed (`tasks.core.loops`). Timeouts
are short and retries minimal: a cache that is down must cost a request
milliseconds, not seconds.

The timeout bounds each whole operation (`tasks.stores.deadlines`: one timer
per loop for every call in flight) rather than being redis-py's
`socket_timeout` (5 s by default since redis-py 6): that one wraps every write
in `asyncio.wait_for`, which starts a task per command, and arms a timer per
read. Single commands go over `tasks.stores.redis_connections` (redis-py's
connections without the client's per-command overhead), which drops a
connection whose command was cancelled, so no reply is read out of turn.

Two Lua scripts save round trips on the misses of a cold batch: storing an
answer releases its lease in the same call, and a look-up that misses takes
the lease in the same call (`get_or_claim`). A plain GET costs a little less
than the script on a hit, so the script is used only while most recent
look-ups of this client missed. A server that refuses scripts gets the plain
commands.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError

from tasks.core.errors import CacheError
from tasks.core.loops import for_loop
from tasks.stores.deadlines import Deadlines
from tasks.stores.redis_connections import Connections

_clients: dict[asyncio.AbstractEventLoop, dict[tuple[str, float], RedisStore]] = {}

#: KEYS: answer, lease; ARGV: lease milliseconds. The answer, or 1 if the lease was taken, or 0 if someone holds it.
GET_OR_CLAIM = """
local value = redis.call('GET', KEYS[1])
if value then return value end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
#: KEYS: answer, lease; ARGV: value, ttl seconds
STORE_AND_RELEASE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""
#: the share of recent look-ups that missed above which a look-up claims the lease in the same call
MOSTLY_MISSES = 0.5


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


_REFUSED = object()


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


def _as_bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


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
        self._connections = Connections(self._client.connection_pool)  # single commands, without the client's overhead
        self._scripts: dict[str, bytes] | None = {}  # source -> sha1 once loaded; None: the server refuses scripts
        self._miss_rate = 0.0  # the share of recent look-ups that missed (`_saw`)

    async def _raw(self, *args: object) -> Any:
        """One command within the deadline, its errors as redis-py raised them."""
        return await self._deadlines.bound(self._connections.call(*args))

    async def _command(self, *args: object) -> object:
        """One command within the deadline; a failure of any kind is the cache being unreachable."""
        try:
            return await self._raw(*args)
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _saw(self, missed: bool) -> None:
        """Move the miss rate: an average over about the last 16 look-ups."""
        self._miss_rate = self._miss_rate * (15 / 16) + (1 / 16 if missed else 0.0)

    async def get(self, key: str) -> bytes | None:
        return _as_bytes(await self._command("GET", key))

    async def get_or_claim(self, key: str, seconds: float) -> tuple[bytes | None, bool | None]:
        """The value under `key`, or None and whether the key's lease was taken now (None: not tried)."""
        if self._miss_rate <= MOSTLY_MISSES or self._scripts is None:
            value = await self.get(key)
            self._saw(value is None)
            return value, None
        answer = await self._script(GET_OR_CLAIM, (key, f"{key}:lease"), (_ms(seconds),))
        if answer is _REFUSED:
            return await self.get_or_claim(key, seconds)
        self._saw(isinstance(answer, int))
        if isinstance(answer, int):
            return None, bool(answer)
        return _as_bytes(answer), None

    async def _script(self, source: str, keys: tuple[str, ...], args: tuple[object, ...]) -> object:
        """Run a Lua script by its digest (loading it first); `_REFUSED` if the server does not run scripts."""
        scripts = self._scripts
        assert scripts is not None
        try:
            for attempt in (0, 1):
                sha = scripts.get(source)
                if sha is None:
                    sha = scripts[source] = await self._raw("SCRIPT", "LOAD", source)
                try:
                    return await self._raw("EVALSHA", sha, len(keys), *keys, *args)
                except NoScriptError:  # the server restarted or flushed its scripts: load it again, once
                    scripts.pop(source, None)
                    if attempt:
                        raise
        except ResponseError as exc:
            refused = isinstance(exc, NoPermissionError) or "unknown command" in str(exc).lower()
            if isinstance(exc, NoScriptError) or not refused:
                raise self._unreachable(exc) from exc
            self._scripts = None  # e.g. scripting disabled or not permitted: the plain commands from now on
            return _REFUSED
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc
        raise AssertionError("unreachable")

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store the value and release the key's lease, in one round trip."""
        if self._scripts is not None:
            if await self._script(STORE_AND_RELEASE, (key, f"{key}:lease"), (value, ttl)) is not _REFUSED:
                return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, value, ex=ttl)
                pipe.delete(f"{key}:lease")
                await self._deadlines.bound(pipe.execute())
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc

    async def claim(self, key: str, seconds: float) -> bool:
        """Take the lease on `key` unless someone holds it (SET NX PX)."""
        return await self._command("SET", f"{key}:lease", b"1", "NX", "PX", _ms(seconds)) is not None

    async def release(self, key: str) -> None:
        await self._command("DEL", f"{key}:lease")

    def _unreachable(self, exc: Exception) -> CacheError:
        reason = str(exc) or type(exc).__name__
        return CacheError(f"Redis at {_redact(self.url)} is unreachable: {reason}")

    async def aclose(self) -> None:
        await self._connections.aclose()
        await self._client.aclose()


def redis_store(url: str, timeout: float) -> RedisStore:
    loop = asyncio.get_running_loop()
    per_loop = for_loop(_clients, loop, dict)
    store = per_loop.get((url, timeout))
    if store is None:
        store = per_loop[(url, timeout)] = RedisStore(url, timeout)
    return store
