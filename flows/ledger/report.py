"""The FinOps report: ledger entries summed by pipeline, model, route or day, as a table, JSON or a chart.

    frugal report [--since 7d] [--by pipeline|model|route|day] [--json] [--png PATH]

Sums are exact (`Decimal`). ``cost`` is every known cost of answers (audits are
kept apart, on a line of their own); ``counterfactual`` and ``saved`` are summed
over the entries whose cost and counterfactual are both known; entries without
a price are counted in ``unpriced``. Tokens are those paid for now: a cache
hit's tokens were paid for once, by the call that made it.

**Saved counts only what kept quality**: accepted answers and cache hits. A
small answer with no check beyond well-formedness (``unchecked``), or one the
check rejected but that was used anyway (``flagged``), saved money nobody
verified: its saving is reported as ``not counted``, so that
``counterfactual - cost = saved + not counted`` whenever every entry is priced.
A rejected answer replaced by a later call (escalated to the large tier, or
retried) was paid for and not used: its cost is ``waste``, already inside
``cost`` and taken off ``saved``.

Per pipeline and model (`Tally`): calls, acceptance rate (accepted / calls),
escalation rate (escalated / calls), rejection reasons, waste in money and in
time, and the shadow audit's agreement with the large model, with its 95 %
Wilson interval. Per pipeline, the headline: "saved X % at Y % agreement".
"""

from __future__ import annotations

import math
import re
from collections import Counter
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
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def route_of(entry: LedgerEntry) -> str:
    """``cache hit`` for a hit (or a Prefect result-cache replay), ``semantic hit`` for a hit by
    meaning, else the tier that answered."""
    if entry.paid:
        return entry.route
    return "semantic hit" if entry.cache == "semantic" else "cache hit"


_KEYS: dict[str, Callable[[LedgerEntry], str]] = {
    "pipeline": lambda e: e.pipeline,
    "model": lambda e: e.audited_model or e.model if e.kind == "audit" else e.model,
    # an audit belongs with the answers it checks: small ones, or semantic hits
    "route": lambda e: ("semantic hit" if e.audited_cache == "semantic" else "small") if e.kind == "audit" else route_of(e),
    "day": lambda e: e.ts.astimezone(UTC).date().isoformat(),
}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (better than p +- z*se for small n and p near 0 or 1)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes one end is exactly 0 or 1 (the float sum lands a hair inside)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _pct(part: int | Decimal, whole: int | Decimal) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole) * 100).quantize(Decimal("0.1"))


