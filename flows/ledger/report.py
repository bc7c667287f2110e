"""The FinOps report: ledger entries summed by pipeline, model, route or day, as a table, JSON or a chart.

    frugal report [--since 7d] [--by pipeline|model|route|day] [--json] [--png PATH]

Sums are exact (`Decimal`). ``cost`` is every known cost; ``counterfactual``
and ``saved`` are summed over the entries whose cost and counterfactual are both
known, so that ``saved = counterfactual - cost`` holds whenever every entry is
priced; entries without a price are counted in ``unpriced``. Tokens are those
paid for now: a cache hit's tokens were paid for once, by the call that made it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from flows.ledger.entry import CAUSES, Cause, LedgerEntry
from tasks.core.errors import InputError

ZERO = Decimal(0)
GROUPINGS = ("pipeline", "model", "route", "day")
_CAUSE_TITLES = {
    "prompt_cache": "prompt cache",
    "routing": "routing",
    "provider_cache": "provider cache",
    "model_choice": "model choice",
}


def route_of(entry: LedgerEntry) -> str:
    """``cache hit`` for a hit (or a Prefect result-cache replay), ``semantic hit`` for a hit by
    meaning, else the tier that answered."""
    if entry.paid:
        return entry.route
    return "semantic hit" if entry.cache == "semantic" else "cache hit"


_KEYS: dict[str, Callable[[LedgerEntry], str]] = {
    "pipeline": lambda e: e.pipeline,
    "model": lambda e: e.model,
    "route": route_of,
    "day": lambda e: e.ts.astimezone(UTC).date().isoformat(),
}


@dataclass
class Totals:
    """What a group of entries spent and saved."""

    calls: int = 0
    hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost: Decimal = ZERO
    counterfactual: Decimal = ZERO
    savings: dict[Cause, Decimal] = field(default_factory=lambda: dict.fromkeys(CAUSES, ZERO))
    unpriced: int = 0
    estimated: int = 0

    def add(self, e: LedgerEntry) -> None:
        if e.paid:
            self.calls += 1
            self.input_tokens += e.input_tokens
            self.output_tokens += e.output_tokens
            self.cached_input_tokens += e.cached_input_tokens
            self.cache_write_tokens += e.cache_write_tokens
            self.estimated += e.estimated
        else:
            self.hits += 1
        if e.cost is not None:
            self.cost += e.cost
        if e.cost is None or e.counterfactual is None or e.savings is None:
            self.unpriced += 1
            return
        self.counterfactual += e.counterfactual
        for cause, amount in e.savings.items():
            self.savings[cause] += amount

    @property
    def saved(self) -> Decimal:
        return sum(self.savings.values(), ZERO)

    @property
    def saved_pct(self) -> Decimal | None:
        if not self.counterfactual:
            return None
        return (self.saved / self.counterfactual * 100).quantize(Decimal("0.1"))

    def as_json(self) -> dict[str, Any]:
        pct = self.saved_pct
        return {
            "calls": self.calls,
            "cache_hits": self.hits,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost": plain(self.cost),
            "counterfactual": plain(self.counterfactual),
            "saved": plain(self.saved),
            "saved_pct": None if pct is None else str(pct),
            "savings": {cause: plain(amount) for cause, amount in self.savings.items()},
            "unpriced": self.unpriced,
            "estimated": self.estimated,
        }


def summarise(entries: Iterable[LedgerEntry], by: str) -> tuple[dict[str, Totals], Totals]:
    """Totals per group (sorted by key) and overall."""
    if by not in _KEYS:
        raise InputError(f"--by {by!r}: use one of {', '.join(GROUPINGS)}")
    key = _KEYS[by]
    groups: dict[str, Totals] = {}
    total = Totals()
    for entry in entries:
        groups.setdefault(key(entry), Totals()).add(entry)
        total.add(entry)
    return dict(sorted(groups.items())), total


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` before now, or an ISO date/time (UTC if it has no zone)."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(f"--since {text!r}: use a duration like 7d, 24h, 30m, 2w or a date like 2025-01-31") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# -- output ------------------------------------------------------------------------------


def plain(amount: Decimal) -> str:
    """Exact, fixed-point, without trailing zeros: ``0.0000850`` is ``0.000085``, ``2.25E-7`` is ``0.000000225``."""
    text = f"{amount:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def money(amount: Decimal) -> str:
    """Dollars to a hundredth of a cent's thousandth (6 places): per-call costs are fractions of a cent."""
    return f"-${-amount:,.6f}" if amount < 0 else f"${amount:,.6f}"


