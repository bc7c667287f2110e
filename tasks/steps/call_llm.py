"""`call_llm`: the large-model tier (OpenAI-compatible, Anthropic, or any registered provider).

The provider comes from the registry by name (`tasks.providers.get_provider`).
Transient failures are retried within one deadline per attempt and a hard
ceiling per call (see `tasks.providers.retry`); other failures raise a typed
`ModelError` carrying the provider's message, never a key.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tasks.core.model_request import ModelRequest
from tasks.core.records import ModelAnswer
from tasks.core.settings import Settings
from tasks.providers.tiers import Choice, large_choice
from tasks.steps.model_call import PreparedCall, answer, prepare, registered_provider


class LlmRequest(ModelRequest):
    """Arguments of `call_llm`."""

    provider: str | None = Field(
        None, description="a registered provider (openai, anthropic, local, ...); default FRUGAL_LLM_PROVIDER"
    )
    base_url: str | None = Field(None, description="endpoint; default OPENAI_BASE_URL / ANTHROPIC_BASE_URL")

    @field_validator("provider")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        return registered_provider(name)


def llm_choice(request: LlmRequest, settings: Settings) -> Choice:
    base = large_choice(settings.llm, request.provider, settings.slm)
    if base.provider == "local":
        return base
    return Choice(base.provider, request.model or base.model, request.base_url or base.endpoint)


def prepare_large(request: LlmRequest) -> PreparedCall:
    return prepare(request, "large", llm_choice)  # type: ignore[arg-type]  # an LlmRequest chooser


async def answer_large(request: LlmRequest) -> ModelAnswer:
    """Answer with the large model; identical requests in flight share one call."""
    return await answer(prepare_large(request), request)


async def call_llm(request: LlmRequest) -> ModelAnswer:
    """Answer with the large model, retrying transient failures."""
    return await answer_large(request)


def task_options() -> dict[str, Any]:
    """Its task runs' result cache (orchestrated runs): keyed by the request actually sent, kept as a result."""
    from tasks.steps.call_cache import RequestKey  # imports Prefect: only when an orchestrated run makes the task

    return {"cache_policy": RequestKey(kind="llm", prepare=prepare_large), "persist_result": True}
