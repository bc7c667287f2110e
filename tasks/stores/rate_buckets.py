"""Rate-limit buckets on Redis, shared by every process and machine that uses it.

Each bucket is one hash, ``PREFIX:limits:PROVIDER/MODEL``: a theoretical arrival time per dimension
(fields ``1``, ``2``: requests, tokens) and a pause (``p``), in milliseconds of Redis's own clock
(``TIME``), so the machines' clocks do not matter. Three Lua scripts (redis-py's `register_script`),
each one atomic step: reserve a start time (`tasks.core.pacing.schedule`, line for line),
correct a dimension by the tokens a call really used, and pause the bucket for a 429's
Retry-After. A bucket expires a minute after its last reservation is due.

Raises `CacheError` (from `RedisStore`) when Redis cannot answer: the caller paces itself alone then.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from tasks.core.pacing import Pace, Reservation
from tasks.stores.redis_store import RedisStore

#: KEYS: bucket. ARGV: max wait ms, dimensions n, then n x (interval ms, cost, burst).
#: The wait in ms (a string: Lua numbers come back as integers); negative: not granted, nothing reserved.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local max_wait = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local start = math.max(now, tonumber(redis.call('HGET', KEYS[1], 'p') or '0'))
local tats = {}
for i = 1, n do
  local interval, cost, burst = tonumber(ARGV[3*i]), tonumber(ARGV[3*i + 1]), tonumber(ARGV[3*i + 2])
  tats[i] = tonumber(redis.call('HGET', KEYS[1], tostring(i)) or '0')
  start = math.max(start, tats[i] + cost * interval - math.max(burst, cost) * interval)
end
local wait = start - now
if wait > max_wait then
  return string.format('%.3f', -wait)
end
local horizon = 0
for i = 1, n do
  local interval, cost = tonumber(ARGV[3*i]), tonumber(ARGV[3*i + 1])
  local after = math.max(tats[i], start) + cost * interval
  redis.call('HSET', KEYS[1], tostring(i), string.format('%.3f', after))
  horizon = math.max(horizon, after - now)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(horizon) + 60000)
return string.format('%.3f', wait)
"""
#: KEYS: bucket. ARGV: dimension (1-based), ms to move its arrival time by (a give-back stops at now).
ADJUST = """
local tat = redis.call('HGET', KEYS[1], ARGV[1])
if not tat then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local delta = tonumber(ARGV[2])
local after = tonumber(tat) + delta
if delta < 0 then after = math.max(after, now) end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.3f', after))
return 1
"""
#: KEYS: bucket. ARGV: ms no call may start in.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ms = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('HGET', KEYS[1], 'p') or '0')
if until_ms > paused then
  redis.call('HSET', KEYS[1], 'p', string.format('%.3f', until_ms))
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) + 60000 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60000)
end
return 1
"""


class RedisBuckets:
    """The rate-limit buckets (`tasks.providers.limits.Buckets`) on one `RedisStore` (its pool, its deadlines)."""

    def __init__(self, store: RedisStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._reserve = store.register_script(RESERVE)
        self._adjust = store.register_script(ADJUST)
        self._pause = store.register_script(PAUSE)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:limits:{key}"

    async def reserve(self, key: str, paces: Sequence[Pace], max_wait: float) -> Reservation:
        args: list[object] = [f"{max_wait * 1000:.3f}", len(paces)]
        for interval, cost, burst in paces:
            args += [f"{interval * 1000:.6f}", f"{cost:g}", f"{burst:g}"]
        answer = await self.store.run_script(self._reserve, (self._key(key),), tuple(args))
        wait = float(answer.decode() if isinstance(answer, bytes) else str(answer)) / 1000
        return Reservation(abs(wait), wait >= 0)

    async def adjust(self, key: str, dimension: int, seconds: float) -> None:
        await self.store.run_script(self._adjust, (self._key(key),), (dimension + 1, f"{seconds * 1000:.3f}"))

    async def pause(self, key: str, seconds: float) -> None:
        await self.store.run_script(self._pause, (self._key(key),), (f"{seconds * 1000:.3f}",))


_made: weakref.WeakKeyDictionary[RedisStore, dict[str, RedisBuckets]] = weakref.WeakKeyDictionary()


def redis_buckets(store: RedisStore, prefix: str) -> RedisBuckets:
    """The buckets on `store` under `prefix` (made once per store: its scripts registered once)."""
    per_store = _made.setdefault(store, {})
    found = per_store.get(prefix)
    if found is None:
        found = per_store[prefix] = RedisBuckets(store, prefix)
    return found
