"""Anthropic's messages API over httpx."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from flows.errors import ModelAuthError, ModelError, ModelRequestError
from tasks.adapters.base import Completion, Usage
from tasks.adapters.openai_chat import error_text
from tasks.adapters.redact import redact
from tasks.adapters.retry import RetryPolicy, send_with_retries

ANTHROPIC_VERSION = "2023-06-01"


class _Block(BaseModel):
    type: str
    text: str | None = None


class _Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class _Response(BaseModel):
    model: str = ""
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage | None = None


async def chat(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    policy: RetryPolicy,
) -> Completion:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "messages": [m for m in messages if m["role"] != "system"],
    }
    if system:
        body["system"] = system
    headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    url = base_url.rstrip("/") + "/v1/messages"
    started = time.perf_counter()
    response = await send_with_retries(
        lambda: http.post(url, json=body, headers=headers), policy, "anthropic", lambda r: redact(error_text(r), api_key)
    )
    latency = (time.perf_counter() - started) * 1000
    if response.status_code in (401, 403):
        raise ModelAuthError(
            f"anthropic refused the credentials ({response.status_code}): {redact(error_text(response), api_key)}; "
            "check ANTHROPIC_API_KEY",
            provider="anthropic",
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise ModelRequestError(
            f"anthropic refused the request ({response.status_code}): {redact(error_text(response), api_key)}",
            provider="anthropic",
            status=response.status_code,
        )
    try:
        parsed = _Response.model_validate_json(response.content)
    except ValidationError as exc:
        raise ModelError(f"anthropic sent a response that is not a message: {response.text[:200]}", provider="anthropic") from exc
    usage = parsed.usage or _Usage()
    return Completion(
        text="".join(b.text or "" for b in parsed.content if b.type == "text"),
        model=f"anthropic/{parsed.model or model}",
        usage=Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        latency_ms=latency,
        finish_reason=parsed.stop_reason,
    )
