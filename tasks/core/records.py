"""The data that flows between steps: messages, model answers, cached answers.

All are pydantic models with ``extra="forbid"``; steps hand each other their
JSON form (``model_dump(mode="json")``), so templates only ever see plain data.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.completion import TokenLogprob, Usage
from tasks.core.pricing import Money

Tier = Literal["small", "large"]

#: Version of the cached-answer layout. A stored value with another version is a miss.
CACHE_VALUE_VERSION: Literal[1] = 1


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


def normalise_text(text: str) -> str:
    """Unicode NFC, LF line endings, no surrounding white space."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def build_messages(system: str | None, prompt: str | None, messages: list[Message] | None) -> list[dict[str, str]]:
    """One normalised message list (plain dicts) from the `system` / `prompt` / `messages` arguments.

    The system prompt comes first; an empty one is dropped; `prompt` is appended
    as the last user message.
    """
    out: list[dict[str, str]] = []
    if system and (content := normalise_text(system)):
        out.append({"role": "system", "content": content})
    for m in messages or []:
        out.append({"role": m.role, "content": normalise_text(m.content)})
    if prompt is not None:
        out.append({"role": "user", "content": normalise_text(prompt)})
    return out


class ModelAnswer(BaseModel):
    """What `call_slm` and `call_llm` return."""

    model_config = ConfigDict(extra="forbid")

    text: str
    model: str
    tier: Tier
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Money | None = Field(None, description="what the call cost in US dollars; None: the model has no price")
    uncached_cost_usd: Money | None = Field(
        None, description="what it would have cost without the provider's prompt cache (every prompt token at the input rate)"
    )
    latency_ms: float = 0.0
    valid: bool = Field(True, description="false when the answer failed its labels/schema")
    label: str | None = Field(None, description="the label, for label-constrained nodes")
    data: Any = Field(None, description="the parsed JSON, for schema-constrained nodes")
    reason: str | None = Field(None, description="why the answer is invalid, if it is")
    served_model: str | None = Field(
        None, description="the model the server said answered, when it differs from `model` (the one asked for)"
    )
    finish_reason: str | None = Field(None, description="why generation stopped: 'stop', 'length' (the token limit), ...")
    logprobs: list[TokenLogprob] | None = Field(
        None, description="per generated token, where the provider returned them (for the confidence check)"
    )
    accepted: bool | None = Field(
        None, description="the answer check's verdict: true accepted, false rejected; None: not checked beyond well-formedness"
    )
    reject_reason: str | None = Field(None, description="the check's reason code when rejected (e.g. 'truncated', 'loop')")
    escalated_from: str | None = Field(None, description="the model whose rejected answer this one replaces")


class CachedAnswer(BaseModel):
    """A prompt-cache value. Versioned: a value of another version is a miss."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = CACHE_VALUE_VERSION  # another version fails validation (in pydantic's core): a miss
    text: str
    model: str
    route: Tier
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Money | None = Field(None, description="what the call that produced it cost")
    label: str | None = None
    data: Any = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_answer(cls, answer: ModelAnswer) -> CachedAnswer:
        return cls(
            text=answer.text,
            model=answer.model,
            route=answer.tier,
            usage=answer.usage,
            cost_usd=answer.cost_usd,
            label=answer.label,
            data=answer.data,
        )
