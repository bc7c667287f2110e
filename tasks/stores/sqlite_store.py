"""Embedded backend: one SQLite file, no server. The zero-config default.

Calls are a few microseconds, so they run on the caller's thread; a lock makes
one connection safe to share between threads. Expired rows are dropped on read.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from tasks.core.errors import CacheError

_stores: dict[Path, SqliteStore] = {}
_stores_lock = threading.Lock()


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"embedded cache {path} cannot be opened: {exc}; check FRUGAL_DATA_DIR") from exc

    async def get(self, key: str) -> bytes | None:
        try:
            with self._lock:
                row = self._db.execute("SELECT value, expires_at FROM answers WHERE key = ?", (key,)).fetchone()
                if row is not None and row[1] < time.time():
                    self._db.execute("DELETE FROM answers WHERE key = ?", (key,))
                    return None
        except sqlite3.Error as exc:
            raise CacheError(f"embedded cache {self.path} failed: {exc}") from exc
        return None if row is None else bytes(row[0])

    async def get_or_claim(self, key: str, seconds: float) -> tuple[bytes | None, bool | None]:
        return await self.get(key), None

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store the value and release the key's lease."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers (key, value, expires_at) VALUES (?, ?, ?)",
                    (key, value, time.time() + ttl),
                )
                self._db.execute("DELETE FROM leases WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            raise CacheError(f"embedded cache {self.path} failed: {exc}") from exc

    async def claim(self, key: str, seconds: float) -> bool:
        """Take the lease on `key` unless someone holds an unexpired one."""
        now = time.time()
        try:
            with self._lock:
                self._db.execute("DELETE FROM leases WHERE key = ? AND expires_at < ?", (key, now))
                cursor = self._db.execute("INSERT OR IGNORE INTO leases (key, expires_at) VALUES (?, ?)", (key, now + seconds))
                return cursor.rowcount == 1
        except sqlite3.Error as exc:
            raise CacheError(f"embedded cache {self.path} failed: {exc}") from exc

    async def release(self, key: str) -> None:
        try:
            with self._lock:
                self._db.execute("DELETE FROM leases WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            raise CacheError(f"embedded cache {self.path} failed: {exc}") from exc


def sqlite_store(path: Path) -> SqliteStore:
    path = path.expanduser().resolve()
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = SqliteStore(path)
        return store
