"""Redis backend: one redis-py asyncio client (`redis.asyncio.Redis`, pooled) per URL and event loop.

The pool is redis-py's plain `ConnectionPool` (a connection per command in flight, kept
for reuse): its `BlockingConnectionPool` cost ~15 % more CPU per GET here.

redis-py's asyncio clients belong to the loop that created them, so clients are
kept per loop, and let go when their loop is closed (`tasks.core.loops`).

Two deadlines, because a slow reply and a down cache are different things:

- **down** (`FRUGAL_CACHE_TIMEOUT`, 0.5 s by default): connecting takes at most
  that long (redis-py's `socket_connect_timeout`); a refused or reset connection
  fails at once. Either is a `CacheError`: the cache steps make it a logged miss
  (`cache: error`). Retries are minimal (one, without backoff), so a cache that
  is down costs a request milliseconds.
- **slow** (past `FRUGAL_CACHE_TIMEOUT`, up to `PATIENCE` times it): a command
  on a live connection whose reply comes late, usually because the event loop
  was busy elsewhere (a loaded `frugal serve`), is waited for and served, and a
  warning says the read was slow (at most one line per `SAY_EVERY` seconds). A
  hit stays a hit: it is not turned into a paid model call. Only a reply later
  than `PATIENCE` x `FRUGAL_CACHE_TIMEOUT` (a Redis that accepts connections but
  hangs) is a `CacheError`; such a Redis costs each request that long.

The bound is one `asyncio.timeout` around each whole operation (connection
from the pool, send, reply); a cancelled command's connection is closed by
redis-py, so no reply is ever read out of turn.

Two Lua scripts save round trips on the misses of a cold batch: storing an
answer releases its lease in the same call, and a look-up that misses takes
the lease in the same call (`get_or_claim`). A plain GET costs a little less
than the script on a hit, so the script is used only while most recent
look-ups of this client missed. Scripts go through redis-py's `register_script`
(loaded again if the server forgot them); a server that refuses scripts gets
the plain commands.

**Reads in one turn of the event loop go in one MGET.** `get` queues its key; the first key of a
turn starts a task that sends all the keys queued by then (those asked for in the same turn) in
one MGET, and hands each caller its value (or the `CacheError`). A lone look-up (the gateway's
one request) waits one turn of the loop for it, microseconds. A batch rerun has tens of
look-ups in flight: redis-py spent ~100 us of CPU per GET on 64 concurrent GETs (a pooled
connection and a reply parse each), ~10-15 us per key in one MGET of 64
(`redis-py` 6.x on this 2-core host); on the inline all-cached rerun of 2,000 documents it was
~8 % of the CPU per document, and one command to Redis instead of one per document.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError

from tasks.core.errors import CacheError
from tasks.core.log import step_logger
from tasks.core.loops import for_loop

T = TypeVar("T")

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
#: a reply is waited for up to this many times FRUGAL_CACHE_TIMEOUT before the cache counts as hung
PATIENCE = 10
#: seconds between two warnings about slow reads (the count in between is in the next one)
SAY_EVERY = 10.0
#: most keys in one MGET (Redis answers no one else while it runs a command)
MGET_KEYS = 256


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
        self.patience = timeout * PATIENCE
        pool = aioredis.ConnectionPool.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=None,  # bounded per operation (`_bounded`), not per socket read
            retry=Retry(NoBackoff(), 1),
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._get_or_claim = self._client.register_script(GET_OR_CLAIM)
        self._store_and_release = self._client.register_script(STORE_AND_RELEASE)
        self._scripts = True  # False once the server refused them
        self._miss_rate = 0.0  # the share of recent look-ups that missed (`_saw`)
        self._slow = 0  # slow reads not reported yet
        self._said = 0.0  # when slow reads were last reported
        self._wanted: list[tuple[str, asyncio.Future[bytes | None]]] = []  # keys queued for the next MGET
        self._reading: set[asyncio.Task[None]] = set()  # MGETs in flight (held: the loop keeps weak references)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """Await one operation: a late reply is served (and reported), a hung one is a CacheError."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.patience):
                result = await call
        except TimeoutError as exc:
            raise CacheError(f"Redis at {_redact(self.url)} is hung: no reply within {self.patience:g}s") from exc
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from exc
        took = time.monotonic() - started
        if took > self.timeout:
            self._slow_read(took)
        return result

    def _slow_read(self, took: float) -> None:
        self._slow += 1
        now = time.monotonic()
        if now - self._said >= SAY_EVERY:
            step_logger().warning(
                "prompt cache: %d slow read(s), the last %.2fs (FRUGAL_CACHE_TIMEOUT=%gs), served all the same; "
                "a busy event loop or a loaded Redis",
                self._slow,
                took,
                self.timeout,
            )
            self._slow, self._said = 0, now

    def _saw(self, missed: bool) -> None:
        """Move the miss rate: an average over about the last 16 look-ups."""
        self._miss_rate = self._miss_rate * (15 / 16) + (1 / 16 if missed else 0.0)

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, read in one MGET with the other keys asked for in this turn of the loop."""
        loop = asyncio.get_running_loop()
        value: asyncio.Future[bytes | None] = loop.create_future()
        self._wanted.append((key, value))
        if len(self._wanted) == 1:  # the first of this turn: the MGET starts in the next one
            reading = loop.create_task(self._read_wanted())
            self._reading.add(reading)
            reading.add_done_callback(self._reading.discard)
        return await value

    async def _read_wanted(self) -> None:
        wanted, self._wanted = self._wanted, []
        for start in range(0, len(wanted), MGET_KEYS):
            part = wanted[start : start + MGET_KEYS]
            try:
                values = await self._bounded(self._client.mget([key for key, _ in part]))
            except CacheError as exc:
                for _, value in part:
                    if not value.done():  # a caller cancelled meanwhile needs nothing
                        value.set_exception(exc)
                continue
            for (_, value), got in zip(part, values, strict=True):
                if not value.done():
                    value.set_result(_as_bytes(got))

    async def get_or_claim(self, key: str, seconds: float) -> tuple[bytes | None, bool | None]:
        """The value under `key`, or None and whether the key's lease was taken now (None: not tried)."""
        if self._miss_rate <= MOSTLY_MISSES or not self._scripts:
            value = await self.get(key)
            self._saw(value is None)
            return value, None
        answer = await self._script(self._get_or_claim, (key, f"{key}:lease"), (_ms(seconds),))
        if answer is _REFUSED:
            return await self.get_or_claim(key, seconds)
        self._saw(isinstance(answer, int))
        if isinstance(answer, int):
            return None, bool(answer)
        return _as_bytes(answer), None

    async def _script(self, script: Any, keys: tuple[str, ...], args: tuple[object, ...]) -> object:
        """Run a registered Lua script; `_REFUSED` if the server does not run scripts."""
        try:
            return await self._bounded(script(keys=keys, args=args))
        except CacheError as exc:
            cause = exc.__cause__
            refused = isinstance(cause, NoPermissionError) or (
                isinstance(cause, ResponseError)
                and not isinstance(cause, NoScriptError)
                and "unknown command" in str(cause).lower()
            )
            if not refused:
                raise
            self._scripts = False  # e.g. scripting disabled or not permitted: the plain commands from now on
            return _REFUSED

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store the value and release the key's lease, in one round trip."""
        if self._scripts and await self._script(self._store_and_release, (key, f"{key}:lease"), (value, ttl)) is not _REFUSED:
            return

        async def plain() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, value, ex=ttl)
                pipe.delete(f"{key}:lease")
                await pipe.execute()

        await self._bounded(plain())

    def register_script(self, source: str) -> Any:
        """A Lua script on this client (redis-py's `register_script`: sent again if the server forgot it)."""
        return self._client.register_script(source)

    async def run_script(self, script: Any, keys: tuple[str, ...], args: tuple[object, ...]) -> object:
        """Run a registered script, bounded like every command: a `CacheError` when Redis cannot run it."""
        return await self._bounded(script(keys=keys, args=args))

    async def claim(self, key: str, seconds: float) -> bool:
        """Take the lease on `key` unless someone holds it (SET NX PX)."""
        return bool(await self._bounded(self._client.set(f"{key}:lease", b"1", nx=True, px=_ms(seconds))))

    async def release(self, key: str) -> None:
        await self._bounded(self._client.delete(f"{key}:lease"))

    def _unreachable(self, exc: BaseException) -> CacheError:
        reason = str(exc) or type(exc).__name__
        return CacheError(f"Redis at {_redact(self.url)} is unreachable: {reason}")

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._client.connection_pool.disconnect()


def redis_store(url: str, timeout: float) -> RedisStore:
    loop = asyncio.get_running_loop()
    per_loop = for_loop(_clients, loop, dict)
    store = per_loop.get((url, timeout))
    if store is None:
        store = per_loop[(url, timeout)] = RedisStore(url, timeout)
    return store
