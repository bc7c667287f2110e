"""The ledger's writer: entries reach their store off the request path, and are not lost.

A run's entries are handed over when it ends. An inline run's record joins the
open batch (`submit_record`: one append, no batch of its own; an inline cache
hit must cost what Redis costs); other runs `submit` a batch each.
Making, settling (counterfactual and savings, see `flows.ledger.entry`) and
serialising them (`Batch.prepare`, ~8 µs a run) is Python work that holds the
GIL, so it is not done by the background thread while requests run: any thread
that takes the GIL makes the request path wait for it back, measurably. Instead
the request path prepares the queued runs itself, `PREPARE_EVERY` at a time (one
request in that many pays ~2 ms), and the thread does the rest only when traffic
is too low to reach that count within `LINGER` seconds. The thread then writes
everything queued for a store, already serialised, in one round trip or one
transaction. `write` is the same
but waits until the batch is stored: orchestrated runs and failed runs use it,
so the entries of a run that failed after a paid call are stored before the
failure goes further. A store that cannot be reached keeps its entries queued
(up to `MAX_PENDING`) and is retried; what is still queued when the process
exits is written then (`atexit`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from flows.ledger.entry import LedgerEntry, Reference, settle
from flows.ledger.record import RunRecord, rows
from flows.ledger.stores import Row, Target, open_ledger, row
from tasks.core.errors import CacheError

log = logging.getLogger("frugal")

#: seconds the writer waits to gather more entries before a background write
LINGER = 0.25
#: seconds between retries of a store that could not be written
RETRY_SECONDS = 5.0
#: entries kept in memory for a store that is down; older ones are dropped beyond this, with an error
MAX_PENDING = 100_000
#: queued runs the request path prepares at once
PREPARE_EVERY = 256
#: pause after the thread prepares a run: long enough for a thread waiting for the GIL (the request
#: path) to take it; a mere sleep(0) hands the GIL back to this thread before the other one wakes up
YIELD_SECONDS = 0.00005


@dataclass
class Batch:
    """One run's entries, and where they go."""

    target: Target
    reference: Reference
    retention_days: int
    entries: list[LedgerEntry] = field(default_factory=list)
    #: or the raw records of inline runs, gathered while the batch is open (`submit_record`), made
    #: into entries later (off the request path)
    records: list[RunRecord] | None = None
    settled: bool = False
    #: the entries as stored, once made (kept for a retry)
    rows: list[Row] | None = None
    done: concurrent.futures.Future[bool] | None = field(default=None, repr=False)
    queued_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def size(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        if self.records is not None:
            return sum(len(rec.seen) for rec in self.records)
        return len(self.entries)

    def prepare(self, wait: bool = True) -> None:
        """Make, settle and serialise the entries, once (`wait=False`: unless another thread is at it)."""
        if self.rows is not None or not self._lock.acquire(blocking=wait):
            return
        try:
            if self.rows is None:
                if self.records is not None:
                    self.rows = [made for rec in self.records for made in rows(rec, self.reference)]
                else:
                    if not self.settled:
                        for entry in self.entries:
                            settle(entry, self.reference)
                        self.settled = True
                    self.rows = [row(entry) for entry in self.entries]
        finally:
            self._lock.release()


class LedgerWriter:
    """A queue and one daemon thread per process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: deque[Batch] = deque()
        self._unprepared: list[Batch] = []  # queued by the request path, not prepared yet
        self._open: Batch | None = None  # the batch `submit_record` adds runs to (queued already)
        self._failed: list[Batch] = []
        self._urgent = False
        self._busy = False
        self._rounds = 0  # write rounds done
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        #: what went wrong since it was last said: the thread never logs (it may outlive the log's streams)
        self._problems: list[str] = []

    # -- the caller's side -----------------------------------------------------------

    def submit(self, batch: Batch) -> int:
        """Queue a batch; it is written within about `LINGER` seconds. Returns how many queued runs
        are not prepared yet: at `PREPARE_EVERY`, the caller should `prepare_queued`."""
        with self._cond:
            return self._queue(batch)

    def submit_record(self, target: Target, reference: Reference, retention_days: int, record: RunRecord) -> int:
        """Queue one inline run's record into the open batch (no batch per run: this is the request
        path of a cache hit). Returns how many runs the open batch holds: at `PREPARE_EVERY`, the
        caller should `prepare_queued`, which closes it."""
        with self._cond:
            batch = self._open
            if batch is None or batch.target is not target or batch.reference is not reference:
                batch = self._open = Batch(target, reference, retention_days, records=[])
                self._queue(batch)
            assert batch.records is not None
            batch.records.append(record)
            return len(batch.records)

    def _queue(self, batch: Batch) -> int:
        """Queue `batch` (the caller holds `self._cond`); how many queued batches are not prepared yet."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="frugal-ledger-writer", daemon=True)
            self._thread.start()
        was_idle = not self._pending
        batch.queued_at = time.monotonic()
        self._pending.append(batch)
        if batch.rows is None and batch.done is None:
            self._unprepared.append(batch)
        if batch.done is not None:
            self._urgent = True
        if was_idle or batch.done is not None:
            self._cond.notify_all()
        return len(self._unprepared)

    def prepare_queued(self) -> None:
        """Prepare the queued runs on the calling thread (the request path), so the writer thread only writes."""
        with self._cond:
            batches, self._unprepared = self._unprepared, []
            self._open = None  # prepared below: later runs go to a new batch
        for batch in batches:
            try:
                batch.prepare(wait=False)
            except Exception as exc:  # never fail a request: the writer thread tries again and reports it
                log.debug("cost ledger: entries left to the writer thread: %s", exc)

    async def write(self, batch: Batch) -> bool:
        """Queue a batch and wait until it is stored; False if its store could not be written (it is retried)."""
        batch.done = concurrent.futures.Future()
        self.submit(batch)
        return await asyncio.wrap_future(batch.done)

    def flush(self, timeout: float = 10.0, target: Target | None = None) -> bool:
        """Write everything queued now and wait for it; False if something (for `target`, if given)
        could not be written in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                return True
            if not (self._pending or self._failed or self._busy):
                return True
            start = self._rounds
            self._urgent = True
            self._cond.notify_all()
            # one whole round after this call: what was queued, and what had failed, is tried again
            while self._rounds <= start or self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not any(target is None or b.target == target for b in self._failed)

    def problems(self) -> list[str]:
        """What went wrong since the last call: the request path logs it (`flows.ledger.observer`)."""
        if not self._problems:  # the usual case, without taking the lock
            return []
        with self._cond:
            said, self._problems = self._problems, []
        return said

    def _reset(self) -> None:
        self._cond = threading.Condition()  # another thread may have held the old one at the fork
        self._pending.clear()
        self._unprepared = []
        self._open = None
        self._failed.clear()
        self._thread = None
        self._busy = self._urgent = False
        self._pid = os.getpid()

    # -- the thread's side -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._failed:
                    self._cond.wait()
                if not self._pending and not self._urgent:  # only failed batches: retry after a pause, or sooner
                    self._cond.wait(RETRY_SECONDS)
                deadline = time.monotonic() + LINGER
                while not self._urgent and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                # runs the request path will prepare soon stay queued (see the module's docstring)
                ripe = time.monotonic() - LINGER
                stay = [] if self._urgent else [b for b in self._pending if b.rows is None and b.queued_at > ripe]
                if stay:
                    staying = set(map(id, stay))
                    batches = [*self._failed, *(b for b in self._pending if id(b) not in staying)]
                    self._pending = deque(stay)
                    self._unprepared = [b for b in self._unprepared if id(b) in staying]
                    if self._open is not None and id(self._open) not in staying:
                        self._open = None  # taken: later runs go to a new batch
                else:
                    batches = [*self._failed, *self._pending]
                    self._pending.clear()
                    self._unprepared = []
                    self._open = None
                self._failed.clear()
                self._urgent = False
                self._busy = True
            try:
                failed = self._write(batches)
            except Exception as exc:  # a bug must not stop the writer: say it, drop what cannot be written
                self._say(f"{sum(b.size for b in batches)} entries dropped: {type(exc).__name__}: {exc}")
                failed = []
                for batch in batches:
                    if batch.done is not None and not batch.done.done():
                        _resolve(batch.done, False)
            with self._cond:
                self._failed.extend(failed)
                self._busy = False
                self._rounds += 1
                self._cond.notify_all()

    def _write(self, batches: list[Batch]) -> list[Batch]:
        """Make, settle, serialise and store `batches`; return those whose store could not be written."""
        by_target: dict[Target, list[Batch]] = {}
        for batch in batches:
            if batch.rows is None:  # traffic too low to reach PREPARE_EVERY: the request path hardly waits
                batch.prepare()
                time.sleep(YIELD_SECONDS)
            by_target.setdefault(batch.target, []).append(batch)
        failed: list[Batch] = []
        for target, group in by_target.items():
            stored = [r for b in group for r in b.rows or ()]
            try:
                open_ledger(target).append(stored, max(b.retention_days for b in group))
                ok = True
            except CacheError as exc:
                self._say(f"{len(stored)} entries not written yet, retried every {RETRY_SECONDS:g} s: {exc}")
                ok = False
                failed.extend(group)
            for batch in group:
                if batch.done is not None and not batch.done.done():
                    _resolve(batch.done, ok)
        return self._bounded(failed)

    def _say(self, problem: str) -> None:
        with self._cond:
            if problem not in self._problems and len(self._problems) < 20:
                self._problems.append(problem)

    def _bounded(self, failed: list[Batch]) -> list[Batch]:
        total = sum(b.size for b in failed)
        while failed and total > MAX_PENDING:
            dropped = failed.pop(0)
            total -= dropped.size
            self._say(f"{dropped.target.describe()} unreachable too long: {dropped.size} entries dropped")
        return failed


def _resolve(future: concurrent.futures.Future[bool], ok: bool) -> None:
    try:
        future.set_result(ok)
    except concurrent.futures.InvalidStateError:
        log.debug("cost ledger: the run waiting for its entries was cancelled; they are stored all the same")


WRITER = LedgerWriter()
# a forked child starts empty, without the parent's thread: the parent writes what it queued
os.register_at_fork(after_in_child=WRITER._reset)


@atexit.register
def _flush_at_exit() -> None:
    if not WRITER.flush(timeout=10.0):
        # straight to stderr: at exit, logging handlers may hold streams already closed
        for problem in WRITER.problems():
            print(f"frugal: cost ledger, at exit: {problem}", file=sys.stderr)
