"""The ledger's spool: entries their store could not take, kept on local disk until it can.

An append-only JSONL file, ``FRUGAL_DATA_DIR/ledger-spool.jsonl``, one entry a
line with the ledger it belongs to: written by `append` (one ``write`` and one
``fsync`` per batch), and emptied by `replay`, which hands each ledger's lines
to a writer and keeps those it could not store. Every process writing to the
same data folder shares the file: an advisory lock (``ledger-spool.lock``,
`fcntl.flock`) makes an append and a replay exclusive. Replaying an entry twice
is harmless: stores keep one entry per id.

A line that does not parse (a process killed half-way through writing it) is
skipped and counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from flows.ledger.stores import Row, Target

NAME = "ledger-spool.jsonl"

#: what a replay hands a writer: a ledger, its retention in days, and its entries
Group = tuple[Target, int, list[Row]]


def spool_path(target: Target) -> Path:
    return Path(target.spool_dir) / NAME


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _line(target: Target, retention_days: int, row: Row) -> str:
    entry_id, ts, text = row
    ledger = [target.kind, target.location, target.key, target.timeout]
    return json.dumps({"ledger": ledger, "retention_days": retention_days, "id": entry_id, "ts": ts, "entry": text}) + "\n"


def append(target: Target, retention_days: int, rows: list[Row]) -> None:
    """Add `rows` to the spool, on disk when this returns (raises OSError, e.g. ENOSPC)."""
    if not rows:
        return
    path = spool_path(target)
    data = "".join(_line(target, retention_days, r) for r in rows).encode()
    with _locked(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)


def pending(spool_dir: str) -> bool:
    """Whether the spool in `spool_dir` holds anything (without taking the lock)."""
    try:
        return (Path(spool_dir) / NAME).stat().st_size > 0
    except FileNotFoundError:
        return False


def replay(spool_dir: str, write: Callable[[Target, int, list[Row]], bool]) -> tuple[int, int, int]:
    """Hand every spooled ledger's entries to `write` (True: stored); keep what it could not store.
    Returns (entries stored, entries kept, lines skipped as unreadable)."""
    path = Path(spool_dir) / NAME
    if not pending(spool_dir):
        return 0, 0, 0
    with _locked(path):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0, 0, 0
        groups: dict[tuple[Target, int], list[Row]] = {}
        kept_lines: list[bytes] = []
        skipped = 0
        for line in raw.splitlines():
            try:
                item = json.loads(line)
                kind, location, key, timeout = item["ledger"]
                target = Target(kind, location, key, float(timeout), spool_dir)
                groups.setdefault((target, int(item["retention_days"])), []).append(
                    (str(item["id"]), float(item["ts"]), str(item["entry"]))
                )
            except (ValueError, KeyError, TypeError):
                skipped += 1
        stored = kept = 0
        for (target, retention_days), rows in groups.items():
            if write(target, retention_days, rows):
                stored += len(rows)
            else:
                kept += len(rows)
                kept_lines.extend(_line(target, retention_days, r).encode() for r in rows)
        if kept_lines:
            fresh = path.with_suffix(".tmp")
            try:
                with fresh.open("wb") as f:
                    f.write(b"".join(kept_lines))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(fresh, path)
            except OSError:
                fresh.unlink(missing_ok=True)  # the spool stays as it was; what was stored is stored twice, harmlessly
                raise
        else:
            path.unlink(missing_ok=True)
        return stored, kept, skipped
