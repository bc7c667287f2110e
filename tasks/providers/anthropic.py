"""Anthropic's messages API over httpx."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from tasks.core.completion import Completion, Usage
from tasks.core.errors import ModelError
from tasks.core.tokens import count_tokens
from tasks.providers.http import post_json
from tasks.providers.retry import RetryPolicy

ANTHROPIC_VERSION = "2023-06-01"


class _Block(BaseModel):
    type: str
    text: str | None = None


class _Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None

    def to_usage(self) -> Usage:
        """Ours: Anthropic's ``input_tokens`` leaves out cache reads and writes, ours counts the whole prompt."""
        read, write = self.cache_read_input_tokens or 0, self.cache_creation_input_tokens or 0
        return Usage(
            input_tokens=self.input_tokens + read + write,
            output_tokens=self.output_tokens,
            cached_input_tokens=read,
            cache_write_tokens=write,
        )


#: Anthropic's documented minimum cacheable prefix, in tokens, by model family (first match wins)
_CACHE_MINIMUMS = (
    ("opus-4-6", 4096),
    ("opus-4-5", 4096),
    ("haiku-4-5", 4096),
    ("sonnet-4-6", 2048),
    ("haiku", 2048),  # Claude Haiku 3 and 3.5
)
DEFAULT_CACHE_MINIMUM = 1024  # Sonnet 3.7 to 4.5, Opus 3 to 4.1


def min_cache_tokens(model: str) -> int:
    """The shortest prefix `model` will cache; a shorter one marked with cache_control is just not cached."""
    name = model.lower()
    return next((n for part, n in _CACHE_MINIMUMS if part in name), DEFAULT_CACHE_MINIMUM)


def mark_cache_prefix(body: dict[str, Any], model: str) -> bool:
    """Set ``cache_control`` at the end of the static prefix (system prompt and every message before
    the last one) when it is long enough for `model` to cache it. True if it was set."""
    messages = body["messages"]
    prefix = [body.get("system") or "", *(m["content"] for m in messages[:-1])]
    if count_tokens(prefix, f"anthropic/{model}") < min_cache_tokens(model):
        return False
    block = {"type": "text", "cache_control": {"type": "ephemeral"}}
    if len(messages) > 1:
        last = messages[-2]
        messages[-2] = {**last, "content": [{**block, "text": last["content"]}]}
    elif body.get("system"):
        body["system"] = [{**block, "text": body["system"]}]
    return True


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
    cache_prefix: bool = False,
) -> Completion:
    """One message; with `cache_prefix`, the static prefix is marked for Anthropic's prompt cache."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "messages": [m for m in messages if m["role"] != "system"],
    }
    if system:
        body["system"] = system
    if cache_prefix:
        mark_cache_prefix(body, model)
    headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    url = base_url.rstrip("/") + "/v1/messages"
    response, latency = await post_json(
        http, url, body, headers, provider="anthropic", api_key=api_key, key_variable="ANTHROPIC_API_KEY", policy=policy
    )
    try:
        parsed = _Response.model_validate_json(response.content)
    except ValidationError as exc:
        raise ModelError(f"anthropic sent a response that is not a message: {response.text[:200]}", provider="anthropic") from exc
    usage = parsed.usage or _Usage()
    return Completion(
        text="".join(b.text or "" for b in parsed.content if b.type == "text"),
        model=f"anthropic/{parsed.model or model}",
        usage=usage.to_usage(),
        latency_ms=latency,
        finish_reason=parsed.stop_reason,
    )
