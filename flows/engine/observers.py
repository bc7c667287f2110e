"""Observers of pipeline runs: the seam for the ledger, artifacts and progress.

The engine tells every registered observer when a node finished (synchronous,
on the request path: keep it to a few microseconds, buffer anything slow) and
when the run ended, successfully or not (async: flush buffers, publish
artifacts). An observer that raises is logged and never fails the run.

    from flows.engine.observers import add_observer
    add_observer(MyObserver())

An observer that only cares for one kind of run says so with a `modes`
attribute (e.g. ``modes = frozenset({"orchestrated"})``); the engine then does
not call it for the others (an inline cache hit is counted in microseconds).
`node_done` is optional: an observer without it reads the run's node outputs
and reports at the end, from `RunInfo.values` and `RunInfo.reports`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flows.engine.results import NodeReport, RunResult
    from flows.language.compiler import Pipeline

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
    #: the run's context as it stands: inputs, settings, and each finished node's output by node id
    values: dict[str, Any] = field(default_factory=dict)
    #: the report of each finished node, by node id
    reports: dict[str, NodeReport] = field(default_factory=dict)


class RunObserver(Protocol):
    """`node_done(run, node_id, value, report)` may be defined too: it is then called as each node finishes."""

    async def run_done(self, run: RunInfo, result: RunResult | None, error: BaseException | None) -> None: ...


_observers: list[RunObserver] = []
_by_mode: dict[str, list[RunObserver]] = {}
_node_watchers: dict[str, list[RunObserver]] = {}


def add_observer(observer: RunObserver) -> None:
    if observer not in _observers:
        _observers.append(observer)
        _by_mode.clear()
        _node_watchers.clear()


def remove_observer(observer: RunObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)
        _by_mode.clear()
        _node_watchers.clear()


def observers() -> list[RunObserver]:
    return _observers


def observers_for(mode: str) -> list[RunObserver]:
    """The observers of runs of this mode (inline or orchestrated)."""
    chosen = _by_mode.get(mode)
    if chosen is None:
        chosen = _by_mode[mode] = [o for o in _observers if mode in getattr(o, "modes", (mode,))]
    return chosen


def node_observers_for(mode: str) -> list[RunObserver]:
    """The observers of runs of this mode that want to hear of each node."""
    chosen = _node_watchers.get(mode)
    if chosen is None:
        chosen = _node_watchers[mode] = [o for o in observers_for(mode) if hasattr(o, "node_done")]
    return chosen


def notify_node(run: RunInfo, node_id: str, value: Any, report: NodeReport, to: list[RunObserver] | None = None) -> None:
    for observer in _observers if to is None else to:
        try:
            observer.node_done(run, node_id, value, report)  # type: ignore[attr-defined]
        except Exception:  # an observer must never fail a request
            log.exception("run observer %r failed on node %s", observer, node_id)


async def notify_run(
    run: RunInfo, result: RunResult | None, error: BaseException | None, to: list[RunObserver] | None = None
) -> None:
    """Every observer hears of the run's end, at once: an orchestrated run's observers each make an API
    call (the Markdown and result artifacts, the cost table), ~60 ms apiece one after the other."""
    chosen = _observers if to is None else to
    if len(chosen) == 1:  # an inline run: the ledger alone
        await _run_done(chosen[0], run, result, error)
    elif chosen:
        await asyncio.gather(*(_run_done(observer, run, result, error) for observer in chosen))


async def _run_done(observer: RunObserver, run: RunInfo, result: RunResult | None, error: BaseException | None) -> None:
    try:
        await observer.run_done(run, result, error)
    except Exception:  # an observer must never fail a request
        log.exception("run observer %r failed at the end of the run", observer)
