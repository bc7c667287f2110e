"""Embedded backend: one SQLite file, no server. The zero-config default.

Calls are a few microseconds, so they run on the caller's thread; one connection
is shared between threads under a lock (`tasks.stores.sqlite_file`, which also
moves a corrupt file aside and makes a new one). Expired rows are dropped on read.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tasks.core.errors import CacheError
from tasks.stores.sqlite_file import SqliteFile

T = TypeVar("T")

_stores: dict[Path, SqliteStore] = {}
_stores_lock = threading.Lock()

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
)


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = SqliteFile(path, SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"embedded cache {path} cannot be opened: {exc}; check FRUGAL_DATA_DIR") from exc

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return self._file.run(work)
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"embedded cache {self.path} failed: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        def read(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value, expires_at FROM answers WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            if row[1] < time.time():
                db.execute("DELETE FROM answers WHERE key = ?", (key,))
                return None
            return bytes(row[0])

        return self._run(read)

    async def get_or_claim(self, key: str, seconds: float) -> tuple[bytes | None, bool | None]:
        return await self.get(key), None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store the value and release the key's lease."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO answers (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, time.time() + ttl),
            )
            db.execute("DELETE FROM leases WHERE key = ?", (key,))

        self._run(write)

    async def claim(self, key: str, seconds: float) -> bool:
        """Take the lease on `key` unless someone holds an unexpired one."""
        now = time.time()

        def take(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM leases WHERE key = ? AND expires_at < ?", (key, now))
            cursor = db.execute("INSERT OR IGNORE INTO leases (key, expires_at) VALUES (?, ?)", (key, now + seconds))
            return cursor.rowcount == 1

        return self._run(take)

    async def release(self, key: str) -> None:
        self._run(lambda db: db.execute("DELETE FROM leases WHERE key = ?", (key,)))

    def close(self) -> None:
        self._file.close()


def sqlite_store(path: Path) -> SqliteStore:
    with _stores_lock:
        store = _stores.get(path)  # as given: resolving (realpath's syscalls) cost ~0.2 ms a look-up
        if store is None:
            resolved = path.expanduser().resolve()
            store = _stores.get(resolved)
            if store is None:
                store = _stores[resolved] = SqliteStore(resolved)
            _stores[path] = store
        return store
