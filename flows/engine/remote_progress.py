"""Per-document progress of chunks that run in other processes, through the shared Redis.

A chunk running on a worker (`ChunkCounter`) writes how many of its items are done to one
Redis hash per batch node, field = the chunk's index, at most every `INTERVAL` seconds. The
count is absolute, not an increment: a chunk run again after its worker died starts from 0
and never adds to what the lost run had counted. The flow (`ProgressPoll`) reads the hash
every `POLL_SECONDS`, and advances its progress by what each running chunk did since; when a
chunk's records arrive, the batch counts the rest of that chunk. So the bar and the progress artifact move per
document, and end at exactly the number of items, whichever worker ran what.

Without a Redis cache (FRUGAL_CACHE_URL is not redis://), remote chunks report when they end.
A failed progress write or read is logged at debug level: progress is for the eye.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tasks.core.settings import get_settings

log = logging.getLogger("frugal")

#: seconds between two writes of a running chunk's count
INTERVAL = 0.25
#: seconds between two reads of a batch's counts by the flow
POLL_SECONDS = 0.5
#: a batch's hash outlives a flow that died by this long
KEEP_SECONDS = 24 * 3600


def redis_url() -> str | None:
    """The shared Redis progress goes through: the prompt cache's, if it is Redis."""
    url = get_settings().cache.url
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def progress_key(run_id: str, node: str) -> str:
    return f"{get_settings().cache.prefix}:progress:{run_id}:{node}"


def _client(url: str) -> aioredis.Redis:
    timeout = max(get_settings().cache.timeout, 1.0)
    return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


class ChunkCounter:
    """A running chunk's count of finished items, written to Redis now and then (see the module)."""

    def __init__(self, url: str, key: str, chunk: int) -> None:
        self._redis = _client(url)
        self._key, self._field = key, str(chunk)
        self.count = 0
        self._written = 0
        self._task: asyncio.Task[None] | None = None

    def item_done(self) -> None:
        self.count += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._written != self.count:
            count = self.count
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hset(self._key, self._field, count)
                    pipe.expire(self._key, KEEP_SECONDS)
                    await pipe.execute()
                self._written = count
            except (RedisError, OSError) as exc:
                log.debug("chunk progress not written: %s", exc)
                return
            await asyncio.sleep(INTERVAL)  # the items that finish meanwhile go in the next write

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


class ProgressPoll:
    """The flow's side: turns the running chunks' counts into `advance(n)` calls (see the module)."""

    def __init__(self, url: str, key: str) -> None:
        self._redis = _client(url)
        self._key = key
        #: running chunks: index -> (size, items already counted, where to count more)
        self._running: dict[int, tuple[int, int, Callable[[int], None]]] = {}
        #: chunks whose field the next poll deletes
        self._ended: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def started(self, chunk: int, size: int, advance: Callable[[int], None]) -> None:
        self._running[chunk] = (size, 0, advance)
        if self._task is None:
            self._task = asyncio.create_task(self._poll())

    def finished(self, chunk: int) -> None:
        """The chunk's records arrived (the batch counts what the polls had not)."""
        if self._running.pop(chunk, None) is not None:
            self._ended.append(chunk)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if not self._running:
                continue
            try:
                if self._ended:
                    ended, self._ended = self._ended, []
                    await self._redis.hdel(self._key, *map(str, ended))
                counts = await self._redis.hgetall(self._key)
            except (RedisError, OSError) as exc:
                log.debug("chunk progress not read: %s", exc)
                continue
            for field, value in counts.items():
                chunk = int(field)
                running = self._running.get(chunk)
                if running is None:
                    continue
                size, counted, advance = running
                now = min(int(value), size)
                if now > counted:
                    self._running[chunk] = (size, now, advance)
                    advance(now - counted)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._key)
        await self._redis.aclose()
