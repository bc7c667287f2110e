"""OpenAI-compatible chat completions over httpx (OpenAI, vLLM, llama.cpp, LiteLLM, ...)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from tasks.core.completion import Completion, Usage
from tasks.core.errors import ModelError
from tasks.core.tokens import count_tokens
from tasks.providers.http import post_json
from tasks.providers.retry import RetryPolicy


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _PromptDetails(BaseModel):
    cached_tokens: int | None = None


class _Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None

    def to_usage(self) -> Usage:
        """Ours: ``prompt_tokens`` already includes the cached ones."""
        cached = (self.prompt_tokens_details.cached_tokens if self.prompt_tokens_details else None) or 0
        return Usage(input_tokens=self.prompt_tokens, output_tokens=self.completion_tokens, cached_input_tokens=cached)


class _Response(BaseModel):
    model: str = ""
    choices: list[_Choice]
    usage: _Usage | None = None


async def chat(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str | None,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    json_schema: dict[str, Any] | None,
    policy: RetryPolicy,
) -> Completion:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
    if json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": json_schema, "strict": True},
        }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/chat/completions"
    response, latency = await post_json(
        http, url, body, headers, provider="openai", api_key=api_key, key_variable="OPENAI_API_KEY", policy=policy
    )
    try:
        parsed = _Response.model_validate_json(response.content)
        choice = parsed.choices[0]
    except (ValidationError, IndexError) as exc:
        raise ModelError(
            f"openai sent a response that is not a chat completion: {response.text[:200]}", provider="openai"
        ) from exc
    text = choice.message.content or ""
    if parsed.usage is not None:
        usage = parsed.usage.to_usage()
    else:  # some OpenAI-compatible servers send no usage: count it, and say so
        usage = Usage(
            input_tokens=count_tokens((m["content"] for m in messages), f"openai/{model}"),
            output_tokens=count_tokens([text], f"openai/{model}"),
            estimated=True,
        )
    return Completion(
        text=text,
        model=f"openai/{parsed.model or model}",
        usage=usage,
        latency_ms=latency,
        finish_reason=choice.finish_reason,
    )
