"""The cost table of an orchestrated run: a Prefect table artifact on the flow run.

One row per route (``large``, ``small``, ``cache hit``) and a total: calls,
cache hits, tokens, cost, counterfactual, savings and savings %, the savings
by cause, the answer check's verdicts (accepted, rejected, unchecked, escalated)
and what was not counted as saved (answers nobody verified: see
`flows.ledger.report`). ``per_model=True`` adds one row per model (batches use it). The
artifact is keyed ``cost-PIPELINE``, so the Artifacts page also shows the
latest run's costs of each pipeline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from prefect.client.schemas.actions import ArtifactCreate
from prefect.context import FlowRunContext

from flows.ledger.entry import CAUSES, LedgerEntry
from flows.ledger.report import Totals, plain, summarise

_ROUTES = ("large", "small", "cache hit")


def _row(kind: str, name: str, t: Totals) -> dict[str, Any]:
    pct = t.saved_pct
    row: dict[str, Any] = {
        kind: name,
        "calls": t.calls,
        "cache hits": t.hits,
        "tokens in": t.input_tokens,
        "tokens out": t.output_tokens,
        "cached tokens in": t.cached_input_tokens,
        "cost ($)": plain(t.cost),
        "counterfactual ($)": plain(t.counterfactual),
        "saved ($)": plain(t.saved),
        "saved %": None if pct is None else str(pct),
    }
    for cause in CAUSES:
        row[f"saved: {cause.replace('_', ' ')} ($)"] = plain(t.savings[cause])
    row["not counted ($)"] = plain(t.not_counted)
    quality = t.quality()
    row["accepted"] = quality.accepted
    row["rejected"] = quality.rejected
    row["unchecked"] = quality.unchecked
    row["escalated"] = quality.escalated
    if t.unpriced:
        row["unpriced"] = t.unpriced
    return row


def rows(entries: Iterable[LedgerEntry], per_model: bool = False) -> list[dict[str, Any]]:
    """The table: by route (every route, even with nothing in it), then by model if asked, then the total."""
    entries = list(entries)
    routes, total = summarise(entries, "route")
    out = [_row("route", name, routes.get(name, Totals())) for name in _ROUTES]
    if per_model:
        models, _ = summarise(entries, "model")
        out += [_row("route", f"model: {name}", t) for name, t in models.items()]
    out.append(_row("route", "total", total))
    return out


def artifact_key(pipeline: str) -> str:
    """Prefect keys take lower-case letters, digits and dashes."""
    return "cost-" + (re.sub(r"[^a-z0-9-]+", "-", pipeline.lower()).strip("-") or "pipeline")


async def publish(pipeline: str, entries: list[LedgerEntry], failed: bool = False, per_model: bool = False) -> bool:
    """Attach the cost table to the current flow run; False outside a flow run."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return False
    table = rows(entries, per_model=per_model)
    total = table[-1]
    outcome = "failed after spending" if failed else "spent"
    description = (
        f"Cost of this run of `{pipeline}`: {outcome} ${total['cost ($)']}, "
        f"saved ${total['saved ($)']} ({total['saved %'] or 0}%) against the reference model."
    )
    client: Any = ctx.client  # the async client (its type is a sync/async union)
    await client.create_artifact(
        artifact=ArtifactCreate(
            key=artifact_key(pipeline),
            type="table",
            description=description,
            flow_run_id=ctx.flow_run.id,
            data=json.dumps(table),
        )
    )
    return True
