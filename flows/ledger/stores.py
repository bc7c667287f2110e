"""Where ledger entries live: beside the prompt cache.

With ``FRUGAL_CACHE_URL=redis://...`` the ledger is a Redis sorted set
``PREFIX:ledger`` (score: the entry's time; member: its JSON), so one flush of
any number of entries is one ``ZADD`` in one round trip, and a report reads a
time range with one ``ZRANGEBYSCORE``. Otherwise it is a table ``ledger`` in
the embedded SQLite file (``FRUGAL_DATA_DIR/cache.sqlite3`` or the
``sqlite:///`` path), written in one transaction per flush. Entries older than
``FRUGAL_LEDGER_RETENTION_DAYS`` are dropped as new ones are written.

Stores are synchronous: the ledger's writer thread calls them (`flows.ledger.writer`).
Every store raises `CacheError`, and only that, when it cannot do its job; the
writer then keeps the entries in the spool (`flows.ledger.spool`). A corrupt
SQLite file is moved aside and made anew (`tasks.stores.sqlite_file`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import redis
from redis.exceptions import RedisError

from flows.ledger.entry import LedgerEntry
from tasks.core.errors import CacheError, ConfigError
from tasks.core.settings import CacheSettings, EngineSettings
from tasks.stores.sqlite_file import SqliteFile

log = logging.getLogger("frugal")


@dataclass(frozen=True)
class Target:
    """Which ledger to write to: decided when a run ends, from the settings of that moment."""

    kind: str  # "redis" or "sqlite"
    location: str  # the Redis URL or the SQLite file
    key: str = ""  # the Redis key
    timeout: float = 2.0
    spool_dir: str = ""  # FRUGAL_DATA_DIR: where entries wait when the store cannot take them

    def describe(self) -> str:
        if self.kind == "redis":
            url = self.location
            if "@" in url:
                scheme, rest = url.split("://", 1)
                url = f"{scheme}://***@{rest.split('@', 1)[1]}"
            return f"Redis {url} key {self.key}"
        return f"SQLite {self.location} table ledger"


def target_for(cache: CacheSettings, engine: EngineSettings) -> Target:
    url = cache.url.strip()
    spool = str(engine.data_dir.expanduser().resolve())
    if url.startswith(("redis://", "rediss://", "unix://")):
        return Target("redis", url, f"{cache.prefix}:ledger", max(cache.timeout, 2.0), spool)
    if url.startswith("sqlite:///"):
        return Target("sqlite", str(Path(url.removeprefix("sqlite://")).expanduser().resolve()), spool_dir=spool)
    if not url:
        return Target("sqlite", str((engine.data_dir / "cache.sqlite3").expanduser().resolve()), spool_dir=spool)
    raise ConfigError(f"FRUGAL_CACHE_URL={url!r} is not understood: use redis://HOST:PORT/DB, rediss://..., sqlite:///PATH")


#: an entry as stored: (id, time as a Unix timestamp, JSON)
Row = tuple[str, float, str]


def row(entry: LedgerEntry) -> Row:
    return entry.id, entry.ts.timestamp(), entry.model_dump_json(exclude_none=True)


class LedgerStore(Protocol):
    def append(self, rows: list[Row], retention_days: int) -> None: ...

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[LedgerEntry]: ...


def _parse(raw: str | bytes) -> LedgerEntry | None:
    try:
        return LedgerEntry.model_validate_json(raw)
    except ValueError:  # an entry of another version or a foreign member: not ours to count
        return None


def _ordered(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """Oldest first; a run's entries in the order its nodes finished."""
    return sorted(entries, key=lambda e: (e.ts, e.run_id, e.seq))


CHUNK = 256


class RedisLedger:
    def __init__(self, target: Target) -> None:
        self.target = target
        self._client = redis.Redis.from_url(target.location, socket_connect_timeout=target.timeout, socket_timeout=target.timeout)

    def append(self, rows: list[Row], retention_days: int) -> None:
        if not rows:
            return
        try:
            # one ZADD per CHUNK entries: Redis serves nobody else while it runs one command
            for start in range(0, len(rows), CHUNK):
                pipe = self._client.pipeline(transaction=False)
                pipe.zadd(self.target.key, {text: ts for _, ts, text in rows[start : start + CHUNK]})
                if retention_days and start + CHUNK >= len(rows):
                    pipe.zremrangebyscore(self.target.key, "-inf", f"({time.time() - retention_days * 86400}")
                pipe.execute()
        except (RedisError, OSError) as exc:
            raise CacheError(f"ledger in {self.target.describe()} cannot be written: {exc}") from exc

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[LedgerEntry]:
        low = since.timestamp() if since else "-inf"
        high = until.timestamp() if until else "+inf"
        try:
            raw: list[bytes] = self._client.zrangebyscore(self.target.key, low, high)  # type: ignore[assignment]
        except (RedisError, OSError) as exc:
            raise CacheError(f"ledger in {self.target.describe()} cannot be read: {exc}") from exc
        return _ordered(e for e in map(_parse, raw) if e is not None)


class SqliteLedger:
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS ledger (id TEXT PRIMARY KEY, ts REAL NOT NULL, entry TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts)",
    )

    def __init__(self, target: Target) -> None:
        self.target = target
        self._trimmed = 0.0
        path = Path(target.location)
        try:
            self._file = SqliteFile(path, self.SCHEMA, timeout=10)
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"ledger {path} cannot be opened: {exc}; check FRUGAL_DATA_DIR") from exc

    def append(self, rows: list[Row], retention_days: int) -> None:
        if not rows:
            return

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR REPLACE INTO ledger (id, ts, entry) VALUES (?, ?, ?)", rows)
                if retention_days and time.monotonic() - self._trimmed > 3600:
                    db.execute("DELETE FROM ledger WHERE ts < ?", (time.time() - retention_days * 86400,))
                    self._trimmed = time.monotonic()
            except BaseException:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error as rollback:  # the file may be the problem: the first error says it
                        log.debug("ledger: rollback failed too: %s", rollback)
                raise
            db.execute("COMMIT")

        try:
            self._file.run(write)
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"ledger in {self.target.describe()} cannot be written: {exc}") from exc

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[LedgerEntry]:
        low = since.timestamp() if since else float("-inf")
        high = until.timestamp() if until else float("inf")
        query = "SELECT entry FROM ledger WHERE ts >= ? AND ts <= ? ORDER BY ts"
        try:
            raw = self._file.run(lambda db: db.execute(query, (low, high)).fetchall())
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"ledger in {self.target.describe()} cannot be read: {exc}") from exc
        return _ordered(e for e in (_parse(r[0]) for r in raw) if e is not None)

    def close(self) -> None:
        self._file.close()


_stores: dict[tuple[int, Target], LedgerStore] = {}
_stores_lock = threading.Lock()


def open_ledger(target: Target) -> LedgerStore:
    """The store for `target`, opened once per process (a forked child opens its own)."""
    key = (os.getpid(), target)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RedisLedger(target) if target.kind == "redis" else SqliteLedger(target)
        return store
