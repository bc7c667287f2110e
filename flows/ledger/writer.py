"""The ledger's writer: entries reach their store off the request path, and none is lost silently.

One daemon thread per process takes work from a `queue.SimpleQueue`. A run's
entries are queued when it ends: an inline run queues its record (a few scalars
copied on the request path, `submit_record`), and the thread makes, settles and
serialises its entries (`flows.ledger.record.rows`); orchestrated runs and failed
runs queue settled entries and wait until they are stored (`write`), so a paid
call is on record before a failure goes further.

The thread gathers what comes within `LINGER` seconds of the first item (at most
`MAX_BATCH` items; a run waiting for its entries or a `flush` ends the wait),
then writes each ledger's share in one round trip or one transaction: a cache
hit's run pays a queue put, not a store write. It sleeps through the linger and
then takes what came, rather than waking for every item: on an all-cached batch
rerun the per-item wake-ups were ~6 % of the process's CPU.

Nothing is dropped without a word:

- what a store cannot take (Redis down, a full disk, a locked file) goes to the
  spool (`flows.ledger.spool`: a JSONL file in FRUGAL_DATA_DIR, one `fsync` per
  batch); the spool is replayed every `RETRY_SECONDS`, at `flush` (so `frugal
  report` and `read_entries` replay it first), and by the next process to write
  the same ledger;
- what the spool cannot take either (the disk is full) is kept in memory, up to
  `MAX_PENDING` entries, and retried; beyond that the oldest are dropped;
- every such event is said: `problems` (logged by the next run) and, at exit,
  on stderr.

What a SIGKILL loses: the entries queued and not yet written or spooled, that is
those of the last `LINGER` seconds, plus one round being written (docs/ledger.md).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.ledger import spool
from flows.ledger.entry import LedgerEntry, Reference, settle
from flows.ledger.record import RunRecord, rows
from flows.ledger.stores import Row, Target, open_ledger, row
from tasks.core.errors import CacheError

log = logging.getLogger("frugal")

#: seconds the writer waits after a run's entries arrive to gather more into the same write: what a
#: SIGKILL can lose is about this long a stretch of runs; a write round costs ~1 ms (one transaction or
#: one round trip), so 20 rounds a second under full load are ~2 % of a core
LINGER = 0.05
#: items (runs) gathered into one write at most
MAX_BATCH = 10_000
#: seconds between retries of a store that could not be written (the spool and what is held in memory)
RETRY_SECONDS = 5.0
#: entries kept in memory when neither their store nor the spool can take them; the oldest are dropped beyond
MAX_PENDING = 100_000


@dataclass
class Batch:
    """One run's entries (or inline runs' records), and where they go."""

    target: Target
    reference: Reference
    retention_days: int
    entries: list[LedgerEntry] = field(default_factory=list)
    #: or the raw records of inline runs, made into entries by the writer's thread
    records: list[RunRecord] | None = None
    settled: bool = False
    done: concurrent.futures.Future[bool] | None = field(default=None, repr=False)

    def prepare(self) -> list[Row]:
        """The entries as stored: made, settled and serialised."""
        if self.records is not None:
            return [made for rec in self.records for made in rows(rec, self.reference)]
        if not self.settled:
            for entry in self.entries:
                settle(entry, self.reference)
            self.settled = True
        return [row(entry) for entry in self.entries]


@dataclass
class _Flush:
    """A request to write everything queued before it, retry what failed, and say whether `target` is clean."""

    target: Target | None
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = True


@dataclass
class _Held:
    """Entries neither their store nor the spool could take: kept in memory, retried."""

    target: Target
    retention_days: int
    rows: list[Row]


class LedgerWriter:
    """A queue and one daemon thread per process."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[Batch | _Flush] = queue.SimpleQueue()
        self._waited_for = threading.Event()  # an item someone waits for was queued: stop lingering
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._held: list[_Held] = []
        self._spooled: set[str] = set()  # spool folders that hold entries to replay
        self._seen: set[str] = set()  # spool folders looked at since the thread started
        self._unstored: set[Target] = set()  # ledgers whose last replay kept entries
        self._next_retry = 0.0
        self._said = threading.Lock()
        #: what went wrong since it was last said: the thread never logs it (it may outlive the log's streams)
        self._problems: list[str] = []

    # -- the caller's side -----------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        """Queue a batch; it is written within about `LINGER` seconds."""
        self._ensure_thread()
        self._queue.put(batch)
        if batch.done is not None:
            self._waited_for.set()

    def submit_record(self, target: Target, reference: Reference, retention_days: int, record: RunRecord) -> None:
        """Queue one inline run's record (the request path of a cache hit: a queue put)."""
        self.submit(Batch(target, reference, retention_days, records=[record]))

    async def write(self, batch: Batch) -> bool:
        """Queue a batch and wait until it is stored; False if its store could not take it (then it
        is in the spool, or held in memory, and retried)."""
        batch.done = concurrent.futures.Future()
        self.submit(batch)
        return await asyncio.wrap_future(batch.done)

    def flush(self, timeout: float = 10.0, target: Target | None = None) -> bool:
        """Write everything queued now, replay the spool (of `target`'s folder too), and wait for it;
        False if something (for `target`, if given) is not in its store after that, or not in time."""
        marker = _Flush(target)
        self._ensure_thread()
        self._queue.put(marker)
        self._waited_for.set()
        return marker.done.wait(timeout) and marker.ok

    def problems(self) -> list[str]:
        """What went wrong since the last call: the request path logs it (`flows.ledger.observer`)."""
        if not self._problems:  # the usual case, without taking the lock
            return []
        with self._said:
            said, self._problems = self._problems, []
        return said

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child that was not reset (register_at_fork covers os.fork)
            self._reset()
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="frugal-ledger-writer", daemon=True)
                    self._thread.start()

    # -- the thread's side -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            waiting = bool(self._held or self._spooled)
            try:
                first = self._queue.get(timeout=RETRY_SECONDS if waiting else None)
            except queue.Empty:
                self._guarded(self._retry)
                continue
            items = [first]
            if not _urgent(first):
                self._waited_for.wait(LINGER)
            self._waited_for.clear()
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._guarded(self._round, items)

    def _guarded(self, work: Callable[..., None], *args: Any) -> None:
        """Run a round; a bug must not stop the writer: it is said (the round's entries stay where they were)."""
        try:
            work(*args)
        except Exception as exc:
            self._say(f"writer failed: {type(exc).__name__}: {exc}")

    def _round(self, items: list[Batch | _Flush]) -> None:
        groups: dict[Target, tuple[int, list[Row], list[Batch]]] = {}
        flushes: list[_Flush] = []
        for item in items:
            if isinstance(item, _Flush):
                flushes.append(item)
                if item.target is not None:
                    self._look_at(item.target)
                continue
            self._look_at(item.target)
            try:
                made = item.prepare()
            except Exception as exc:  # entries that cannot be made are a bug: say it, answer the waiting run
                self._say(f"{item.target.describe()}: entries of a run could not be made: {type(exc).__name__}: {exc}")
                _resolve(item.done, False)
                continue
            retention, stored, batches = groups.setdefault(item.target, (item.retention_days, [], []))
            stored.extend(made)
            batches.append(item)
            if item.retention_days > retention:
                groups[item.target] = (item.retention_days, stored, batches)
        for target, (retention, stored, batches) in groups.items():
            ok = self._store(target, retention, stored)
            for batch in batches:
                _resolve(batch.done, ok)
        if flushes or time.monotonic() >= self._next_retry:
            self._retry()
        for marker in flushes:
            marker.ok = not self._dirty(marker.target)
            marker.done.set()

    def _look_at(self, target: Target) -> None:
        """The first time a spool folder is met: what an earlier process left there is replayed."""
        folder = target.spool_dir
        if folder and folder not in self._seen:
            self._seen.add(folder)
            if spool.pending(folder):
                self._spooled.add(folder)
                self._next_retry = 0.0

    def _store(self, target: Target, retention_days: int, stored: list[Row]) -> bool:
        """Write to the store; on failure keep the entries (spool, else memory). True if stored."""
        if not stored:
            return True
        try:
            open_ledger(target).append(stored, retention_days)
            return True
        except CacheError as exc:
            self._keep(target, retention_days, stored, str(exc))
            return False

    def _keep(self, target: Target, retention_days: int, stored: list[Row], why: str) -> None:
        try:
            if not target.spool_dir:
                raise OSError("no data folder for a spool")
            spool.append(target, retention_days, stored)
        except OSError as exc:
            self._held.append(_Held(target, retention_days, stored))
            self._bound_held()
            self._say(
                f"{len(stored)} entries kept in memory (the spool cannot be written: {exc}), retried every "
                f"{RETRY_SECONDS:g} s: {why}"
            )
        else:
            self._spooled.add(target.spool_dir)
            self._say(f"{len(stored)} entries kept in {spool.spool_path(target)}, replayed when the store is back: {why}")
        self._next_retry = time.monotonic() + RETRY_SECONDS

    def _bound_held(self) -> None:
        total = sum(len(h.rows) for h in self._held)
        while self._held and total > MAX_PENDING:
            dropped = self._held.pop(0)
            total -= len(dropped.rows)
            self._say(f"{dropped.target.describe()} and its spool unwritable too long: {len(dropped.rows)} entries dropped")

    def _retry(self) -> None:
        """Try again what memory holds, then replay the spools."""
        held, self._held = self._held, []
        for item in held:
            try:
                open_ledger(item.target).append(item.rows, item.retention_days)
            except CacheError as exc:
                try:
                    spool.append(item.target, item.retention_days, item.rows)
                    self._spooled.add(item.target.spool_dir)
                except OSError as spool_error:
                    self._held.append(item)
                    self._say(f"{len(item.rows)} entries still held in memory: {exc}; spool: {spool_error}")
        self._unstored = {h.target for h in self._held}
        for folder in sorted(self._spooled):
            try:
                stored, kept, skipped = spool.replay(folder, self._replay_group)
            except OSError as exc:
                self._say(f"the spool in {folder} cannot be replayed: {exc}")
                continue
            if skipped:
                self._say(f"{skipped} unreadable lines skipped in {folder}/{spool.NAME} (a write cut short)")
            if stored:
                log.debug("cost ledger: %d entries replayed from %s/%s", stored, folder, spool.NAME)
            if not kept:
                self._spooled.discard(folder)
        self._next_retry = time.monotonic() + RETRY_SECONDS

    def _replay_group(self, target: Target, retention_days: int, stored: list[Row]) -> bool:
        try:
            open_ledger(target).append(stored, retention_days)
            return True
        except CacheError:
            self._unstored.add(target)
            return False

    def _dirty(self, target: Target | None) -> bool:
        if target is None:
            return bool(self._held or self._spooled)
        return target in self._unstored

    def _say(self, problem: str) -> None:
        with self._said:
            if problem not in self._problems and len(self._problems) < 20:
                self._problems.append(problem)


def _urgent(item: Batch | _Flush) -> bool:
    """Someone waits for it: write without lingering."""
    return isinstance(item, _Flush) or item.done is not None


def _resolve(future: concurrent.futures.Future[bool] | None, ok: bool) -> None:
    if future is None or future.done():
        return
    try:
        future.set_result(ok)
    except concurrent.futures.InvalidStateError:
        log.debug("cost ledger: the run waiting for its entries was cancelled; they are kept all the same")


WRITER = LedgerWriter()
# a forked child starts empty, without the parent's thread: the parent writes what it queued
os.register_at_fork(after_in_child=WRITER._reset)


@atexit.register
def _flush_at_exit() -> None:
    if WRITER._thread is None:
        return
    clean = WRITER.flush(timeout=10.0)
    problems = WRITER.problems()
    if not clean and not problems:
        where = ", ".join(f"{folder}/{spool.NAME}" for folder in sorted(WRITER._spooled)) or "memory"
        problems = [f"some entries are not in their store yet; they wait in {where}"]
    for problem in problems:
        # straight to stderr: at exit, logging handlers may hold streams already closed
        print(f"frugal: cost ledger, at exit: {problem}", file=sys.stderr)
