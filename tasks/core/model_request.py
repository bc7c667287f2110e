"""The arguments every model-call step takes, and turning a completion into an answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tasks.core.completion import Completion
from tasks.core.constraints import check
from tasks.core.log import step_logger
from tasks.core.pricing import PriceOverride, rates_for, warn_unpriced
from tasks.core.records import Message, ModelAnswer, Tier, build_messages


class ModelRequest(BaseModel):
    """Arguments shared by `call_slm` and `call_llm`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    system: str | None = Field(None, description="system prompt")
    prompt: str | None = Field(None, description="user prompt, appended last")
    messages: list[Message] | None = Field(None, description="earlier chat messages")
    model: str | None = Field(None, description="model id; default from settings")
    max_tokens: int = Field(512, ge=1, description="most tokens to generate")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    labels: list[str] | None = Field(None, description="the answer must be one of these labels")
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="the answer must fit this JSON schema")
    cache_prefix: bool = Field(
        False,
        description="the system prompt and earlier messages are a static prefix: ask the provider to cache it "
        "(Anthropic: cache_control when long enough; OpenAI caches long prefixes by itself)",
    )
    price: PriceOverride | None = Field(None, description="this node's model price, instead of the price database")
    logprobs: bool = Field(
        False,
        description="ask for each generated token's log-probability and its best alternatives, where the provider "
        "gives them (always asked for `labels:` nodes)",
    )

    #: the request resolved against the settings (steps' `model_call.prepare`): kept, not part of the data
    _prepared: Any = PrivateAttr(default=None)

    @property
    def wants_logprobs(self) -> bool:
        """Log-probabilities are asked for: on request, and always for a label (they measure its confidence)."""
        return self.logprobs or bool(self.labels)

    @property
    def prepared(self) -> Any:
        return self._prepared

    @prepared.setter
    def prepared(self, value: Any) -> None:
        self._prepared = value

    def chat_messages(self) -> list[dict[str, str]]:
        messages = build_messages(self.system, self.prompt, self.messages)
        if not any(m["role"] == "user" for m in messages):
            raise ValueError("a model call needs a `prompt` or a user message in `messages`")
        return messages


def to_answer(completion: Completion, tier: Tier, request: ModelRequest) -> ModelAnswer:
    """Validate a completion against the request's labels/schema and wrap it."""
    checked = check(completion.text, request.labels, request.json_schema)
    rates = rates_for(completion.model, request.price)
    if rates is None:
        warn_unpriced(completion.model)
    if not checked.valid:
        step_logger().warning("%s answer is invalid, it will not be stored: %s", completion.model, checked.reason)
    return ModelAnswer(
        text=checked.label if checked.label is not None else completion.text,
        model=completion.model,
        tier=tier,
        usage=completion.usage,
        cost_usd=None if rates is None else rates.cost(completion.usage),
        uncached_cost_usd=None if rates is None else rates.full_cost(completion.usage),
        latency_ms=round(completion.latency_ms, 3),
        valid=checked.valid,
        label=checked.label,
        data=checked.data,
        reason=checked.reason,
        served_model=completion.served_model,
        finish_reason=completion.finish_reason,
        logprobs=completion.logprobs,
    )
