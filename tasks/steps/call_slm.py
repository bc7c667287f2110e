"""`call_slm`: the small-model tier: Ollama, the in-process local model, or any registered provider.

With `labels:` or `schema:` the output is constrained (Ollama `format`, a
llama.cpp grammar) and validated; an invalid answer comes back with
``valid: false`` and is never stored, so the pipeline can escalate it.
Transient failures are retried like the large tier's.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from tasks.core.model_request import ModelRequest
from tasks.core.records import ModelAnswer
from tasks.core.settings import Settings
from tasks.providers.tiers import Choice, probe_tiers, small_choice
from tasks.steps.model_call import PreparedCall, answer, prepare, registered_provider


class SlmRequest(ModelRequest):
    """Arguments of `call_slm`."""

    provider: str | None = Field(None, description="a registered provider (ollama, local, ...); default FRUGAL_SLM_PROVIDER")
    host: str | None = Field(None, description="Ollama URL; default OLLAMA_HOST")

    @field_validator("provider")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        return registered_provider(name)


def slm_choice(request: SlmRequest, settings: Settings) -> Choice:
    base = small_choice(settings.slm, request.provider)
    if base.provider == "local":
        return base
    return Choice(base.provider, request.model or base.model, request.host or base.endpoint)


def prepare_small(request: SlmRequest) -> PreparedCall:
    return prepare(request, "small", slm_choice)  # type: ignore[arg-type]  # an SlmRequest chooser


async def answer_small(request: SlmRequest) -> ModelAnswer:
    """Answer with the small model; identical requests in flight share one call."""
    await probe_tiers()
    return await answer(prepare_small(request), request)


async def call_slm(request: SlmRequest) -> ModelAnswer:
    """Answer with the small model; the answer says whether it passed validation."""
    return await answer_small(request)


def task_options() -> dict[str, Any]:
    """Its task runs' result cache (orchestrated runs): keyed by the request actually sent, kept as a result."""
    from tasks.steps.call_cache import RequestKey  # imports Prefect: only when an orchestrated run makes the task

    return {"cache_policy": RequestKey(kind="slm", prepare=prepare_small), "persist_result": True}
