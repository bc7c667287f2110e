"""OpenAI-compatible chat completions over httpx (OpenAI, vLLM, llama.cpp, LiteLLM, ...)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from flows.errors import ModelAuthError, ModelError, ModelRequestError
from tasks.adapters.base import Completion, Usage
from tasks.adapters.redact import redact
from tasks.adapters.retry import RetryPolicy, send_with_retries
from tasks.tokens import count_tokens


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


def error_text(response: httpx.Response) -> str:
    """The provider's own error message, from OpenAI's error object if present."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return response.text[:300]


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
    started = time.perf_counter()
    response = await send_with_retries(
        lambda: http.post(url, json=body, headers=headers), policy, "openai", lambda r: redact(error_text(r), api_key)
    )
    latency = (time.perf_counter() - started) * 1000
    if response.status_code in (401, 403):
        raise ModelAuthError(
            f"openai refused the credentials ({response.status_code}): {redact(error_text(response), api_key)}; "
            "check OPENAI_API_KEY",
            provider="openai",
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise ModelRequestError(
            f"openai refused the request ({response.status_code}): {redact(error_text(response), api_key)}",
            provider="openai",
            status=response.status_code,
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
