"""What the ledger copies out of a run on the request path, and the entries made from it later.

`record` runs when a run ends, on the request path: it copies a few scalars
out of the outputs of `hash_prompt` (the request key), `cache_lookup`,
model-call and `check_answer` nodes (microseconds), so later changes to those
outputs cannot change the ledger. It also reads the answer check's verdicts: a
call's own `accepted` / `reject_reason` / `escalated_from`, a `check_answer`
node's verdict on the call it checked, and a call that names the model it
`escalated_from` rejects that model's earlier answer; a rejected or malformed
answer followed by another call was *replaced* (escalated or retried). `make_entries` turns a
record into `LedgerEntry` objects: in the writer's thread for inline runs, at
once for orchestrated and failed runs.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

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
    accepted: bool | None = None
    reject_reason: str | None = None
    escalated_from: str | None = None
    replaced_by: str | None = None  # the tier of the later call that replaced this rejected answer
    latency_ms: float | None = None
    #: the cache that answered a hit (`hit`, or `semantic` once it exists): the audit samples some
    lookup: str | None = None

    @property
    def rejected(self) -> bool:
        return not self.valid or self.accepted is False


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
    key: str | None = None  # the request key (`hash_prompt`), if the pipeline made one


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


def enclosing_flow_run() -> tuple[str | None, str | None]:
    """(flow run id, deployment id) of the Prefect flow run this code runs in, if any: an inline
    run inside a flow (a batch item, a sub-pipeline) is spending of that flow run."""
    if "prefect.context" not in sys.modules:  # no Prefect imported: no flow run (and no import for an inline run)
        return None, None
    from prefect.context import FlowRunContext

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


#: the steps whose outputs `record` reads besides model calls
RECORDED_STEPS = frozenset({"hash_prompt", "cache_lookup", "check_answer"})


def _checked(seen: list[Seen], value: dict[str, Any]) -> None:
    """A `check_answer` node's verdict (`tasks.steps.check_answer.Verdict`) on the call it judged:
    the latest unchecked call of the judged answer's model and tier. An escalated answer's verdict
    names the model it replaces (`escalated_from`), which `_settle_verdicts` marks as replaced."""
    judged = value.get("answer")
    if not isinstance(judged, dict):
        return  # a failed call (no answer) was judged: there is no call entry to mark
    for s in reversed(seen):
        if s.kind == "call" and s.model == judged.get("model") and s.route == judged.get("tier") and s.accepted is None:
            s.accepted = bool(value["accepted"])
            if not s.accepted:
                s.reject_reason = value.get("reason") or "rejected"
            s.escalated_from = s.escalated_from or value.get("escalated_from")
            return


def _settle_verdicts(seen: list[Seen]) -> None:
    """A call that escalated from a model rejects that model's earlier answer; a rejected answer
    followed by another call was replaced."""
    for i, s in enumerate(seen):
        if s.kind == "call" and s.escalated_from:
            for earlier in reversed(seen[:i]):
                if earlier.kind == "call" and earlier.model == s.escalated_from:
                    if earlier.accepted is None:
                        earlier.accepted, earlier.reject_reason = False, earlier.reject_reason or "rejected"
                    break
    for i, s in enumerate(seen):
        if s.kind == "call" and s.rejected:
            if s.reject_reason is None:
                s.reject_reason = "malformed" if not s.valid else "rejected"
            s.replaced_by = next((later.route for later in seen[i + 1 :] if later.kind == "call"), None)


def record(run: RunInfo, nodes: list[tuple[str, Any, NodeReport]]) -> RunRecord:
    """Copy what the ledger needs out of a run's node outputs: cheap, it runs on the request path."""
    cache = "none"
    key: str | None = None
    seen: list[Seen] = []
    verdicts = False
    for node_id, value, report in nodes:
        uses = report.uses
        if uses == "hash_prompt":  # the request key ({exact, group} with `group: true`); a pipeline may hash other things too
            if isinstance(value, dict) and isinstance(value.get("exact"), str):
                key = value["exact"]
            elif isinstance(value, str) and (key is None or node_id == "key"):
                key = value
            continue
        if not isinstance(value, dict):
            continue
        if uses == "cache_lookup":
            cache = value.get("cache") or cache
            for n, call in enumerate(value.get("verifier_calls") or ()):  # the semantic cache's grey-zone verifier
                seen.append(
                    Seen(
                        f"{node_id}.verify{n}" if n else f"{node_id}.verify",
                        "call",
                        call["model"],
                        call["tier"],
                        "verify",
                        bool(call.get("valid", True)),
                        call.get("cost_usd"),
                        call.get("uncached_cost_usd"),
                        _usage(call.get("usage")),
                        latency_ms=call.get("latency_ms"),
                    )
                )
            answer = value.get("answer")
            if value.get("hit") and isinstance(answer, dict):
                usage = _usage(answer.get("usage"))
                hit = Seen(node_id, "hit", answer["model"], answer["route"], cache, True, 0, 0, usage)  # hit | semantic
                hit.lookup = value.get("cache")
                seen.append(hit)
        elif report.model is None and uses == "check_answer":
            if value.get("accepted") is not None:
                _checked(seen, value)
                verdicts = True
        elif "tier" in value and isinstance(value.get("model"), str):
            replay = report.status == "cache_hit"  # Prefect served the call from its result cache: nothing paid now
            get = value.get
            call = Seen(
                node_id,
                "call",
                value["model"],
                value["tier"],
                "result" if replay else cache,
                bool(get("valid", True)),
                0 if replay else get("cost_usd"),
                0 if replay else get("uncached_cost_usd"),
                _usage(get("usage")),
                get("accepted"),
                get("reject_reason"),
                get("escalated_from"),
                latency_ms=None if replay else get("latency_ms"),
            )
            verdicts = verdicts or call.rejected or call.escalated_from is not None
            seen.append(call)
    if verdicts:
        _settle_verdicts(seen)
    spec = run.pipeline.spec
    namespace = str(run.inputs.get("namespace") or "default")
    flow_run_id, deployment_id = run.flow_run_id, run.deployment_id
    if flow_run_id is not None:
        run_id = flow_run_id
    else:
        run_id = _new_run_id()
        flow_run_id, deployment_id = enclosing_flow_run()
    return RunRecord(
        run_id, spec.name, spec.version, run.mode, deployment_id, flow_run_id, namespace, time.time(), tuple(seen), key
    )


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
                key=rec.key,
                model=s.model,
                route=s.route,  # type: ignore[arg-type]
                cache=s.cache,
                valid=s.valid,
                accepted=s.accepted,
                reject_reason=s.reject_reason,
                escalated_from=s.escalated_from,
                replaced_by=s.replaced_by,  # type: ignore[arg-type]  # a route: small or large
                latency_ms=s.latency_ms,
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
    if rec.key is not None:
        head["key"] = rec.key
    if reference.model is not None:
        head["reference_model"] = reference.model
    out: list[Row] = []
    for seq, s in enumerate(rec.seen):
        tokens_in, tokens_out, cached_in, cache_write, estimated = s.usage
        cost, uncached = (ZERO, ZERO) if s.kind == "hit" else (_money(s.cost), _money(s.uncached_cost))
        cf, savings = figures(
            reference, s.kind, s.route, s.cache, s.valid and s.replaced_by is None, cost, uncached, tokens_in, tokens_out
        )
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
        if s.accepted is not None:
            data["accepted"] = s.accepted
        if s.reject_reason is not None:
            data["reject_reason"] = s.reject_reason
        if s.escalated_from is not None:
            data["escalated_from"] = s.escalated_from
        if s.replaced_by is not None:
            data["replaced_by"] = s.replaced_by
        if s.latency_ms is not None:
            data["latency_ms"] = s.latency_ms
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
