"""`call_llm`: the large-model tier over HTTP (OpenAI-compatible or Anthropic).

Transient failures are retried with backoff that honours Retry-After (see
`tasks.providers.retry`); other failures raise a typed `ModelError` carrying the
provider's message, never the API key.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from prefect import task
from pydantic import Field

from tasks.core.canonical import sha256_of
from tasks.core.constraints import instruction, output_schema
from tasks.core.errors import ConfigError
from tasks.core.model_request import ModelRequest, to_answer
from tasks.core.records import ModelAnswer
from tasks.core.settings import LlmSettings, get_settings
from tasks.providers import anthropic as anthropic_messages
from tasks.providers import openai as openai_chat
from tasks.providers.clients import http_client, single_flight
from tasks.providers.local import answer_local
from tasks.providers.retry import RetryPolicy
from tasks.providers.tiers import DEFAULT_OPENAI_URL, Choice, large_choice, local_choice
from tasks.steps.call_cache import RequestKey


class LlmRequest(ModelRequest):
    """Arguments of `call_llm`."""

    provider: Literal["openai", "anthropic", "local"] | None = Field(None, description="default FRUGAL_LLM_PROVIDER")
    base_url: str | None = Field(None, description="endpoint; default OPENAI_BASE_URL / ANTHROPIC_BASE_URL")


def llm_choice(request: LlmRequest) -> Choice:
    s = get_settings()
    base = large_choice(s.llm)
    provider = request.provider or base.provider
    if provider == "local":
        return local_choice(s.slm)
    if provider == base.provider:
        return Choice(provider, request.model or base.model, request.base_url or base.endpoint)
    forced = large_choice(s.llm.model_copy(update={"provider": provider}))
    return Choice(provider, request.model or forced.model, request.base_url or forced.endpoint)


def llm_identity(request: LlmRequest) -> dict[str, Any]:
    choice = llm_choice(request)
    return request.identity(tier="large", provider=choice.provider, model=choice.model, endpoint=choice.endpoint)


def _policy(s: LlmSettings) -> RetryPolicy:
    return RetryPolicy(max_attempts=s.max_attempts, base_delay=s.backoff_base, budget=s.max_retry_seconds)


async def answer_large(request: LlmRequest, http: httpx.AsyncClient | None = None) -> ModelAnswer:
    """Answer with the large model; identical requests in flight share one call."""
    key = "llm-" + sha256_of(llm_identity(request))
    return await single_flight(key, lambda: _answer_large(request, http), copy=lambda answer: answer.model_copy(deep=True))


async def _answer_large(request: LlmRequest, http: httpx.AsyncClient | None) -> ModelAnswer:
    settings = get_settings()
    s = settings.llm
    choice = llm_choice(request)
    if choice.provider == "local":
        return await answer_local(request, "large", choice, settings.slm)
    assert choice.endpoint is not None
    messages = request.chat_messages()
    schema = output_schema(request.labels, request.json_schema)
    client = http or http_client(s.timeout)
    if choice.provider == "anthropic":
        if s.anthropic_api_key is None:
            raise ConfigError("the large model is Anthropic but ANTHROPIC_API_KEY is not set")
        if (line := instruction(request.labels, request.json_schema)) is not None:
            messages = [{"role": "system", "content": line}, *messages]
        completion = await anthropic_messages.chat(
            client,
            base_url=choice.endpoint,
            api_key=s.anthropic_api_key.get_secret_value(),
            model=choice.model,
            messages=messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            policy=_policy(s),
            cache_prefix=request.cache_prefix,
        )
    else:
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
        if key is None and choice.endpoint.rstrip("/") == DEFAULT_OPENAI_URL:
            raise ConfigError(
                "the large model is OpenAI but OPENAI_API_KEY is not set; set it, or set OPENAI_BASE_URL "
                "to an OpenAI-compatible endpoint that needs no key"
            )
        completion = await openai_chat.chat(
            client,
            base_url=choice.endpoint,
            api_key=key,
            model=choice.model,
            messages=messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            json_schema=schema,
            policy=_policy(s),
        )
    return to_answer(completion, "large", request)


@task(name="call_llm", cache_policy=RequestKey(kind="llm", identify=llm_identity), persist_result=True)
async def call_llm(request: LlmRequest) -> ModelAnswer:
    """Answer with the large model, retrying transient failures."""
    return await answer_large(request)
