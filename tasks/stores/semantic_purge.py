"""Removing cached answers: from the exact cache and from the semantic index together.

`frugal cache purge` selects entries by namespace, by age, or by prompt (the prompt as
written, in the normalised form, and optionally its neighbours in meaning); an answer is
removed from both stores, so a purged answer can be served neither by its key nor by a
re-worded question. The exact cache is reached here directly (SQL on the embedded file, SCAN
and DEL on Redis): the answer stores' interface is the request path's, with no listing in it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from datetime import datetime

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from tasks.core.errors import CacheError
from tasks.core.records import CachedAnswer
from tasks.core.settings import CacheSettings
from tasks.stores import open_store
from tasks.stores.redis_store import _redact
from tasks.stores.semantic_index import Entry, SemanticIndex
from tasks.stores.semantic_redis import CHUNK

#: the hex request key at the end of an exact-cache key
KEY_LENGTH = 64


def _older(raw: bytes | str, before: datetime) -> bool:
    try:
        return CachedAnswer.model_validate_json(raw).created_at < before
    except ValidationError:
        return False


async def purge_exact(
    settings: CacheSettings,
    namespace: str | None = None,
    before: datetime | None = None,
    keys: Iterable[tuple[str, str]] | None = None,
) -> int:
    """Delete exact-cache answers: of `namespace` (None: every namespace under the prefix) stored
    `before` a time (None: any time), or, given `keys` ((namespace, key) pairs), those only.
    Returns the number deleted."""
    store = open_store(settings)
    wanted = None if keys is None else {f"{settings.prefix}:{ns}:{key}" for ns, key in keys}
    if wanted is not None and not wanted:
        return 0
    pattern = f"{settings.prefix}:{namespace if namespace is not None else '*'}:*"
    if store.name == "sqlite":
        path = store.path  # type: ignore[attr-defined]
        if not path.exists():
            return 0
        try:
            with sqlite3.connect(path, timeout=5) as db:
                if wanted is not None:
                    names = list(wanted)
                else:
                    like = pattern.replace("%", r"\%").replace("_", r"\_").replace("*", "%")
                    rows = db.execute(r"SELECT key, value FROM answers WHERE key LIKE ? ESCAPE '\'", (like,)).fetchall()
                    names = [
                        k for k, v in rows if len(k.rsplit(":", 1)[-1]) == KEY_LENGTH and (before is None or _older(v, before))
                    ]
                db.executemany("DELETE FROM answers WHERE key = ?", [(k,) for k in names])
                return db.total_changes
        except sqlite3.Error as exc:
            raise CacheError(f"embedded cache {path} failed: {exc}") from exc
    url = store.url  # type: ignore[attr-defined]
    client = aioredis.Redis.from_url(url, socket_connect_timeout=settings.timeout)
    try:
        async with asyncio.timeout(max(settings.timeout, 30.0)):
            if wanted is not None:
                return int(await client.delete(*wanted))
            names = []
            async for raw_name in client.scan_iter(match=pattern, count=1000, _type="string"):
                name = raw_name.decode()
                if len(name.rsplit(":", 1)[-1]) == KEY_LENGTH:  # not a lease
                    names.append(name)
            if before is not None:  # read CHUNK at a time: one round trip each, not one per answer
                older = []
                for start in range(0, len(names), CHUNK):
                    chunk = names[start : start + CHUNK]
                    values = await client.mget(chunk)
                    older += [name for name, value in zip(chunk, values, strict=True) if value and _older(value, before)]
                names = older
            deleted = 0
            for start in range(0, len(names), CHUNK):
                deleted += int(await client.delete(*names[start : start + CHUNK]))
            return deleted
    except (RedisError, TimeoutError) as exc:
        raise CacheError(f"Redis at {_redact(url)} failed while purging: {exc}") from exc
    finally:
        await client.aclose()


async def purge(
    settings: CacheSettings,
    index: SemanticIndex,
    namespace: str | None = None,
    before: datetime | None = None,
    selected: list[Entry] | None = None,
) -> tuple[int, int]:
    """Purge both stores; (exact answers removed, semantic entries removed).

    `selected`: these indexed prompts (found by `frugal cache purge --prompt`) and their answers;
    else every entry of `namespace` stored `before` the time (both None: everything)."""
    if selected is not None:
        exact = await purge_exact(settings, keys=[(e.namespace, e.key) for e in selected])
        return exact, await index.remove(selected)
    exact = await purge_exact(settings, namespace, before)
    entries = await index.entries(namespace)
    if before is not None:
        cutoff = before.timestamp()
        entries = [e for e in entries if e.created_at < cutoff]
    return exact, await index.remove(entries)
