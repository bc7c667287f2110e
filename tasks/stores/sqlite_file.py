"""The embedded SQLite file, opened so that a corrupt one never stops the cache or the ledger.

A file SQLite cannot read (truncated, overwritten: `SQLITE_CORRUPT`, `SQLITE_NOTADB`),
found when it is opened or later while it is used, is moved aside as
``NAME.corrupt-<UTC timestamp>`` (with its ``-wal`` and ``-shm`` files) with a
warning, and a new empty file is made in its place; the operation that met it is
tried once more on the new file. The prompt cache and the cost ledger share the
file: whichever meets the damage first moves it, the other sees that the path
now names another file and only reopens it.

A full disk (`SQLITE_FULL`) and a locked file are not corruption: they are left to
the caller (a `CacheError`), and the file is kept.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("frugal")


def is_corrupt(exc: BaseException) -> bool:
    """Whether SQLite says the file itself is damaged (not full, not locked)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def move_aside(path: Path) -> Path:
    """Rename `path` (and its -wal, -shm) to ``.corrupt-<timestamp>``; the new name of the main file."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    return aside


class SqliteFile:
    """One shared connection to `path`, with `schema` applied; `run` recovers from a corrupt file."""

    def __init__(self, path: Path, schema: Sequence[str], timeout: float = 5.0) -> None:
        self.path = path
        self.schema = tuple(schema)
        self.timeout = timeout
        self.lock = threading.Lock()  # one connection shared between threads
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        with self.lock:
            self._open_recovering()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=self.timeout)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in self.schema:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        self._inode = os.stat(self.path).st_ino
        return db

    def _open_recovering(self) -> None:
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            self._recover(exc)

    def _recover(self, exc: BaseException) -> None:
        """Move the damaged file aside (unless someone did already) and open a new one."""
        if self._db is not None:
            self._db.close()
            self._db = None
        try:
            same = self._inode is None or os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            same = False
        if same and self.path.exists():
            aside = move_aside(self.path)
            log.warning("%s is damaged (%s): moved aside to %s, and a new one made", self.path, exc, aside.name)
        self._db = self._open()

    def _moved(self) -> bool:
        """Whether the path names another file than ours (moved aside by another user of it)."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def _reopen(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._open_recovering()

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` under the lock; on a corrupt file, recover and do it once more."""
        with self.lock:
            if self._db is None or self._moved():
                self._reopen()
            assert self._db is not None
            try:
                return work(self._db)
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._recover(exc)
                return work(self._db)
