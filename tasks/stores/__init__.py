"""Prompt-cache backends behind one small interface.

`open_store(settings)` picks the backend from ``FRUGAL_CACHE_URL``:

    redis://host:port/db, rediss://...   RedisStore (async client, pooled)
    sqlite:///path/to/file.db            SqliteStore
    (empty)                              SqliteStore in FRUGAL_DATA_DIR/cache.sqlite3

Every backend raises `CacheError` (and only that) when it cannot do its job;
the cache steps turn that into a logged miss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tasks.core.errors import ConfigError
from tasks.core.settings import CacheSettings, EngineSettings, get_settings
from tasks.stores.redis_store import redis_store
from tasks.stores.sqlite_store import sqlite_store

#: FRUGAL_CACHE_URL schemes that mean Redis
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class AnswerStore(Protocol):
    """Bytes by key, with a TTL. Raises `CacheError` when unreachable."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store `value` under `key` for `ttl` seconds, and release the key's lease."""
        ...

    async def get_or_claim(self, key: str, seconds: float) -> tuple[bytes | None, bool | None]:
        """`get`; on a miss, a store may also try to take the key's lease in the same step:
        (value, True) it took it, False someone holds it, None it did not try."""
        ...

    async def claim(self, key: str, seconds: float) -> bool:
        """Take the lease to answer `key` (True), unless another caller holds it."""
        ...

    async def release(self, key: str) -> None: ...


def open_store(cache: CacheSettings | None = None, engine: EngineSettings | None = None) -> AnswerStore:
    cache = cache or get_settings().cache
    url = cache.url.strip()
    if url.startswith(REDIS_SCHEMES):
        return redis_store(url, cache.timeout)
    if url.startswith("sqlite:///"):
        return sqlite_store(Path(url.removeprefix("sqlite://")))
    if not url:
        return sqlite_store((engine or get_settings().engine).data_dir / "cache.sqlite3")
    raise ConfigError(
        f"FRUGAL_CACHE_URL={url!r} is not understood: use redis://HOST:PORT/DB, "
        "rediss://..., sqlite:///PATH, or leave it empty for the embedded cache"
    )
