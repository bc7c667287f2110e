"""Where ledger entries live: beside the prompt cache.

With ``FRUGAL_CACHE_URL=redis://...`` the ledger is a Redis sorted set
``PREFIX:ledger`` (score: the entry's time; member: its JSON), so one flush of
any number of entries is one ``ZADD`` in one round trip, and a report reads a
time range with one ``ZRANGEBYSCORE``. Otherwise it is a table ``ledger`` in
the embedded SQLite file (``FRUGAL_DATA_DIR/cache.sqlite3`` or the
``sqlite:///`` path), written in one transaction per flush. Entries older than
``FRUGAL_LEDGER_RETENTION_DAYS`` are dropped as new ones are written.

Stores are synchronous: the ledger's writer thread calls them (`flows.ledger.writer`).
Every store raises `CacheError`, and only that, when it cannot do its job.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Target:
    """Which ledger to write to: decided when a run ends, from the settings of that moment."""

    kind: str  # "redis" or "sqlite"
    location: str  # the Redis URL or the SQLite file
    key: str = ""  # the Redis key
    timeout: float = 2.0

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
    if url.startswith(("redis://", "rediss://", "unix://")):
        return Target("redis", url, f"{cache.prefix}:ledger", max(cache.timeout, 2.0))
    if url.startswith("sqlite:///"):
        return Target("sqlite", str(Path(url.removeprefix("sqlite://")).expanduser().resolve()))
    if not url:
        return Target("sqlite", str((engine.data_dir / "cache.sqlite3").expanduser().resolve()))
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
            # one ZADD per CHUNK entries: packing a huge command holds the GIL for milliseconds
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
    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._trimmed = 0.0
        path = Path(target.location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS ledger (id TEXT PRIMARY KEY, ts REAL NOT NULL, entry TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts)")
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"ledger {path} cannot be opened: {exc}; check FRUGAL_DATA_DIR") from exc

    def append(self, rows: list[Row], retention_days: int) -> None:
        if not rows:
            return
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO ledger (id, ts, entry) VALUES (?, ?, ?)", rows)
                    if retention_days and time.monotonic() - self._trimmed > 3600:
                        self._db.execute("DELETE FROM ledger WHERE ts < ?", (time.time() - retention_days * 86400,))
                        self._trimmed = time.monotonic()
                except sqlite3.Error:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CacheError(f"ledger in {self.target.describe()} cannot be written: {exc}") from exc

    def read(self, since: datetime | None = None, until: datetime | None = None) -> list[LedgerEntry]:
        low = since.timestamp() if since else float("-inf")
        high = until.timestamp() if until else float("inf")
        try:
            with self._lock:
                raw = self._db.execute("SELECT entry FROM ledger WHERE ts >= ? AND ts <= ? ORDER BY ts", (low, high)).fetchall()
        except sqlite3.Error as exc:
            raise CacheError(f"ledger in {self.target.describe()} cannot be read: {exc}") from exc
        return _ordered(e for e in (_parse(r[0]) for r in raw) if e is not None)


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
