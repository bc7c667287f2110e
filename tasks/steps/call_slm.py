"""`call_slm`: the small-model tier: Ollama (official client) or the in-process local model.

With `labels:` or `schema:` the output is constrained (Ollama `format`, a
llama.cpp grammar) and validated; an invalid answer comes back with
``valid: false`` and is never stored, so the pipeline can escalate it.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import task
from pydantic import Field

from tasks.core.canonical import sha256_of
from tasks.core.constraints import output_schema
from tasks.core.model_request import ModelRequest, to_answer
from tasks.core.records import ModelAnswer
from tasks.core.settings import get_settings
from tasks.providers import ollama as ollama_chat
from tasks.providers.clients import ollama_client, single_flight
from tasks.providers.local import answer_local
from tasks.providers.tiers import Choice, local_choice, small_choice
from tasks.steps.call_cache import RequestKey


class SlmRequest(ModelRequest):
    """Arguments of `call_slm`."""

    provider: Literal["ollama", "local"] | None = Field(None, description="default FRUGAL_SLM_PROVIDER")
    host: str | None = Field(None, description="Ollama URL; default OLLAMA_HOST")


def slm_choice(request: SlmRequest) -> Choice:
    slm = get_settings().slm
    base = small_choice(slm)
    provider = request.provider or base.provider
    if provider == "local":
        return local_choice(slm)
    host = request.host or (base.endpoint if base.provider == "ollama" else None) or slm.host or "http://127.0.0.1:11434"
    return Choice("ollama", request.model or slm.model, host)


def slm_identity(request: SlmRequest) -> dict[str, Any]:
    choice = slm_choice(request)
    return request.identity(tier="small", provider=choice.provider, model=choice.model, endpoint=choice.endpoint)


async def answer_small(request: SlmRequest) -> ModelAnswer:
    """Answer with the small model; identical requests in flight share one call."""
    key = "slm-" + sha256_of(slm_identity(request))
    return await single_flight(key, lambda: _answer_small(request), copy=lambda answer: answer.model_copy(deep=True))


async def _answer_small(request: SlmRequest) -> ModelAnswer:
    choice = slm_choice(request)
    slm = get_settings().slm
    if choice.provider == "local":
        return await answer_local(request, "small", choice, slm)
    assert choice.endpoint is not None
    completion = await ollama_chat.chat(
        ollama_client(choice.endpoint, slm.timeout),
        host=choice.endpoint,
        model=choice.model,
        messages=request.chat_messages(),
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        json_schema=output_schema(request.labels, request.json_schema),
    )
    return to_answer(completion, "small", request)


@task(name="call_slm", cache_policy=RequestKey(kind="slm", identify=slm_identity), persist_result=True)
async def call_slm(request: SlmRequest) -> ModelAnswer:
    """Answer with the small model; the answer says whether it passed validation."""
    return await answer_small(request)
