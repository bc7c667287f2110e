"""What the ledger copies out of a run on the request path, and the entries made from it later.

`record` runs when a run ends, on the request path: it copies a few scalars
out of the outputs of `cache_lookup` and model-call nodes (microseconds), so
later changes to those outputs cannot change the ledger. `make_entries` turns a
record into `LedgerEntry` objects: in the writer's thread for inline runs, at
once for orchestrated and failed runs.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from prefect.context import FlowRunContext

from flows.ledger.entry import ENTRY_VERSION, ZERO, LedgerEntry, Reference, figures

if TYPE_CHECKING:
    from flows.engine.observers import RunInfo
    from flows.engine.results import NodeReport
    from flows.ledger.stores import Row


def _money(value: Any) -> Decimal | None:
    """A cost as the answer's JSON carries it (a float, exact to its shortest repr) back to Decimal."""
    return None if value is None else Decimal(str(value))


@dataclass(slots=True)
class Seen:
    """What one node contributes to the ledger, copied out of its output on the request path (a few scalars)."""

    node: str
    kind: str  # "call" or "hit"
    model: str
    route: str
    cache: str
    valid: bool
    cost: Any  # as the output's JSON carries it: a float or None
    uncached_cost: Any
    usage: tuple[int, int, int, int, bool]


@dataclass(slots=True)
class RunRecord:
    """A run's ledger material: made on the request path, turned into entries later (`make_entries`)."""

    run_id: str
    pipeline: str
    version: str
    mode: str
    deployment_id: str | None
    flow_run_id: str | None
    namespace: str
    ts: float
    seen: tuple[Seen, ...]


_ids: tuple[str, Iterator[int]] | None = None


def _new_ids() -> None:
    global _ids
    _ids = None


os.register_at_fork(after_in_child=_new_ids)  # a forked child draws its own prefix


def _new_run_id() -> str:
    """A unique id for a run without a flow run: a per-process random prefix and a counter (cheaper than uuid4)."""
    global _ids
    if _ids is None:
        _ids = (uuid.uuid4().hex[:16], itertools.count(1))
    return f"{_ids[0]}-{next(_ids[1])}"


#: set in a chunk worker (`flows.engine.chunk_workers`): the flow run whose items it runs, from another process
_working_for: ContextVar[tuple[str | None, str | None] | None] = ContextVar("frugal_working_for", default=None)


@contextmanager
def working_for(flow_run: tuple[str | None, str | None]) -> Iterator[None]:
    """Count the inline runs in this block as spending of `flow_run` (flow run id, deployment id)."""
    token = _working_for.set(flow_run)
    try:
        yield
    finally:
        _working_for.reset(token)


def enclosing_flow_run() -> tuple[str | None, str | None]:
    """(flow run id, deployment id) of the Prefect flow run this code runs in, if any: an inline
    run inside a flow (a batch item, a sub-pipeline) is spending of that flow run."""
    remote = _working_for.get()
    if remote is not None:
        return remote
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None, None
    run = ctx.flow_run
    return str(run.id), (str(run.deployment_id) if run.deployment_id else None)


def _usage(usage: Any) -> tuple[int, int, int, int, bool]:
    if not isinstance(usage, dict):
        return (0, 0, 0, 0, False)
    get = usage.get
    return (
        get("input_tokens", 0),
        get("output_tokens", 0),
        get("cached_input_tokens", 0),
        get("cache_write_tokens", 0),
        get("estimated", False),
    )


