"""The semantic cache's vector index: cached prompts by meaning, per namespace and group.

One interface, two stores, picked from ``FRUGAL_CACHE_URL`` like the exact cache:

    redis://..., rediss://...   RedisIndex: Redis 8 Vector Sets (VADD / VSIM), one set per
                                (prefix, namespace, group); Redis 7 cannot do it (cache: error)
    sqlite:///path/to/file.db   SqliteIndex in path/to/file.semantic.sqlite3
    (empty)                     SqliteIndex in FRUGAL_DATA_DIR/semantic.sqlite3

An entry is the request key of an exact-cache entry, the user message it answered (as written:
the guards read it), the key of that message's normalised form (`tasks.semantic.normalise.text_key`),
its vector, and when it expires (the exact entry's TTL). `same_text` finds an entry by the
normalised form alone: a case, spacing or edge-punctuation variant needs no embedding. A *group* is
the key of everything but the user message (`hash_prompt` without it): only prompts whose
every other part of the request is the same are ever compared. Every store raises
`CacheError` (and only that) when it cannot do its job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from tasks.core.errors import ConfigError
from tasks.core.settings import CacheSettings, EngineSettings, get_settings
from tasks.stores.semantic_records import Entry, Neighbour
from tasks.stores.semantic_redis import redis_index
from tasks.stores.semantic_sqlite import sqlite_index

__all__ = ["Entry", "Neighbour", "SemanticIndex", "open_index", "semantic_path"]


class SemanticIndex(Protocol):
    name: str

    async def available(self) -> bool:
        """False for a store that cannot do vector search (Redis before 8): exact match only."""
        ...

    async def add(
        self, namespace: str, group: str, key: str, text: str, vector: np.ndarray, ttl: int, text_key: str = ""
    ) -> None:
        """Index `key` (replacing an entry of the same key in the group) until `ttl` seconds from now;
        with `text_key`, `same_text` finds it by that key too."""
        ...

    async def same_text(self, namespace: str, group: str, text_key: str) -> Neighbour | None:
        """The latest unexpired entry of the group added with this `text_key` (similarity 1), or None."""
        ...

    async def nearest(self, namespace: str, group: str, vector: np.ndarray, count: int) -> list[Neighbour]:
        """Up to `count` unexpired entries of the group, most similar first."""
        ...

    async def entries(self, namespace: str | None = None) -> list[Entry]:
        """Every entry of a namespace (None: of every namespace under this prefix), expired ones too."""
        ...

    async def remove(self, entries: list[Entry]) -> int:
        """Remove these entries; the number removed."""
        ...


def semantic_path(cache_file: Path) -> Path:
    """The index file next to an embedded cache file."""
    if cache_file.name == "cache.sqlite3":
        return cache_file.with_name("semantic.sqlite3")
    return cache_file.with_name(f"{cache_file.stem}.semantic.sqlite3")


def open_index(cache: CacheSettings | None = None, engine: EngineSettings | None = None) -> SemanticIndex:
    cache = cache or get_settings().cache
    url = cache.url.strip()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return redis_index(url, cache.prefix, cache.timeout, threaded=cache.semantic_search_threads)
    if url.startswith("sqlite:///"):
        return sqlite_index(semantic_path(Path(url.removeprefix("sqlite://"))), cache.prefix)
    if not url:
        return sqlite_index(semantic_path((engine or get_settings().engine).data_dir / "cache.sqlite3"), cache.prefix)
    raise ConfigError(
        f"FRUGAL_CACHE_URL={url!r} is not understood: use redis://HOST:PORT/DB, "
        "rediss://..., sqlite:///PATH, or leave it empty for the embedded cache"
    )
