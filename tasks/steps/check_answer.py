"""`check_answer`: accept or reject one model answer, and say what the pipeline does next.

The checks (tasks/checks/) look for a truncated answer, a degenerate one (empty, a
loop, an echo of the prompt), the wrong language, a broken constraint (labels,
schema, `max_words`, `max_chars`) and low confidence (token log-probabilities).
A rejection carries a reason code; the node's `on_reject` decides what follows:

- `escalate`: the verdict says `escalate: true`; the pipeline's large-model node runs on it;
- `retry`: the verdict says `retry: true` with adjusted arguments (`retry_with`: a larger
  token budget for a truncated answer, a little temperature for a loop) for one more
  small-model call, which a second `check_answer` judges;
- `fail`: the node fails with `ModelOutputInvalid` naming the reason;
- `flag`: the answer is used but marked `accepted: false`.

The verdict's `answer` is the checked answer with `accepted`, `reject_reason` and
`escalated_from` filled in; `cache_store` never stores one with `accepted: false`.
`replaces` takes the verdict of a rejected answer this one replaces (the small one,
for the large model's answer), so the final verdict says what it was escalated from.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.checks.policy import Thresholds, run_checks
from tasks.core.errors import ModelOutputInvalid
from tasks.core.log import step_logger
from tasks.core.records import ModelAnswer

Action = Literal["accept", "escalate", "retry", "flag"]

#: a retried truncated answer gets this many times the tokens the first one used
RETRY_TOKEN_FACTOR = 2
#: a retried degenerate answer is sampled at this temperature instead of greedily
RETRY_TEMPERATURE = 0.4


class Verdict(BaseModel):
    """What `check_answer` returns."""

    model_config = ConfigDict(extra="forbid")

    accepted: bool = Field(description="the answer passed every check")
    reason: str | None = Field(None, description="the first failed check's reason code (see tasks/checks/__init__.py)")
    reasons: list[str] = Field(default_factory=list, description="every failed check's reason code")
    detail: str | None = Field(None, description="what the first failed check measured")
    action: Action = Field(description="what the pipeline does with the answer")
    escalate: bool = Field(False, description="the large model should answer instead")
    retry: bool = Field(False, description="the small model should answer once more, with `retry_with`")
    retry_with: dict[str, Any] | None = Field(None, description="max_tokens / temperature for the retry")
    escalated_from: str | None = Field(None, description="the model whose rejected answer this one replaces")
    escalation_reason: str | None = Field(None, description="why that answer was rejected")
    answer: ModelAnswer | None = Field(None, description="the answer with its verdict filled in")
    scores: dict[str, Any] = Field(default_factory=dict, description="what the checks measured")
    note: str = Field(description="one line for the run's node table")


class CheckRequest(Thresholds):
    """Arguments of `check_answer`: the answer, what it answered, the thresholds (see `Thresholds`), the policy."""

    model_config = ConfigDict(extra="forbid")

    answer: ModelAnswer | None = Field(description="the model answer to judge; null (a failed call) is rejected as no_answer")
    prompt: str | None = Field(None, description="the prompt it answers (for echo and language)")
    system: str | None = Field(None, description="the system prompt (for echo and an asked-for language)")
    labels: list[str] | None = Field(None, description="the node's labels (for the label's probability and margin)")
    on_reject: Literal["escalate", "retry", "fail", "flag"] = Field("escalate", description="what a rejection leads to")
    replaces: Verdict | None = Field(None, description="the verdict of the rejected answer this one replaces")

    @model_validator(mode="after")
    def _known_language(self) -> CheckRequest:
        if self.language not in (None, "auto", *self.languages):
            raise ValueError(f"language {self.language!r} is not 'auto', null or one of languages {self.languages}")
        return self


def judge(request: CheckRequest) -> Verdict:
    """The verdict on `request.answer` (pure: no I/O)."""
    outcome = run_checks(request.answer, request, prompt=request.prompt, system=request.system, labels=request.labels)
    earlier = request.replaces
    escalated_from = None
    escalation_reason = None
    if earlier is not None and not earlier.accepted:
        escalated_from = earlier.answer.model if earlier.answer is not None else (earlier.escalated_from or "unknown")
        escalation_reason = earlier.reason
    first = outcome.first
    answer = request.answer
    if answer is not None:
        answer = answer.model_copy(
            update={
                "accepted": outcome.accepted,
                "reject_reason": None if first is None else first.code,
                "escalated_from": escalated_from,
            }
        )
    if first is None:
        action: Action = "accept"
    elif request.on_reject == "fail":
        model = answer.model if answer is not None else "the model"
        raise ModelOutputInvalid(
            f"{model}'s answer was rejected ({first.code}): {first.detail}; loosen the node's thresholds "
            "or set on_reject: escalate"
        )
    else:
        action = request.on_reject  # type: ignore[assignment]  # "fail" raised above
    retry_with = _retry_with(answer, first.code) if action == "retry" and first is not None else None
    model = answer.model if answer is not None else "no answer"
    if first is None:
        note = f"accepted {model}" + (f" (escalated from {escalated_from}: {escalation_reason})" if escalated_from else "")
    else:
        note = f"rejected {model}: {first.code} ({first.detail}) -> {action}"
    return Verdict(
        accepted=outcome.accepted,
        reason=None if first is None else first.code,
        reasons=[r.code for r in outcome.rejections],
        detail=None if first is None else first.detail,
        action=action,
        escalate=action == "escalate",
        retry=action == "retry",
        retry_with=retry_with,
        escalated_from=escalated_from,
        escalation_reason=escalation_reason,
        answer=answer,
        scores=outcome.scores,
        note=note,
    )


def _retry_with(answer: ModelAnswer | None, code: str) -> dict[str, Any]:
    """The small model's arguments for its one retry: more tokens when it ran out, some temperature when it looped."""
    tokens = answer.usage.output_tokens if answer is not None else 0
    out: dict[str, Any] = {}
    if code == "truncated" and tokens:
        out["max_tokens"] = tokens * RETRY_TOKEN_FACTOR
    if code in ("loop", "echo", "empty", "low_confidence"):
        out["temperature"] = RETRY_TEMPERATURE
    return out


#: texts (answer and prompt) up to this many characters are judged on the event loop (~0.3 ms for 300)
INLINE_CHARS = 2_000
#: the language sets whose identifier this process has loaded (by a judgement in a worker thread)
_loaded: set[tuple[str, ...]] = set()


def _short(request: CheckRequest) -> bool:
    text = request.answer.text if request.answer is not None else ""
    return tuple(request.languages) in _loaded and len(text) + len(request.prompt or "") <= INLINE_CHARS


async def check_answer(request: CheckRequest) -> Verdict:
    """Accept or reject a model answer; the verdict says whether to escalate, retry or flag it."""
    # The first judgement per language set, and long texts, in a worker thread: loading the language model
    # takes ~0.3 s once, and a long text's identification ~1 ms. A short one is judged in place: ~0.3 ms,
    # where the hop to a worker thread and back cost 0.9 ms more on a miss of the gateway (measured).
    if _short(request):
        verdict = judge(request)
    else:
        verdict = await asyncio.to_thread(judge, request)
        _loaded.add(tuple(request.languages))
    if not verdict.accepted:
        step_logger().warning("answer rejected, %s: %s", verdict.action, verdict.note)
    return verdict
