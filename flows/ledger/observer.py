"""The run observer that turns a run's model calls and cache hits into ledger entries.

At the end of a run (or at its failure), `run_done` reads the outputs of its
`cache_lookup` nodes and model-call nodes and makes the entries: an
inline run that succeeded hands them to the writer's queue and returns at once;
an orchestrated run, or a run that failed, waits until they are stored (so a
paid call is on record before the failure goes further), and an orchestrated
run then publishes its cost table through `publish_table` (set by `flows.orchestration`).
A run that succeeded is then offered to the shadow audit (`flows.ledger.audit`), which
queues its sampled answers and returns at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flows.ledger.audit import AUDITOR
from flows.ledger.entry import LedgerEntry, Reference, settle
from flows.ledger.record import RECORDED_STEPS, RunRecord, make_entries, record
from flows.ledger.stores import Target, open_ledger, target_for
from flows.ledger.writer import WRITER, Batch
from tasks.core.errors import CacheError, FrugalError
from tasks.core.settings import Settings, get_settings
from tasks.providers.tiers import reference_model

if TYPE_CHECKING:
    from flows.engine.observers import RunInfo
    from flows.engine.results import RunResult

log = logging.getLogger("frugal")

#: inner runs (batch items) kept in memory per flow run for its cost table; beyond, it is read from the store
MAX_CHILDREN = 10_000
MAX_FLOW_RUNS = 32


@dataclass(frozen=True)
class _Config:
    enabled: bool
    target: Target
    reference: Reference
    retention_days: int


_config: tuple[Settings, _Config] | None = None


def config() -> _Config:
    """Where entries go and what they are measured against, read once per settings snapshot."""
    global _config
    s = get_settings()
    if _config is None or _config[0] is not s:
        reference = Reference.of(reference_model())
        if s.ledger.enabled and reference.rates is None:
            log.warning(
                "cost ledger: the reference model '%s' has no price, so savings are recorded as null; set "
                "FRUGAL_REFERENCE_MODEL to a priced model (e.g. openai/gpt-4o) or price it in FRUGAL_PRICE_OVERRIDES",
                reference.model,
            )
        _config = (s, _Config(s.ledger.enabled, target_for(s.cache, s.engine), reference, s.ledger.retention_days))
    return _config[1]


#: publishes an orchestrated run's cost table: (pipeline, entries, failed, per_model)
TablePublisher = Callable[[str, list[LedgerEntry], bool, bool], Awaitable[None]]


class LedgerObserver:
    """Records every model call and every cache hit of every run, inline or orchestrated."""

    def __init__(self) -> None:
        #: records of inline runs inside a flow run (batch items), by flow run id, for its cost table
        self._children: dict[str, list[RunRecord]] = {}
        #: set by the Prefect integration (`flows.orchestration`): each flow run's cost table artifact
        self.publish_table: TablePublisher | None = None
        #: flow runs whose inner runs were (also) recorded by other processes (batch chunks on Dask
        #: workers), with when they began: their cost table is read back from the shared store
        self._elsewhere: dict[str, float] = {}

    def recorded_elsewhere(self, flow_run_id: str, since: float) -> None:
        """Inner runs of this flow run are recorded by other processes from `since` (a Unix time) on."""
        if len(self._elsewhere) >= MAX_FLOW_RUNS:
            self._elsewhere.pop(next(iter(self._elsewhere)))
        self._elsewhere.setdefault(flow_run_id, since)

    async def run_done(self, run: RunInfo, result: RunResult | None, error: BaseException | None) -> None:
        values = run.values
        seen = [
            (node_id, values.get(node_id), report)
            for node_id, report in run.reports.items()
            if report.model is not None or report.uses in RECORDED_STEPS
        ]
        for problem in WRITER.problems():
            log.warning("cost ledger: %s", problem)
        try:
            cfg = config()
        except FrugalError as exc:
            log.warning("cost ledger: not recording this run: %s", exc)
            return
        if not cfg.enabled:
            return
        rec = record(run, seen or [])
        if error is None and rec.seen:
            AUDITOR.consider(run, rec, cfg.target, cfg.reference, cfg.retention_days)
        if run.mode == "inline" and rec.flow_run_id is not None and rec.seen:
            self._adopt(rec)  # a batch item or a sub-pipeline: its flow run's cost table shows it
        if run.mode == "inline" and error is None:
            if rec.seen:  # stored within LINGER seconds by the writer's thread (see writer.py)
                WRITER.submit_record(cfg.target, cfg.reference, cfg.retention_days, rec)
            return
        made = [settle(entry, cfg.reference) for entry in make_entries(rec)]
        if made:
            await WRITER.write(Batch(cfg.target, cfg.reference, cfg.retention_days, entries=made, settled=True))
        if run.mode == "orchestrated":
            inner = await self._children_of(run.flow_run_id, cfg)
            if self.publish_table is not None:
                await self.publish_table(run.pipeline.spec.name, made + inner, error is not None, bool(inner))

    def forget(self, flow_run_id: str) -> None:
        """Drop what this process kept for a flow run's cost table: a worker that runs some of the
        run's chunks (they are stored; the flow reads them back) while the flow ends elsewhere."""
        self._children.pop(flow_run_id, None)

    def _adopt(self, rec: RunRecord) -> None:
        assert rec.flow_run_id is not None
        children = self._children.get(rec.flow_run_id)
        if children is None:
            if len(self._children) >= MAX_FLOW_RUNS:  # flow runs that never ended here (not frugal flows)
                self._children.pop(next(iter(self._children)))
            children = self._children[rec.flow_run_id] = []
        if len(children) <= MAX_CHILDREN:  # one past the limit marks the overflow: the table is read back from the store
            children.append(rec)

    async def _children_of(self, flow_run_id: str | None, cfg: _Config) -> list[LedgerEntry]:
        children = self._children.pop(flow_run_id, []) if flow_run_id else []
        elsewhere = self._elsewhere.pop(flow_run_id, None) if flow_run_id else None
        if elsewhere is None and len(children) <= MAX_CHILDREN:
            return [settle(entry, cfg.reference) for child in children for entry in make_entries(child)]
        starts = [children[0].ts] if children else []
        if elsewhere is not None:
            starts.append(elsewhere)
        since = datetime.fromtimestamp(min(starts) - 1, UTC)

        def read() -> list[LedgerEntry]:
            WRITER.flush()
            return [e for e in open_ledger(cfg.target).read(since) if e.flow_run_id == flow_run_id and e.mode == "inline"]

        try:
            return await asyncio.to_thread(read)
        except CacheError as exc:
            log.warning("cost ledger: the run's cost table leaves out its inner runs (batch items): %s", exc)
            return []


LEDGER = LedgerObserver()