@dataclass
class Tally:
    """The answers of one pipeline and model: the check's verdicts, what rejections cost, the audits."""

    calls: int = 0
    hits: int = 0
    accepted: int = 0
    rejected: int = 0
    unchecked: int = 0
    escalated: int = 0  # rejected, replaced by a large-tier call
    retried: int = 0  # rejected, replaced by another small-tier call
    flagged: int = 0  # rejected and not replaced: used anyway, or the run failed
    reasons: Counter[str] = field(default_factory=Counter)
    waste: Decimal = ZERO  # what replaced answers cost
    waste_ms: float = 0.0  # how long they took
    cost: Decimal = ZERO
    counterfactual: Decimal = ZERO
    saved: Decimal = ZERO
    not_counted: Decimal = ZERO
    audits: int = 0
    agreed: int = 0
    disagreed: int = 0
    audit_cost: Decimal = ZERO
    audit_unpriced: int = 0

    def merge(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def judged(self) -> int:
        return self.agreed + self.disagreed

    @property
    def acceptance_pct(self) -> Decimal | None:
        return _pct(self.accepted, self.calls)

    @property
    def escalation_pct(self) -> Decimal | None:
        return _pct(self.escalated, self.calls)

    @property
    def agreement_pct(self) -> Decimal | None:
        return _pct(self.agreed, self.judged)

    @property
    def agreement_interval(self) -> tuple[float, float] | None:
        return wilson(self.agreed, self.judged)

    @property
    def saved_pct(self) -> Decimal | None:
        return _pct(self.saved, self.counterfactual)

    def as_json(self) -> dict[str, Any]:
        interval = self.agreement_interval
        return {
            "calls": self.calls,
            "cache_hits": self.hits,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "unchecked": self.unchecked,
            "escalated": self.escalated,
            "retried": self.retried,
            "flagged": self.flagged,
            "acceptance_pct": _text(self.acceptance_pct),
            "escalation_pct": _text(self.escalation_pct),
            "rejection_reasons": dict(sorted(self.reasons.items())),
            "waste": plain(self.waste),
            "waste_seconds": round(self.waste_ms / 1000, 3),
            "cost": plain(self.cost),
            "counterfactual": plain(self.counterfactual),
            "saved": plain(self.saved),
            "saved_pct": _text(self.saved_pct),
            "not_counted": plain(self.not_counted),
            "audits": self.audits,
            "agreed": self.agreed,
            "disagreed": self.disagreed,
            "agreement_pct": _text(self.agreement_pct),
            "agreement_interval_pct": None if interval is None else [round(interval[0] * 100, 1), round(interval[1] * 100, 1)],
            "audit_cost": plain(self.audit_cost),
        }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass
class Totals:
    """What a group of entries spent and saved, and the quality it kept."""

    calls: int = 0
    hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost: Decimal = ZERO
    counterfactual: Decimal = ZERO
    savings: dict[Cause, Decimal] = field(default_factory=lambda: dict.fromkeys(CAUSES, ZERO))
    #: savings of answers nobody verified (unchecked or flagged small answers): not in `saved`
    not_counted: Decimal = ZERO
    unpriced: int = 0
    estimated: int = 0
    #: per (pipeline, model): verdicts, escalations, waste and audits
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    #: the audits: their own line, never in `cost`
    audits: Tally = field(default_factory=Tally)
    #: the audits of semantic cache hits: their agreement apart from the model answers'
    semantic_audits: Tally = field(default_factory=Tally)

    def tally(self, pipeline: str, model: str) -> Tally:
        found = self.tallies.get((pipeline, model))
        if found is None:
            found = self.tallies[(pipeline, model)] = Tally()
        return found

    def add(self, e: LedgerEntry) -> None:
        if e.kind == "audit":
            self._add_audit(e)
            return
        t = self.tally(e.pipeline, e.model)
        if e.paid:
            self.calls += 1
            self.input_tokens += e.input_tokens
            self.output_tokens += e.output_tokens
            self.cached_input_tokens += e.cached_input_tokens
            self.cache_write_tokens += e.cache_write_tokens
            self.estimated += e.estimated
            t.calls += 1
            self._verdict(t, e)
        else:
            self.hits += 1
            t.hits += 1
        if e.cost is not None:
            self.cost += e.cost
            t.cost += e.cost
        if e.cost is None or e.counterfactual is None or e.savings is None:
            self.unpriced += 1
            return
        self.counterfactual += e.counterfactual
        t.counterfactual += e.counterfactual
        if e.paid and e.route == "small" and e.verdict != "accepted" and e.replaced_by is None:
            amount = sum(e.savings.values(), ZERO)  # unchecked or flagged: money saved that nobody verified
            self.not_counted += amount
            t.not_counted += amount
            return
        for cause, amount in e.savings.items():
            self.savings[cause] += amount
            t.saved += amount

    @staticmethod
    def _verdict(t: Tally, e: LedgerEntry) -> None:
        verdict = e.verdict
        if verdict == "accepted":
            t.accepted += 1
        elif verdict == "unchecked":
            t.unchecked += 1
        else:
            t.rejected += 1
            t.reasons[e.reject_reason or "malformed"] += 1
            if e.replaced_by is None:
                t.flagged += 1
            else:
                t.escalated += e.replaced_by == "large"
                t.retried += e.replaced_by == "small"
                t.waste += e.cost or ZERO
                t.waste_ms += e.latency_ms or 0.0

    def _add_audit(self, e: LedgerEntry) -> None:
        # a semantic hit's audit says whether another wording's answer served; not the model's own agreement
        apart = self.semantic_audits if e.audited_cache == "semantic" else self.tally(e.pipeline, e.audited_model or e.model)
        for t in (self.audits, apart):
            t.audits += 1
            t.agreed += e.agreed is True
            t.disagreed += e.agreed is False
            if e.cost is None:
                t.audit_unpriced += 1
            else:
                t.audit_cost += e.cost

    @property
    def saved(self) -> Decimal:
        return sum(self.savings.values(), ZERO)

    @property
    def saved_pct(self) -> Decimal | None:
        return _pct(self.saved, self.counterfactual)

    def quality(self) -> Tally:
        """Every tally of the group added up."""
        out = Tally()
        for t in self.tallies.values():
            out.merge(t)
        return out

    def pipelines(self) -> dict[str, Tally]:
        """The tallies added up per pipeline (sorted)."""
        out: dict[str, Tally] = {}
        for (pipeline, _model), t in sorted(self.tallies.items()):
            out.setdefault(pipeline, Tally()).merge(t)
        return out

    def as_json(self) -> dict[str, Any]:
        pct = self.saved_pct
        quality = self.quality()
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
            "not_counted": plain(self.not_counted),
            "unpriced": self.unpriced,
            "estimated": self.estimated,
            "accepted": quality.accepted,
            "rejected": quality.rejected,
            "unchecked": quality.unchecked,
            "escalated": quality.escalated,
            "waste": plain(quality.waste),
            "audits": {
                "n": self.audits.audits,
                "agreed": self.audits.agreed,
                "disagreed": self.audits.disagreed,
                "cost": plain(self.audits.audit_cost),
                "unpriced": self.audits.audit_unpriced,
            },
            "semantic_hit_audits": {
                "n": self.semantic_audits.audits,
                "agreed": self.semantic_audits.agreed,
                "disagreed": self.semantic_audits.disagreed,
                "agreement_pct": _text(self.semantic_audits.agreement_pct),
            },
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


#: six places: a cost that rounds to zero here is printed by its significant digits instead
MICRO = Decimal("0.000001")


def money(amount: Decimal) -> str:
    """Dollars to a hundredth of a cent's thousandth (6 places): per-call costs are fractions of a cent.
    An amount that 6 places would show as zero shows its two significant digits ($0.00000035)."""
    if amount and amount.quantize(MICRO) == 0:
        amount = Decimal(f"{amount:.2g}")
        return f"-${-amount:f}" if amount < 0 else f"${amount:f}"
    return f"-${-amount:,.6f}" if amount < 0 else f"${amount:,.6f}"


def _causes_shown(totals: Iterable[Totals]) -> list[Cause]:
    """Every cause but model choice, which shows only when it is not zero."""
    items = list(totals)
    return [c for c in CAUSES if c != "model_choice" or any(t.savings[c] for t in items)]


def table(groups: dict[str, Totals], total: Totals, by: str) -> str:
    """A plain-text table, one row per group and a total; then the quality each pipeline kept,
    the audits' line, and the answers per pipeline and model."""
    causes = _causes_shown([*groups.values(), total])
    head = [by, "calls", "hits", "tokens in", "tokens out", "cached in", "cost", "counterfactual", "saved", "saved %"]
    head += [f"saved: {_CAUSE_TITLES[c]}" for c in causes]
    head.append("not counted")

    def cells(name: str, t: Totals) -> list[str]:
        pct = t.saved_pct
        row = [name, f"{t.calls:,}", f"{t.hits:,}", f"{t.input_tokens:,}", f"{t.output_tokens:,}", f"{t.cached_input_tokens:,}"]
        row += [money(t.cost), money(t.counterfactual), money(t.saved), "-" if pct is None else f"{pct}%"]
        return row + [money(t.savings[c]) for c in causes] + [money(t.not_counted)]

    rows = [cells(name, t) for name, t in groups.items()]
    rows.append(cells("total", total))
    out = _columns(head, rows[:-1], rows[-1])
    notes = []
    if total.not_counted:
        notes.append(
            f"not counted: {money(total.not_counted)} saved by small answers nobody verified (unchecked, or rejected and "
            "used anyway): not in saved"
        )
    if total.unpriced:
        notes.append(f"{total.unpriced} entries have no price (cost or counterfactual null): not in counterfactual, saved")
    if total.estimated:
        notes.append(f"{total.estimated} calls have estimated token counts (the server sent no usage)")
    a = total.audits
    audit_line = f"audits (not in cost): {a.audits:,}, {money(a.audit_cost)}"
    if a.audits:
        audit_line += f": {a.agreed} agreed, {a.disagreed} disagreed, {a.audits - a.judged} not judged"
    if a.audit_unpriced:
        audit_line += f", {a.audit_unpriced} unpriced"
    if total.semantic_audits.audits:
        audit_line += f"\nsemantic hits audited: {total.semantic_audits.audits:,}: {agreement_text(total.semantic_audits)}"
    sections = ["\n".join(out + notes), audit_line, "\n".join(headlines(total))]
    if total.tallies:
        sections.append(answers_table(total))
    return "\n\n".join(sections)


def _columns(head: list[str], rows: list[list[str]], last: list[str] | None = None) -> list[str]:
    every = [head, *rows, *([last] if last else [])]
    widths = [max(len(r[i]) for r in every) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 and not c[:1].isdigit() else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    out = [line(head), rule, *map(line, rows)]
    if last is not None:
        if rows:
            out.append(rule)
        out.append(line(last))
    return out


def agreement_text(t: Tally) -> str:
    """``94.0 % agreement with the large model (n=50, 95 % interval 83.8-97.9 %)``, or why there is none."""
    interval = t.agreement_interval
    if interval is None:
        return "agreement not measured (no audits: set FRUGAL_AUDIT_RATE, e.g. 0.02)"
    low, high = interval
    return f"{t.agreement_pct} % agreement with the large model (n={t.judged}, 95 % interval {low * 100:.1f}-{high * 100:.1f} %)"


def headlines(total: Totals) -> list[str]:
    """Per pipeline: saved X % at Y % agreement with the large model."""
    out = []
    for pipeline, t in total.pipelines().items():
        pct = t.saved_pct
        saved = "-" if pct is None else f"{pct} %"
        out.append(f"{pipeline}: saved {saved} at {agreement_text(t)}")
    return out or ["no answers in this period"]


def answers_table(total: Totals) -> str:
    """The answers per pipeline and model: verdicts, rates, waste, reasons, agreement."""
    head = ["pipeline", "model", "calls", "hits", "accepted", "rejected", "unchecked", "acceptance", "escalated"]
    head += ["escalation", "waste", "waste time", "agreement", "rejection reasons"]
    rows = []
    for (pipeline, model), t in sorted(total.tallies.items()):
        acc, esc, agr = t.acceptance_pct, t.escalation_pct, t.agreement_pct
        reasons = ", ".join(f"{r} {n}" for r, n in t.reasons.most_common()) or "-"
        rows.append(
            [
                pipeline,
                model,
                f"{t.calls:,}",
                f"{t.hits:,}",
                f"{t.accepted:,}",
                f"{t.rejected:,}",
                f"{t.unchecked:,}",
                "-" if acc is None else f"{acc}%",
                f"{t.escalated:,}",
                "-" if esc is None else f"{esc}%",
                money(t.waste),
                f"{t.waste_ms / 1000:.1f} s",
                "-" if agr is None else f"{agr}% of {t.judged}",
                reasons,
            ]
        )
    return "\n".join(["Answers by pipeline and model (hits are not checked again):", *_columns(head, rows)])


def as_json(groups: dict[str, Totals], total: Totals, by: str, since: datetime | None) -> dict[str, Any]:
    return {
        "by": by,
        "since": since.isoformat() if since else None,
        "currency": "USD",
        "groups": {name: t.as_json() for name, t in groups.items()},
        "total": total.as_json(),
        "pipelines": {name: t.as_json() for name, t in total.pipelines().items()},
        "answers": [{"pipeline": p, "model": m, **t.as_json()} for (p, m), t in sorted(total.tallies.items())],
    }


PALETTE = ("#2563eb", "#9333ea", "#059669", "#d97706", "#dc2626", "#0891b2", "#4d7c0f", "#be185d")


def chart(entries: list[LedgerEntry], path: Path) -> Path:
    """A PNG, per day and pipeline: spent against what the large model alone would have cost (bars; what
    unverified answers saved is hatched above spent: it is not counted as saved), and
    the audited agreement with the large model (points with their 95 % interval). Bars, not lines, so
    that one day of data reads as well as a month."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days, total = summarise(entries, "day")
    labels = list(days) or [datetime.now(UTC).date().isoformat()]
    per_day = {d: days[d].pipelines() if d in days else {} for d in labels}
    pipelines = sorted({p for tallies in per_day.values() for p in tallies}) or ["-"]
    colour = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(pipelines)}

    def text(value: str) -> str:  # a lone "$" is text; two would start matplotlib's math mode
        return value.replace("$", r"\$")

    width = min(0.8 / len(pipelines), 0.35)
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(max(7.0, 1.2 + 1.3 * len(labels) * max(1, len(pipelines) / 2)), 7.5),
        sharex=True,
        constrained_layout=True,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    x = list(range(len(labels)))
    most = 0.0
    for i, pipeline in enumerate(pipelines):
        offset = (i - (len(pipelines) - 1) / 2) * width
        xs = [v + offset for v in x]
        tallies = [per_day[d].get(pipeline) for d in labels]
        large = [float(t.counterfactual) if t else 0.0 for t in tallies]
        spent = [float(t.cost) if t else 0.0 for t in tallies]
        most = max(most, *large, *spent)
        top.bar(
            xs,
            large,
            width * 0.95,
            color=colour[pipeline],
            alpha=0.25,
            edgecolor=colour[pipeline],
            label=f"{pipeline}: all large",
        )
        top.bar(xs, spent, width * 0.5, color=colour[pipeline], label=f"{pipeline}: spent")
        unverified = [float(t.not_counted) if t else 0.0 for t in tallies]
        if any(unverified):  # saved by answers nobody verified: drawn on top of spent, not as saved
            top.bar(
                xs,
                unverified,
                width * 0.5,
                bottom=spent,
                color="white",
                edgecolor=colour[pipeline],
                hatch="///",
                label=f"{pipeline}: not counted (unverified)",
            )
        for xi, t, height in zip(xs, tallies, large, strict=True):
            if t is not None and t.saved_pct is not None:
                top.annotate(
                    f"{pipeline}\nsaved {t.saved_pct}%",
                    (xi, height),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        judged = [(xi, t) for xi, t in zip(xs, tallies, strict=True) if t is not None and t.judged]
        if judged:
            points = [float(t.agreed / t.judged * 100) for _, t in judged]
            intervals = [t.agreement_interval for _, t in judged]
            low = [p - iv[0] * 100 for p, iv in zip(points, intervals, strict=True) if iv]
            high = [iv[1] * 100 - p for p, iv in zip(points, intervals, strict=True) if iv]
            bottom.errorbar(
                [xi for xi, _ in judged], points, yerr=[low, high], fmt="o", color=colour[pipeline], capsize=4, label=pipeline
            )
            for (xi, t), p in zip(judged, points, strict=True):
                bottom.annotate(
                    f"n={t.judged}", (xi, p), ha="left", va="center", fontsize=8, xytext=(6, 0), textcoords="offset points"
                )
    top.set_ylim(0, most * 1.25 or 1.0)
    if not entries:
        top.text(0.5, 0.5, "no answers in this period", ha="center", va="center", transform=top.transAxes, color="#555")
    top.set_ylabel("USD per day")
    pct = total.saved_pct if total.saved_pct is not None else 0
    title = f"Spent vs the large model alone: {money(total.cost)} spent, {money(total.saved)} saved ({pct}%)"
    if total.audits.audits:
        title += f"\naudits: {money(total.audits.audit_cost)}, not in spent"
    fig.suptitle(text(title), fontsize=11)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    top.grid(axis="y", alpha=0.3)
    ticks = top.get_yticks()
    step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(2, 1 - math.floor(math.log10(step))) if step > 0 else 2  # two ticks never read alike
    top.yaxis.set_major_formatter(lambda v, _pos: text(f"${v:,.{decimals}f}"))

    bottom.set_ylim(0, 105)
    bottom.set_ylabel("agreement with the large model (%)")
    quality = total.quality()
    if quality.judged:
        bottom.set_title(
            f"Audited agreement with the large model (95 % Wilson interval)\nall: {agreement_text(quality)}", fontsize=10
        )
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        bottom.set_title("Audited agreement with the large model", fontsize=10)
        bottom.text(
            0.5,
            0.5,
            "no audits in this period:\nset FRUGAL_AUDIT_RATE (e.g. 0.02) to measure agreement",
            ha="center",
            va="center",
            transform=bottom.transAxes,
            color="#555",
        )
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xlim(-0.6, len(labels) - 0.4)
    bottom.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
