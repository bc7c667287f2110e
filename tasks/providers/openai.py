"""OpenAI-compatible chat completions over httpx (OpenAI, vLLM, llama.cpp, LiteLLM, ...).

Credentials: ``OPENAI_API_KEY`` as a Bearer token; ``user:password@`` in
``OPENAI_BASE_URL`` is sent as Basic auth instead (as httpx does), and the URL is
shown without it. A missing key is a `ConfigError` only for api.openai.com: a
self-hosted endpoint may need none.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from tasks.core.completion import Completion, TokenLogprob, TopToken, Usage, normalise_finish_reason
from tasks.core.errors import ConfigError, ModelError
from tasks.core.redact import public_url, redact, url_secrets
from tasks.core.settings import Settings
from tasks.core.tokens import count_tokens
from tasks.providers.base import TOP_LOGPROBS, ChatCall
from tasks.providers.http import LoopClients, check_status, post
from tasks.providers.retry import RetryPolicy, with_retries

NAME = "openai"
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
KEY_VARIABLE = "OPENAI_API_KEY"


class _Message(BaseModel):
    content: str | None = None


class _Top(BaseModel):
    token: str
    logprob: float


class _TokenLogprob(BaseModel):
    token: str
    logprob: float
    top_logprobs: list[_Top] = []


class _Logprobs(BaseModel):
    content: list[_TokenLogprob] | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


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


def token_logprobs(logprobs: _Logprobs | None) -> list[TokenLogprob] | None:
    """OpenAI's ``choices[0].logprobs.content`` as ours (llama.cpp's server and xllamacpp send the same)."""
    if logprobs is None or logprobs.content is None:
        return None
    return [
        TokenLogprob(token=t.token, logprob=t.logprob, top=[TopToken(token=a.token, logprob=a.logprob) for a in t.top_logprobs])
        for t in logprobs.content
    ]


def logprobs_from(value: Any) -> list[TokenLogprob] | None:
    """A choice's ``logprobs`` object, as JSON data, as ours; None when absent or not of that shape."""
    if not isinstance(value, dict):
        return None
    try:
        return token_logprobs(_Logprobs.model_validate(value))
    except ValidationError:
        return None


def served(provider: str, asked: str, answered: str | None) -> str | None:
    """The served model's id beside the one asked for, when the server names another."""
    return f"{provider}/{answered}" if answered and answered != asked else None


class OpenAIProvider:
    """Chat completions at `base_url` (``/chat/completions`` appended)."""

    name = NAME

    def __init__(
        self,
        base_url: str = DEFAULT_OPENAI_URL,
        api_key: str | None = None,
        *,
        policy: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = public_url(base_url).rstrip("/")
        self.api_key = api_key
        self.policy = policy or RetryPolicy(attempt_timeout=timeout)
        self.clients = LoopClients(timeout, http_client)
        credentials = url_secrets(base_url)
        self.secrets: tuple[str, ...] = (*credentials, *((api_key,) if api_key else ()))
        parts = httpx.URL(base_url)
        self.auth = httpx.BasicAuth(parts.username, parts.password) if parts.username or parts.password else None

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str | None = None) -> OpenAIProvider:
        llm = settings.llm
        base_url = endpoint or llm.openai_base_url or DEFAULT_OPENAI_URL
        key = llm.openai_api_key.get_secret_value() if llm.openai_api_key else None
        if key is None and base_url.rstrip("/") == DEFAULT_OPENAI_URL:
            raise ConfigError(
                f"the large model is OpenAI but {KEY_VARIABLE} is not set; set it, or set OPENAI_BASE_URL "
                "to an OpenAI-compatible endpoint that needs no key"
            )
        policy = RetryPolicy.from_settings(llm, attempt_timeout=llm.timeout, timeout_hint="raise FRUGAL_LLM_TIMEOUT")
        return cls(base_url, key, policy=policy, timeout=llm.timeout)

    def body(self, call: ChatCall) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "messages": call.messages,
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
        }
        if call.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": call.json_schema, "strict": True},
            }
        if call.logprobs:
            body["logprobs"], body["top_logprobs"] = True, TOP_LOGPROBS
        return body

    async def complete(self, call: ChatCall) -> Completion:
        body = self.body(call)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key and self.auth is None else {}
        url = self.base_url + "/chat/completions"

        async def attempt() -> httpx.Response:
            response = await post(
                self.clients.get(), url, body, headers, provider=NAME, where=self.base_url, secrets=self.secrets, auth=self.auth
            )
            check_status(response, provider=NAME, key_variable=KEY_VARIABLE, secrets=self.secrets)
            return response

        started = time.perf_counter()
        response = await with_retries(attempt, self.policy, NAME)
        latency = (time.perf_counter() - started) * 1000
        return self.parse(call, response, latency)

    def parse(self, call: ChatCall, response: httpx.Response, latency: float) -> Completion:
        try:
            parsed = _Response.model_validate_json(response.content)
            choice = parsed.choices[0]
        except (ValidationError, IndexError) as exc:
            said = redact(response.text[:200], *self.secrets)
            message = f"{NAME} at {self.base_url} sent a response that is not a chat completion: {said}"
            raise ModelError(message, provider=NAME) from exc
        text = choice.message.content or ""
        if parsed.usage is not None:
            usage = parsed.usage.to_usage()
        else:  # some OpenAI-compatible servers send no usage: count it, and say so
            usage = Usage(
                input_tokens=count_tokens((m["content"] for m in call.messages), f"{NAME}/{call.model}"),
                output_tokens=count_tokens([text], f"{NAME}/{call.model}"),
                estimated=True,
            )
        return Completion(
            text=text,
            model=f"{NAME}/{call.model}",
            served_model=served(NAME, call.model, parsed.model),
            usage=usage,
            latency_ms=latency,
            finish_reason=normalise_finish_reason(choice.finish_reason),
            logprobs=token_logprobs(choice.logprobs),
        )

    async def aclose(self) -> None:
        await self.clients.aclose()
