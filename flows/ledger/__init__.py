"""The cost ledger: what every model call and every cache hit cost, what it saved, and the quality it kept.

    entry.py     the entry, its counterfactual, its savings by cause and the answer check's verdict
    record.py    what a run's end copies out of its outputs, and the entries made from it
    stores.py    Redis (beside a Redis cache) or SQLite (beside the embedded cache)
    writer.py    the queue and background writer: cheap appends, nothing lost
    observer.py  the run observer that makes the entries and offers the run to the audit
    audit.py     the shadow audit: a sample of small answers re-asked of the large model, in the background
    labels.py    router labels from the ledger (and the prompts kept for them, if allowed)
    report.py    `frugal report`: spent, saved, and at what agreement with the large model

The observer is registered by the entry points (`flows.orchestration.observers.install`,
called by the CLI, `frugal serve` and each pipeline flow), so inline runs, orchestrated
runs and deployments are all recorded.
"""

from __future__ import annotations

from datetime import datetime

from flows.engine.observers import add_observer
from flows.ledger.entry import CAUSES, Cause, LedgerEntry, settle
from flows.ledger.observer import LEDGER, LedgerObserver, config
from flows.ledger.stores import open_ledger
from flows.ledger.writer import WRITER

__all__ = ["CAUSES", "LEDGER", "Cause", "LedgerEntry", "LedgerObserver", "flush", "install", "read_entries", "settle"]


def install() -> None:
    """Register the ledger observer (idempotent)."""
    add_observer(LEDGER)


def flush(timeout: float = 10.0) -> bool:
    """Write every entry this process has queued; False if some for the current ledger
    (per FRUGAL_CACHE_URL) could not be written in time."""
    return WRITER.flush(timeout, config().target)


def read_entries(since: datetime | None = None, until: datetime | None = None) -> list[LedgerEntry]:
    """The entries of the current ledger (per FRUGAL_CACHE_URL) in a time range, oldest first,
    after writing what this process queued and replaying what the spool holds for it."""
    target = config().target
    WRITER.flush(target=target)
    return open_ledger(target).read(since, until)