def record(run: RunInfo, nodes: list[tuple[str, Any, NodeReport]]) -> RunRecord:
    """Copy what the ledger needs out of a run's node outputs: cheap, it runs on the request path."""
    cache = "none"
    seen: list[Seen] = []
    for node_id, value, report in nodes:
        if not isinstance(value, dict):
            continue
        if report.uses == "cache_lookup":
            cache = value.get("cache") or cache
            answer = value.get("answer")
            if value.get("hit") and isinstance(answer, dict):
                usage = _usage(answer.get("usage"))
                seen.append(Seen(node_id, "hit", answer["model"], answer["route"], cache, True, 0, 0, usage))  # hit | semantic
        elif "tier" in value and isinstance(value.get("model"), str):
            replay = report.status == "cache_hit"  # Prefect served the call from its result cache: nothing paid now
            seen.append(
                Seen(
                    node_id,
                    "call",
                    value["model"],
                    value["tier"],
                    "result" if replay else cache,
                    bool(value.get("valid", True)),
                    0 if replay else value.get("cost_usd"),
                    0 if replay else value.get("uncached_cost_usd"),
                    _usage(value.get("usage")),
                )
            )
    spec = run.pipeline.spec
    namespace = str(run.inputs.get("namespace") or "default")
    flow_run_id, deployment_id = run.flow_run_id, run.deployment_id
    if flow_run_id is not None:
        run_id = flow_run_id
    else:
        run_id = _new_run_id()
        flow_run_id, deployment_id = enclosing_flow_run()
    return RunRecord(run_id, spec.name, spec.version, run.mode, deployment_id, flow_run_id, namespace, time.time(), tuple(seen))


def make_entries(rec: RunRecord) -> list[LedgerEntry]:
    """The ledger entries of a run, unsettled (no counterfactual yet)."""
    if not rec.seen:
        return []
    run_id = rec.run_id
    ts = datetime.fromtimestamp(rec.ts, UTC)
    out = []
    for seq, s in enumerate(rec.seen):
        tokens_in, tokens_out, cached_in, cache_write, estimated = s.usage
        out.append(
            LedgerEntry.model_construct(  # mode, kind and route hold those Literals by construction
                id=f"{run_id}:{s.node}",
                ts=ts,
                run_id=run_id,
                pipeline=rec.pipeline,
                version=rec.version,
                node=s.node,
                seq=seq,
                mode=rec.mode,  # type: ignore[arg-type]
                deployment_id=rec.deployment_id,
                flow_run_id=rec.flow_run_id,
                namespace=rec.namespace,
                kind=s.kind,  # type: ignore[arg-type]
                model=s.model,
                route=s.route,  # type: ignore[arg-type]
                cache=s.cache,
                valid=s.valid,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cached_input_tokens=cached_in,
                cache_write_tokens=cache_write,
                estimated=estimated,
                cost=_money(s.cost),
                uncached_cost=_money(s.uncached_cost),
            )
        )
    return out


def rows(rec: RunRecord, reference: Reference) -> list[Row]:
    """The run's entries, settled and serialised as stored, without building `LedgerEntry` objects:
    the same JSON `LedgerEntry` reads back (a test holds them equal), at a third of the cost."""
    if not rec.seen:
        return []
    # the time as a Unix timestamp: LedgerEntry reads it as a UTC datetime, and it is cheaper than ISO text
    head: dict[str, Any] = {"v": ENTRY_VERSION, "ts": rec.ts, "run_id": rec.run_id, "pipeline": rec.pipeline}
    head["version"] = rec.version
    head["mode"] = rec.mode
    if rec.deployment_id is not None:
        head["deployment_id"] = rec.deployment_id
    if rec.flow_run_id is not None:
        head["flow_run_id"] = rec.flow_run_id
    head["namespace"] = rec.namespace
    if reference.model is not None:
        head["reference_model"] = reference.model
    out: list[Row] = []
    for seq, s in enumerate(rec.seen):
        tokens_in, tokens_out, cached_in, cache_write, estimated = s.usage
        cost, uncached = (ZERO, ZERO) if s.kind == "hit" else (_money(s.cost), _money(s.uncached_cost))
        cf, savings = figures(reference, s.kind, s.route, s.cache, s.valid, cost, uncached, tokens_in, tokens_out)
        entry_id = f"{rec.run_id}:{s.node}"
        data = {
            **head,
            "id": entry_id,
            "node": s.node,
            "seq": seq,
            "kind": s.kind,
            "model": s.model,
            "route": s.route,
            "cache": s.cache,
            "valid": s.valid,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cached_input_tokens": cached_in,
            "cache_write_tokens": cache_write,
            "estimated": estimated,
        }
        if cost is not None:
            data["cost"] = str(cost)
        if uncached is not None:
            data["uncached_cost"] = str(uncached)
        if cf is not None:
            data["counterfactual"] = str(cf)
        if savings is not None:
            data["savings"] = {cause: str(amount) for cause, amount in savings.items()}
        out.append((entry_id, rec.ts, orjson.dumps(data).decode()))
    return out
