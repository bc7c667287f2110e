"""The run observer that turns a run's model calls and cache hits into ledger entries.

`node_done` (on the request path) only keeps a reference to the outputs of
`cache_lookup` nodes and model-call nodes. `run_done` makes the entries: an
inline run that succeeded hands them to the writer's queue and returns at once;
an orchestrated run, or a run that failed, waits until they are stored (so a
paid call is on record before the failure goes further), and an orchestrated
run then publishes its cost table (`flows.cost_artifact`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flows import cost_artifact
from flows.errors import FrugalError
from flows.ledger.entry import LedgerEntry, settle
from flows.ledger.stores import Target, target_for
from flows.ledger.writer import WRITER, Batch
from flows.settings import Settings, get_settings
from tasks.pricing import rates_for, reference_model

if TYPE_CHECKING:
    from flows.observers import RunInfo
    from flows.results import NodeReport, RunResult

log = logging.getLogger("frugal")

_STATE_KEY = "ledger"
_ZERO = Decimal(0)


@dataclass(frozen=True)
class _Config:
    enabled: bool
    target: Target
    reference: str | None
    retention_days: int


_config: tuple[Settings, _Config] | None = None


def config() -> _Config:
    """Where entries go and what they are measured against, read once per settings snapshot."""
    global _config
    s = get_settings()
    if _config is None or _config[0] is not s:
        reference = reference_model()
        if s.ledger.enabled and rates_for(reference) is None:
            log.warning(
                "cost ledger: the reference model '%s' has no price, so savings are recorded as null; set "
                "FRUGAL_REFERENCE_MODEL to a priced model (e.g. openai/gpt-4o) or price it in FRUGAL_PRICE_OVERRIDES",
                reference,
            )
        _config = (s, _Config(s.ledger.enabled, target_for(s.cache, s.engine), reference, s.ledger.retention_days))
    return _config[1]


def _money(value: Any) -> Decimal | None:
    """A cost as the answer's JSON carries it (a float, exact to its shortest repr) back to Decimal."""
    return None if value is None else Decimal(str(value))


def _tokens(entry: dict[str, Any], usage: dict[str, Any] | None) -> None:
    if usage:
        entry["input_tokens"] = usage.get("input_tokens", 0)
        entry["output_tokens"] = usage.get("output_tokens", 0)
        entry["cached_input_tokens"] = usage.get("cached_input_tokens", 0)
        entry["cache_write_tokens"] = usage.get("cache_write_tokens", 0)
        entry["estimated"] = usage.get("estimated", False)


def build_entries(run: RunInfo, seen: list[tuple[str, Any, NodeReport]]) -> list[LedgerEntry]:
    """The entries of one run, unsettled (no counterfactual yet): cheap, it runs on the request path."""
    if not seen:
        return []
    ts = datetime.now(UTC)
    run_id = run.flow_run_id or run.state.get("run_id") or uuid.uuid4().hex
    spec = run.pipeline.spec
    common = {
        "ts": ts,
        "run_id": run_id,
        "pipeline": spec.name,
        "version": spec.version,
        "mode": run.mode,
        "deployment_id": run.deployment_id,
        "flow_run_id": run.flow_run_id,
        "namespace": str(run.inputs.get("namespace") or "default"),
    }
    cache = "none"
    entries: list[LedgerEntry] = []
    for node_id, value, report in seen:
        if not isinstance(value, dict):
            continue
        fields: dict[str, Any]
        if report.uses == "cache_lookup":
            cache = value.get("cache") or cache
            answer = value.get("answer")
            if not (value.get("hit") and isinstance(answer, dict)):
                continue
            fields = {"kind": "hit", "model": answer["model"], "route": answer["route"], "cache": "hit", "cost": _ZERO}
            _tokens(fields, answer.get("usage"))
        elif "tier" in value and isinstance(value.get("model"), str):
            replay = report.status == "cache_hit"  # Prefect served the call from its result cache: nothing paid now
            fields = {
                "kind": "call",
                "model": value["model"],
                "route": value["tier"],
                "cache": "result" if replay else cache,
                "valid": bool(value.get("valid", True)),
                "cost": _ZERO if replay else _money(value.get("cost_usd")),
                "uncached_cost": _ZERO if replay else _money(value.get("uncached_cost_usd")),
            }
            _tokens(fields, value.get("usage"))
        else:
            continue
        entries.append(LedgerEntry.model_construct(id=f"{run_id}:{node_id}", node=node_id, **common, **fields))
    return entries


class LedgerObserver:
    """Records every model call and every cache hit of every run, inline or orchestrated."""

    def node_done(self, run: RunInfo, node_id: str, value: Any, report: NodeReport) -> None:
        if report.model is not None or report.uses == "cache_lookup":
            seen = run.state.get(_STATE_KEY)
            if seen is None:
                run.state[_STATE_KEY] = [(node_id, value, report)]
            else:
                seen.append((node_id, value, report))

    async def run_done(self, run: RunInfo, result: RunResult | None, error: BaseException | None) -> None:
        seen = run.state.pop(_STATE_KEY, None)
        for problem in WRITER.problems():
            log.warning("cost ledger: %s", problem)
        try:
            cfg = config()
        except FrugalError as exc:
            log.warning("cost ledger: not recording this run: %s", exc)
            return
        if not cfg.enabled:
            return
        entries = build_entries(run, seen or [])
        batch = Batch(cfg.target, cfg.reference, cfg.retention_days, entries)
        if run.mode == "inline" and error is None:
            if entries:
                WRITER.submit(batch)
            return
        for entry in entries:
            settle(entry, cfg.reference)
        batch.settled = True
        if entries:
            await WRITER.write(batch)
        if run.mode == "orchestrated":
            await cost_artifact.publish(run.pipeline.spec.name, entries, failed=error is not None)


LEDGER = LedgerObserver()
