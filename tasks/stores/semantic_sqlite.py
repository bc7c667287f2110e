"""Embedded semantic index: a SQLite file next to the embedded cache, searched in process with numpy.

Rows hold the vector as a float32 blob, an `expires_at` and the normalised text's key
(`same_text`: one indexed SELECT, no vectors read). Each process keeps, per
(prefix, namespace, group), the group's vectors as one in-memory matrix, refreshed on each
query with the rows whose id is above the last one it read (ids only grow: AUTOINCREMENT),
so entries added by other processes are seen at once. The best few candidates are then
re-read from the file, so an entry removed or replaced elsewhere (a purge, a re-store) is
never served and is dropped from memory; an expired candidate is deleted from the file.

A query is a binary prefilter, then exact rescoring: each vector is also kept as its 512
sign bits (64 bytes); the `RESCORED` rows nearest in Hamming distance to the query's signs
are rescored with the exact float32 cosine, and the best of those are the candidates. A
group of at most `RESCORED` rows is rescored whole: exact. Measured on this 2-core host at
100k entries in one group (tests/benchmarks/bench_semantic.py, same run): the exact
product over the float32 matrix (200 MB read per query, memory-bound) took ~20-36 ms, the
prefilter (6.4 MB of bits) plus rescoring ~1-2 ms, with the same nearest neighbours on
every planted query and on every pair of evals/semantic (a cosine of 0.75 flips ~23 % of
the signs, an unrelated prompt ~40-50 %: the true neighbour is far inside the 256 kept).

Not an ANN graph (usearch HNSW, measured): building one for 100k vectors took minutes on
this host and must be redone in each process, and on spread-out vectors its top-1 was the
exact one for only 59 of 100 planted queries; the prefilter needs no build (appending a
row appends its bits), is deterministic, and keeps a threshold meaning the same at 1k and
100k entries.
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
#: rows nearest in Hamming distance rescored exactly (a group this small is searched exactly)
RESCORED = 256
#: 64-bit words of a vector's sign bits
WORDS = DIMENSIONS // 64

_indexes: dict[tuple[Path, str], SqliteIndex] = {}
_indexes_lock = threading.Lock()


def signs(vectors: np.ndarray) -> np.ndarray:
    """The sign bits of each row, as WORDS uint64 words: (n, WORDS)."""
    return np.packbits(vectors > 0, axis=-1).view(np.uint64).reshape(len(vectors), WORDS)


@dataclass
class _Group:
    """A group's vectors in memory: rows [0, size) of `matrix`, `ids[i]` the row id of row i, and
    their sign bits by column (`bits[w, i]`: word w of row i), so a Hamming pass reads 8 arrays."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, DIMENSIONS), dtype=np.float32))
    bits: np.ndarray = field(default_factory=lambda: np.zeros((WORDS, 0), dtype=np.uint64))
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
            bits = np.zeros((WORDS, capacity), dtype=np.uint64)
            bits[:, : self.size] = self.bits[:, : self.size]
            self.matrix, self.ids, self.bits = matrix, grown, bits
        self.matrix[self.size : needed] = vectors
        self.ids[self.size : needed] = ids
        self.bits[:, self.size : needed] = signs(vectors).T
        self.size = needed
        self.last_id = max(self.last_id, max(ids))

    def forget(self, row_ids: set[int]) -> None:
        """Drop the rows gone from the file (kept order; rare: purges, re-stores, expiries)."""
        keep = ~np.isin(self.ids[: self.size], list(row_ids))
        kept = int(keep.sum())
        self.matrix[:kept] = self.matrix[: self.size][keep]
        self.ids[:kept] = self.ids[: self.size][keep]
        self.bits[:, :kept] = self.bits[:, : self.size][:, keep]
        self.ids[kept : self.size] = -1
        self.size = kept

    def shortlist(self, vector: np.ndarray) -> np.ndarray:
        """Rows worth rescoring: all of a small group, else the RESCORED nearest in Hamming distance
        (with every row tied with the last one)."""
        if self.size <= RESCORED:
            return np.arange(self.size)
        query = signs(vector[None, :])[0]
        distance = np.zeros(self.size, dtype=np.uint16)
        word = np.empty(self.size, dtype=np.uint64)
        ones = np.empty(self.size, dtype=np.uint8)
        for w in range(WORDS):
            np.bitwise_xor(self.bits[w, : self.size], query[w], out=word)
            np.bitwise_count(word, out=ones)
            distance += ones
        # the RESCORED-th smallest distance, from a histogram: cheaper than a partition of every row
        cutoff = int(np.searchsorted(np.cumsum(np.bincount(distance, minlength=DIMENSIONS + 1)), RESCORED))
        return np.flatnonzero(distance <= cutoff)

    def nearest(self, vector: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact similarities) of the `count` most similar rows, most similar first."""
        rows = self.shortlist(vector)
        similarity = self.matrix[rows] @ vector
        count = min(count, len(rows))
        best = np.argpartition(-similarity, count - 1)[:count]
        best = best[np.argsort(-similarity[best])]
        return rows[best], similarity[best]


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
                "created_at REAL NOT NULL, expires_at REAL NOT NULL, text_key TEXT NOT NULL DEFAULT '', "
                "UNIQUE (prefix, namespace, grp, key))"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS prompts_by_group ON prompts (prefix, namespace, grp, id)")
            if "text_key" not in {row[1] for row in self._db.execute("PRAGMA table_info(prompts)")}:
                self._db.execute("ALTER TABLE prompts ADD COLUMN text_key TEXT NOT NULL DEFAULT ''")  # a file from before
            self._db.execute("CREATE INDEX IF NOT EXISTS prompts_by_text ON prompts (prefix, namespace, grp, text_key)")
        except (sqlite3.Error, OSError) as exc:
            raise CacheError(f"semantic index {path} cannot be opened: {exc}; check FRUGAL_DATA_DIR") from exc

    async def available(self) -> bool:
        return True

    async def add(
        self, namespace: str, group: str, key: str, text: str, vector: np.ndarray, ttl: int, text_key: str = ""
    ) -> None:
        now = time.time()
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO prompts (prefix, namespace, grp, key, text, vector, created_at, expires_at, "
                    "text_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.prefix, namespace, group, key, text, blob, now, now + ttl, text_key),
                )
        except sqlite3.Error as exc:
            raise CacheError(f"semantic index {self.path} failed: {exc}") from exc

    async def same_text(self, namespace: str, group: str, text_key: str) -> Neighbour | None:
        if not text_key:
            return None
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT key, text FROM prompts WHERE prefix = ? AND namespace = ? AND grp = ? AND text_key = ? "
                    "AND expires_at > ? ORDER BY id DESC LIMIT 1",
                    (self.prefix, namespace, group, text_key, time.time()),
                ).fetchone()
        except sqlite3.Error as exc:
            raise CacheError(f"semantic index {self.path} failed: {exc}") from exc
        return None if row is None else Neighbour(key=row[0], text=row[1], similarity=1.0)

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
        best, similarity = held.nearest(vector, max(count, CHECKED))
        ids = [int(held.ids[i]) for i in best]
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
        for row_id, score in zip(ids, similarity, strict=True):
            row = found.get(row_id)
            if row is not None and row[2] > now:
                out.append(Neighbour(key=row[0], text=row[1], similarity=float(score)))
        return out[:count]

    async def entries(self, namespace: str | None = None) -> list[Entry]:
        query = "SELECT namespace, grp, key, text, created_at, expires_at, text_key FROM prompts WHERE prefix = ?"
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
    with _indexes_lock:
        index = _indexes.get((path, prefix))  # as given: resolving (realpath's syscalls) cost ~0.2 ms a look-up
        if index is None:
            resolved = path.expanduser().resolve()
            index = _indexes.get((resolved, prefix))
            if index is None:
                index = _indexes[(resolved, prefix)] = SqliteIndex(resolved, prefix)
            _indexes[(path, prefix)] = index
        return index
