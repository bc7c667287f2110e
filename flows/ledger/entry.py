"""A ledger entry: one model call or one prompt-cache hit, what it cost, what it saved, and why.

Each request is counted once. The answer it delivered carries the request's
*counterfactual*: the reference model's price for the same tokens (the prompt
and answer of the call that produced it), at full input price. Every entry's
savings are its counterfactual minus what it cost, split by cause so that the
causes add up to the total exactly:

- ``prompt_cache``: a prompt-cache hit (or a model call Prefect served from its
  result cache) costs $0 and saves its whole counterfactual, whichever tier
  produced the stored answer;
- ``routing``: a small-model answer saves its counterfactual minus its own cost;
  a small answer that was not used (malformed, or rejected by the answer check
  and replaced by a later call: escalated or retried) has no counterfactual (the
  answer that replaced it carries it), so it counts as what it cost, negative;
- ``provider_cache``: a large-model call saves what its cached prompt tokens
  took off its price (its uncached price minus its cost);
- ``model_choice``: the rest of a large call's savings, the difference between
  the reference model's price and the large model's: zero when the large tier
  *is* the reference model, as it is by default.

An ``audit`` entry is a shadow check of a small answer by the large model
(`flows.ledger.audit`): it records what the audit cost and whether the two agreed;
it has no counterfactual and no savings, and the report keeps it out of the
money spent on answers.

Whether a *saving* counts is the report's business (`flows.ledger.report`): it
counts only accepted answers and cache hits; an entry records the verdict of the
answer check (``accepted``: true, false, or None for unchecked).

Money is `Decimal` US dollars, kept as strings in storage, so sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.completion import Usage
from tasks.core.pricing import Rates, rates_for

Cause = Literal["prompt_cache", "routing", "provider_cache", "model_choice"]
CAUSES: tuple[Cause, ...] = ("prompt_cache", "routing", "provider_cache", "model_choice")
Kind = Literal["call", "hit", "audit"]
#: 2: the answer check's verdict, the request key and audits (entries of version 1 read as unchecked)
ENTRY_VERSION = 2
ZERO = Decimal(0)


class LedgerEntry(BaseModel):
    """One model call, one cache hit or one audit. Never holds a prompt, an answer or a secret."""

    model_config = ConfigDict(extra="forbid")

    v: int = ENTRY_VERSION
    id: str = Field(description="unique: run id and node")
    ts: datetime = Field(description="when the run ended (UTC)")
    run_id: str = Field(description="the flow run id, or a random id for an inline run")
    pipeline: str
    version: str
    node: str
    seq: int = Field(0, description="the entry's place in its run, in the order the nodes finished")
    mode: Literal["inline", "orchestrated"]
    deployment_id: str | None = None
    flow_run_id: str | None = None
    namespace: str = "default"
    kind: Kind
    key: str | None = Field(None, description="the request key (sha256 of the canonical request), if the pipeline made one")
    model: str = Field(description="the model that answered (on a hit: that produced the stored answer)")
    route: Literal["small", "large"]
    cache: str = Field(
        description="hit | semantic | miss | bypass | error | result (Prefect's result cache) | none | "
        "verify (a call the semantic cache's grey-zone verifier made)"
    )
    valid: bool = Field(True, description="false: the answer was malformed (labels, schema) and was not used")
    accepted: bool | None = Field(None, description="the answer check's verdict; None: not checked beyond well-formedness")
    reject_reason: str | None = Field(None, description="the check's reason code when rejected (or 'malformed')")
    escalated_from: str | None = Field(None, description="the model whose rejected answer this call replaced")
    replaced_by: Literal["small", "large"] | None = Field(
        None, description="the tier of the later call of the run that replaced this rejected answer (large: escalated)"
    )
    latency_ms: float | None = Field(None, description="how long the call took")
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = Field(False, description="token counts were estimated, not reported by the server")
    cost: Decimal | None = Field(None, description="USD paid; None: the model has no price")
    uncached_cost: Decimal | None = Field(None, description="USD it would have cost without the provider's prompt cache")
    reference_model: str | None = None
    counterfactual: Decimal | None = Field(None, description="USD the reference model would have charged; None: unpriced")
    savings: dict[Cause, Decimal] | None = Field(None, description="USD saved, by cause; None when a price is unknown")
    audit_of: str | None = Field(None, description="audit: the id of the entry whose answer was audited")
    audited_model: str | None = Field(None, description="audit: the model whose answer was audited")
    audited_cache: Literal["semantic"] | None = Field(
        None, description="audit: the audited answer was served by this cache lookup (a semantic hit); None: a model call"
    )
    agreed: bool | None = Field(None, description="audit: the large model agreed; None: could not be judged")
    judged_by: Literal["label", "schema", "rubric"] | None = Field(None, description="audit: how agreement was judged")

    @property
    def verdict(self) -> Literal["accepted", "rejected", "unchecked"]:
        """The answer check's verdict; a malformed answer is rejected."""
        if not self.valid or self.accepted is False:
            return "rejected"
        return "accepted" if self.accepted else "unchecked"

    @property
    def paid(self) -> bool:
        """True for a call that was paid for now (not a hit, not an audit, not a Prefect result-cache replay)."""
        return self.kind == "call" and self.cache != "result"

    @property
    def saved(self) -> Decimal | None:
        return None if self.savings is None else sum(self.savings.values(), ZERO)

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens,
            estimated=self.estimated,
        )


@dataclass(frozen=True)
class Reference:
    """The reference model and its rates, resolved when a run ends (not later, in the writer's thread)."""

    model: str | None
    rates: Rates | None

    @classmethod
    def of(cls, model: str | None) -> Reference:
        return cls(model, rates_for(model) if model else None)


def figures(
    reference: Reference,
    kind: str,
    route: str,
    cache: str,
    used: bool,
    cost: Decimal | None,
    uncached: Decimal | None,
    input_tokens: int,
    output_tokens: int,
) -> tuple[Decimal | None, dict[Cause, Decimal] | None]:
    """(counterfactual, savings by cause) of one entry; see the module's docstring. `used`: the
    answer was delivered (well-formed and not replaced by a later call)."""
    if kind == "audit":
        return None, None
    if not used or cache == "verify":
        # an unused answer, or the semantic cache's verifier asking "same question?": the answer that was
        # used carries the request's counterfactual, and this call's cost is a negative saving
        cf: Decimal | None = ZERO
    elif reference.rates is None:  # said once when the run ended (`flows.ledger.observer.config`)
        cf = None
    else:
        cf = reference.rates.list_price(input_tokens, output_tokens)
    if cf is None or cost is None:
        return cf, None
    if kind == "hit" or cache == "result":
        return cf, {"prompt_cache": cf - cost}
    if route == "small":
        return cf, {"routing": cf - cost}
    uncached = uncached if uncached is not None else cost
    savings: dict[Cause, Decimal] = {"provider_cache": uncached - cost}
    if cf != uncached:
        savings["model_choice"] = cf - uncached
    return cf, savings


def settle(entry: LedgerEntry, reference: Reference | str | None) -> LedgerEntry:
    """Fill in the counterfactual and the savings by cause (in place; returns the entry)."""
    if not isinstance(reference, Reference):
        reference = Reference.of(reference)
    entry.reference_model = reference.model
    entry.counterfactual, entry.savings = figures(
        reference,
        entry.kind,
        entry.route,
        entry.cache,
        entry.valid and entry.replaced_by is None,
        entry.cost,
        entry.uncached_cost,
        entry.input_tokens,
        entry.output_tokens,
    )
    return entry
