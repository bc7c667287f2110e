"""Observers of pipeline runs: the seam for the ledger, artifacts and progress.

The engine tells every registered observer when a node finished (synchronous,
on the request path: keep it to a few microseconds, buffer anything slow) and
when the run ended, successfully or not (async: flush buffers, publish
artifacts). An observer that raises is logged and never fails the run.

    from flows.observers import add_observer
    add_observer(MyObserver())
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flows.compiler import Pipeline
    from flows.results import NodeReport, RunResult

log = logging.getLogger("frugal")


@dataclass
class RunInfo:
    """Who is running what: handed to observers."""

    pipeline: Pipeline
    mode: str
    inputs: dict[str, Any]
    flow_run_id: str | None = None
    deployment_id: str | None = None
    #: observers may keep per-run state here, under their own key
    state: dict[str, Any] = field(default_factory=dict)


class RunObserver(Protocol):
    def node_done(self, run: RunInfo, node_id: str, value: Any, report: NodeReport) -> None: ...

    async def run_done(self, run: RunInfo, result: RunResult | None, error: BaseException | None) -> None: ...


_observers: list[RunObserver] = []


def add_observer(observer: RunObserver) -> None:
    if observer not in _observers:
        _observers.append(observer)


def remove_observer(observer: RunObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)


def observers() -> list[RunObserver]:
    return _observers


def notify_node(run: RunInfo, node_id: str, value: Any, report: NodeReport) -> None:
    for observer in _observers:
        try:
            observer.node_done(run, node_id, value, report)
        except Exception:  # an observer must never fail a request
            log.exception("run observer %r failed on node %s", observer, node_id)


async def notify_run(run: RunInfo, result: RunResult | None, error: BaseException | None) -> None:
    for observer in _observers:
        try:
            await observer.run_done(run, result, error)
        except Exception:  # an observer must never fail a request
            log.exception("run observer %r failed at the end of the run", observer)
