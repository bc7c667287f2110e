"""Progress of `for_each:` nodes, for whoever shows it.

The engine reports (node, items done, total or None) as documents finish, at most
every `flows.engine.batch.PROGRESS_INTERVAL` seconds, whichever process ran them
(`flows.engine.remote_progress` for chunks on Dask workers); listeners show it: the
CLI draws a progress bar, orchestrated runs update a Prefect progress artifact
(see `flows.engine.runners`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("frugal")

Listener = Callable[[str, str, int, int | None], None]
"""(pipeline, node id, items done, total items or None)"""

_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def report(pipeline: str, node: str, done: int, total: int | None) -> None:
    for listener in list(_listeners):
        try:
            listener(pipeline, node, done, total)
        except Exception:  # a progress display must never fail a run
            log.exception("progress listener failed")


def percent(done: int, total: int | None) -> float:
    if not total:
        return 100.0 if done else 0.0
    return round(min(done / total, 1.0) * 100, 1)
