"""Embedded semantic index: a SQLite file next to the embedded cache, brute-force numpy search.

Rows hold the vector as a float32 blob and an `expires_at`. Each process keeps, per
(prefix, namespace, group), the group's vectors as one in-memory matrix, refreshed on each
query with the rows whose id is above the last one it read (ids only grow: AUTOINCREMENT),
so entries added by other processes are seen at once. A query is one matrix-vector product;
the best few candidates are then re-read from the file, so an entry removed or replaced
elsewhere (a purge, a re-store) is never served and is dropped from memory; an expired
candidate is deleted from the file.

Brute force rather than an ANN index: exact (a threshold means the same at 1k and 100k
entries), no build or add cost, safe with several processes writing one file. Measured on
this 2-core host (tests/benchmarks/bench_semantic.py, and the product alone): ~0.5 ms at 1k
and ~1.4 ms at 10k entries in one group, but ~36 ms at 100k (200 MB of float32 read per
query: memory-bound), over the 5 ms target; groups that large belong on Redis 8 (HNSW).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.errors import CacheError
from tasks.stores.semantic_records import Entry, Neighbour

DIMENSIONS = 512
#: candidates re-read from the file per query
CHECKED = 8

_indexes: dict[tuple[Path, str], SqliteIndex] = {}
_indexes_lock = threading.Lock()


@dataclass
class _Group:
    """A group's vectors in memory: rows [0, size) of `matrix`, `ids[i]` the row id of row i."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, DIMENSIONS), dtype=np.float32))
    size: int = 0
    last_id: int = 0

    def append(self, ids: list[int], vectors: np.ndarray) -> None:
        needed = self.size + len(ids)
        if needed > len(self.ids):  # grow by doubling: appends cost O(1) amortised
            capacity = max(needed, 2 * len(self.ids), 64)
            matrix = np.zeros((capacity, vectors.shape[1]), dtype=np.float32)
            matrix[: self.size] = self.matrix[: self.size]
            grown = np.full(capacity, -1, dtype=np.int64)
            grown[: self.size] = self.ids[: self.size]
            self.matrix, self.ids = matrix, grown
        self.matrix[self.size : needed] = vectors
        self.ids[self.size : needed] = ids
        self.size = needed
        self.last_id = max(self.last_id, max(ids))

    def forget(self, row_ids: set[int]) -> None:
        """Zero the vectors of rows gone from the file (similarity 0: never a candidate)."""
        rows = np.nonzero(np.isin(self.ids[: self.size], list(row_ids)))[0]
        self.matrix[rows] = 0
        self.ids[rows] = -1


class SqliteIndex:
    name = "sqlite"

    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix
        self._lock = threading.Lock()
        self._groups: dict[tuple[str, str], _Group] = {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY AUTOINCREMENT, prefix TEXT NOT NULL, "
                "namespace TEXT NOT NULL, grp TEXT NOT NULL, key TEXT NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL, "
                "created_at REAL NOT NULL, expires_at REAL NOT NULL, UNIQUE (prefix, namespace, grp, key))"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS prompts_by_group ON prompts (prefix, namespace, grp, id)")
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"semantic index {path} cannot be opened: {exc}; check FRUGAL_DATA_DIR") from exc

    async def available(self) -> bool:
        return True

    async def add(self, namespace: str, group: str, key: str, text: str, vector: np.ndarray, ttl: int) -> None:
        now = time.time()
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO prompts (prefix, namespace, grp, key, text, vector, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.prefix, namespace, group, key, text, blob, now, now + ttl),
                )
        except sqlite3.Error as exc:
            raise CacheError(f"semantic index {self.path} failed: {exc}") from exc

    async def nearest(self, namespace: str, group: str, vector: np.ndarray, count: int) -> list[Neighbour]:
        try:
            with self._lock:
                return self._nearest(namespace, group, np.asarray(vector, dtype=np.float32), count)
        except sqlite3.Error as exc:
            raise CacheError(f"semantic index {self.path} failed: {exc}") from exc

    def _nearest(self, namespace: str, group: str, vector: np.ndarray, count: int) -> list[Neighbour]:
        held = self._groups.setdefault((namespace, group), _Group())
        rows = self._db.execute(
            "SELECT id, vector FROM prompts WHERE prefix = ? AND namespace = ? AND grp = ? AND id > ? ORDER BY id",
            (self.prefix, namespace, group, held.last_id),
        ).fetchall()
        if rows:
            held.append(
                [r[0] for r in rows], np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            )
        if held.size == 0:
            return []
        similarity = held.matrix[: held.size] @ vector
        checked = min(max(count, CHECKED), held.size)
        best = np.argpartition(-similarity, checked - 1)[:checked]
        best = best[np.argsort(-similarity[best])]
        ids = [int(held.ids[i]) for i in best if held.ids[i] >= 0]
        marks = ",".join("?" * len(ids))
        found = {
            row[0]: row[1:]
            for row in self._db.execute(f"SELECT id, key, text, expires_at FROM prompts WHERE id IN ({marks})", ids)
        }
        now = time.time()
        expired = [i for i, row in found.items() if row[2] <= now]
        if expired:  # dropped here, so they never crowd out live candidates
            self._db.execute(f"DELETE FROM prompts WHERE id IN ({','.join('?' * len(expired))})", expired)
        gone = {i for i in ids if i not in found} | set(expired)
        if gone:
            held.forget(gone)
        out = []
        for i in best:
            row = found.get(int(held.ids[i]))
            if row is not None and row[2] > now:
                out.append(Neighbour(key=row[0], text=row[1], similarity=float(similarity[i])))
        return out[:count]

    async def entries(self, namespace: str | None = None) -> list[Entry]:
        query = "SELECT namespace, grp, key, text, created_at, expires_at FROM prompts WHERE prefix = ?"
        args: tuple[str, ...] = (self.prefix,)
        if namespace is not None:
            query, args = query + " AND namespace = ?", (*args, namespace)
        try:
            with self._lock:
                return [Entry(*row) for row in self._db.execute(query, args)]
        except sqlite3.Error as exc:
            raise CacheError(f"semantic index {self.path} failed: {exc}") from exc

    async def remove(self, entries: list[Entry]) -> int:
        try:
            with self._lock:
                cursor = self._db.executemany(
                    "DELETE FROM prompts WHERE prefix = ? AND namespace = ? AND grp = ? AND key = ?",
                    [(self.prefix, e.namespace, e.group, e.key) for e in entries],
                )
                return max(cursor.rowcount, 0)
        except sqlite3.Error as exc:
            raise CacheError(f"semantic index {self.path} failed: {exc}") from exc


def sqlite_index(path: Path, prefix: str) -> SqliteIndex:
    path = path.expanduser().resolve()
    with _indexes_lock:
        index = _indexes.get((path, prefix))
        if index is None:
            index = _indexes[(path, prefix)] = SqliteIndex(path, prefix)
        return index
