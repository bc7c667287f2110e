"""Anthropic's messages API over httpx. The key goes in ``x-api-key``, as the API documents.

Anthropic cannot be held to a JSON schema here, so a constrained call gets a
line in its system prompt instead (the answer is validated either way). Its
API returns no token log-probabilities.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from tasks.core.completion import Completion, Usage, normalise_finish_reason
from tasks.core.errors import ConfigError, ModelError
from tasks.core.redact import public_url, redact, url_secrets
from tasks.core.settings import Settings
from tasks.core.tokens import count_tokens
from tasks.providers.base import ChatCall
from tasks.providers.http import LoopClients, check_status, post
from tasks.providers.openai import served
from tasks.providers.retry import RetryPolicy, with_retries

NAME = "anthropic"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"
KEY_VARIABLE = "ANTHROPIC_API_KEY"


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


class _Response(BaseModel):
    model: str = ""
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage | None = None


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


class AnthropicProvider:
    """The messages API at `base_url` (``/v1/messages`` appended)."""

    name = NAME

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_ANTHROPIC_URL,
        *,
        policy: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = public_url(base_url).rstrip("/")
        self.api_key = api_key
        self.policy = policy or RetryPolicy(attempt_timeout=timeout)
        self.clients = LoopClients(timeout, http_client)
        self.secrets: tuple[str, ...] = (api_key, *url_secrets(base_url))

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str | None = None) -> AnthropicProvider:
        llm = settings.llm
        if llm.anthropic_api_key is None:
            raise ConfigError(f"the large model is Anthropic but {KEY_VARIABLE} is not set")
        policy = RetryPolicy.from_settings(llm, attempt_timeout=llm.timeout, timeout_hint="raise FRUGAL_LLM_TIMEOUT")
        return cls(
            llm.anthropic_api_key.get_secret_value(),
            endpoint or llm.anthropic_base_url,
            policy=policy,
            timeout=llm.timeout,
        )

    def body(self, call: ChatCall) -> dict[str, Any]:
        messages = call.messages
        if call.instruction is not None:
            messages = [{"role": "system", "content": call.instruction}, *messages]
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": call.model,
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        if call.cache_prefix:
            mark_cache_prefix(body, call.model)
        return body

    async def complete(self, call: ChatCall) -> Completion:
        body = self.body(call)
        headers = {"x-api-key": self.api_key, "anthropic-version": ANTHROPIC_VERSION}
        url = self.base_url + "/v1/messages"

        async def attempt() -> httpx.Response:
            response = await post(
                self.clients.get(), url, body, headers, provider=NAME, where=self.base_url, secrets=self.secrets
            )
            check_status(response, provider=NAME, key_variable=KEY_VARIABLE, secrets=self.secrets)
            return response

        started = time.perf_counter()
        response = await with_retries(attempt, self.policy, NAME)
        latency = (time.perf_counter() - started) * 1000
        try:
            parsed = _Response.model_validate_json(response.content)
        except ValidationError as exc:
            raise ModelError(
                f"{NAME} sent a response that is not a message: {redact(response.text[:200], *self.secrets)}", provider=NAME
            ) from exc
        return Completion(
            text="".join(b.text or "" for b in parsed.content if b.type == "text"),
            model=f"{NAME}/{call.model}",
            served_model=served(NAME, call.model, parsed.model),
            usage=(parsed.usage or _Usage()).to_usage(),
            latency_ms=latency,
            finish_reason=normalise_finish_reason(parsed.stop_reason),
        )

    async def aclose(self) -> None:
        await self.clients.aclose()
