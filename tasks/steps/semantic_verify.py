"""The semantic cache's optional grey-zone verifier: the small model asked "same question?".

A candidate whose similarity is in the node's band (`verify: {between: [low, high]}`) and
that passed every near-miss guard is served only if the small model, asked whether the two
questions ask the same thing under the labels ``same`` / ``different``, chose ``same`` with
a probability of at least `min_probability`. That probability is read from the tokens' log-
probabilities like a label node's (`tasks.checks.confidence.label_confidence`: a lower bound,
the probability the provider left unlisted counted against it). Anything else is a miss:
the label ``different``, a probability below the bar, an answer without log-probabilities,
an invalid answer, a model that cannot be reached.

Off by default, and measured (docs/caching.md): the guards alone already served 0 false
hits on the eval pairs, and a model call sits on the hit path: on the bundled SmolLM2-135M
it costs a generation per verified candidate (tens to hundreds of ms on this 2-core host,
against ~3-5 ms for the rest of a semantic look-up), and a 135M model's "same question?" is
close to a coin toss, so it mostly turns paraphrase hits into misses. Use it with a small
model that judges well, and a narrow band just above the threshold.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.checks.confidence import label_confidence
from tasks.core.completion import Usage
from tasks.core.errors import ModelError
from tasks.core.log import step_logger
from tasks.core.records import ModelAnswer, Money
from tasks.steps.call_slm import SlmRequest, answer_small
from tasks.steps.model_call import registered_provider

LABELS = ["same", "different"]
SYSTEM = (
    "You decide whether two questions ask for the same thing, so that one answer serves both. "
    "Different numbers, names, places, dates, units, negations or directions make them different. "
    'Answer with JSON {"label": L} where L is same or different.'
)


class Verify(BaseModel):
    """The `verify:` argument of `semantic:`: confirm grey-zone candidates with the small model."""

    model_config = ConfigDict(extra="forbid")

    between: tuple[float, float] = Field(
        (0.78, 0.85), description="the similarity band [low, high) in which a candidate is confirmed by the small model"
    )
    min_probability: float = Field(0.8, gt=0, le=1, description="least probability of `same` for a hit")
    provider: str | None = Field(None, description="small-model provider (ollama, local, ...); default FRUGAL_SLM_PROVIDER")
    model: str | None = Field(None, description="small model id; default the tier's")

    @field_validator("provider")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        return registered_provider(name)

    @model_validator(mode="after")
    def _band(self) -> Verify:
        low, high = self.between
        if not 0 < low < high <= 1.0001:
            raise ValueError(f"verify.between must be [low, high] with 0 < low < high <= 1; got {list(self.between)}")
        return self

    def applies(self, similarity: float) -> bool:
        low, high = self.between
        return low <= similarity < high


class VerifierCall(BaseModel):
    """A small-model call the verifier made: in `cache_lookup`'s output, so the cost ledger records it."""

    model_config = ConfigDict(extra="forbid")

    model: str
    tier: str = "small"
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Money | None = None
    uncached_cost_usd: Money | None = None
    latency_ms: float = 0.0
    valid: bool = True

    @classmethod
    def of(cls, answer: ModelAnswer) -> VerifierCall:
        return cls.model_validate(answer.model_dump(include=set(cls.model_fields)))


def question(cached: str, new: str, verify: Verify) -> SlmRequest:
    """The small-model request that asks whether two prompts are the same question."""
    prompt = f"Question 1:\n<<<\n{cached}\n>>>\n\nQuestion 2:\n<<<\n{new}\n>>>\n\nDo they ask for the same thing?"
    return SlmRequest(
        system=SYSTEM,
        prompt=prompt,
        labels=LABELS,
        max_tokens=16,
        temperature=0.0,
        provider=verify.provider,
        model=verify.model,
    )


async def same_question(cached: str, new: str, verify: Verify) -> tuple[float, VerifierCall | None]:
    """The probability (a lower bound) that the small model says the two prompts are the same question,
    0 when it says they are not, or cannot say; and the call it made (None: no answer came)."""
    try:
        answer = await answer_small(question(cached, new, verify))
    except ModelError as exc:
        step_logger().warning("semantic verifier unavailable, treating the candidate as a miss: %s", exc)
        return 0.0, None
    call = VerifierCall.of(answer)
    if not answer.valid or answer.label != "same":
        return 0.0, call
    confidence = label_confidence(answer.label, LABELS, answer.logprobs)
    return (0.0 if confidence is None else confidence.prob), call