def _causes_shown(totals: Iterable[Totals]) -> list[Cause]:
    """Every cause but model choice, which shows only when it is not zero."""
    items = list(totals)
    return [c for c in CAUSES if c != "model_choice" or any(t.savings[c] for t in items)]


def table(groups: dict[str, Totals], total: Totals, by: str) -> str:
    """A plain-text table, one row per group and a total."""
    causes = _causes_shown([*groups.values(), total])
    head = [by, "calls", "hits", "tokens in", "tokens out", "cached in", "cost", "counterfactual", "saved", "saved %"]
    head += [f"saved: {_CAUSE_TITLES[c]}" for c in causes]

    def cells(name: str, t: Totals) -> list[str]:
        pct = t.saved_pct
        row = [name, f"{t.calls:,}", f"{t.hits:,}", f"{t.input_tokens:,}", f"{t.output_tokens:,}", f"{t.cached_input_tokens:,}"]
        row += [money(t.cost), money(t.counterfactual), money(t.saved), "-" if pct is None else f"{pct}%"]
        return row + [money(t.savings[c]) for c in causes]

    rows = [cells(name, t) for name, t in groups.items()]
    rows.append(cells("total", total))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    out = [line(head), "  ".join("-" * w for w in widths), *map(line, rows[:-1])]
    if rows[:-1]:
        out.append("  ".join("-" * w for w in widths))
    out.append(line(rows[-1]))
    notes = []
    if total.unpriced:
        notes.append(f"{total.unpriced} entries have no price (cost or counterfactual null): not in counterfactual, saved")
    if total.estimated:
        notes.append(f"{total.estimated} calls have estimated token counts (the server sent no usage)")
    return "\n".join(out + notes)


def as_json(groups: dict[str, Totals], total: Totals, by: str, since: datetime | None) -> dict[str, Any]:
    return {
        "by": by,
        "since": since.isoformat() if since else None,
        "currency": "USD",
        "groups": {name: t.as_json() for name, t in groups.items()},
        "total": total.as_json(),
    }


def chart(entries: list[LedgerEntry], path: Path) -> Path:
    """A PNG: spend against counterfactual per day, and savings per day by cause."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days, total = summarise(entries, "day")
    labels = list(days) or [datetime.now(UTC).date().isoformat()]
    cost = [float(days[d].cost) if d in days else 0.0 for d in labels]
    counterfactual = [float(days[d].counterfactual) if d in days else 0.0 for d in labels]
    causes = _causes_shown([*days.values(), total])

    def text(value: str) -> str:  # a lone "$" is text; two would start matplotlib's math mode
        return value.replace("$", r"\$")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True, constrained_layout=True)
    x = list(range(len(labels)))
    top.plot(x, counterfactual, marker="o", color="#9a3412", label="counterfactual (reference model, no caching)")
    top.plot(x, cost, marker="o", color="#1d4ed8", label="spend")
    saved = [c <= f for c, f in zip(cost, counterfactual, strict=True)]
    top.fill_between(x, cost, counterfactual, where=saved, interpolate=True, color="#16a34a", alpha=0.15, label="saved")
    if not all(saved):
        lost = [not s for s in saved]
        top.fill_between(x, cost, counterfactual, where=lost, interpolate=True, color="#dc2626", alpha=0.15, label="overspent")
    top.set_ylim(bottom=0)
    top.set_ylabel("USD per day")
    pct = total.saved_pct if total.saved_pct is not None else 0
    top.set_title(text(f"Spend vs counterfactual: {money(total.cost)} spent, {money(total.saved)} saved ({pct}%)"))
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)

    colours = {"prompt_cache": "#16a34a", "routing": "#2563eb", "provider_cache": "#d97706", "model_choice": "#7c3aed"}
    above, below = [0.0] * len(labels), [0.0] * len(labels)  # savings stack up, losses (cache writes, escalations) down
    for cause in causes:
        values = [float(days[d].savings[cause]) if d in days else 0.0 for d in labels]
        base = [b if v >= 0 else n for v, b, n in zip(values, above, below, strict=True)]
        label = text(f"{_CAUSE_TITLES[cause]}: {money(total.savings[cause])}")
        bottom.bar(x, values, bottom=base, color=colours[cause], label=label)
        above = [b + max(v, 0.0) for b, v in zip(above, values, strict=True)]
        below = [n + min(v, 0.0) for n, v in zip(below, values, strict=True)]
    bottom.axhline(0, color="#444", linewidth=0.8)
    bottom.set_ylabel("USD saved per day")
    bottom.set_title("Savings by cause")
    bottom.legend(loc="best", fontsize=8)
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    for axis in (top, bottom):
        axis.yaxis.set_major_formatter(lambda v, _pos: text(f"-${-v:,.4f}" if v < 0 else f"${v:,.4f}"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
