"""Ollama's /api/chat over httpx, its answers validated with the official `ollama` package's models.

The official client keeps its own httpx client and maps errors its own way; the
wire is one POST, so this provider sends it with the same client, deadline,
retries and error mapping as the other HTTP providers, and reads the answer
with `ollama.ChatResponse` (the client's own pydantic model of it). Token
log-probabilities are asked with the request's ``logprobs`` / ``top_logprobs``
(Ollama 0.12.11 and later; older servers leave them out). Several servers
(OLLAMA_HOSTS) share the calls, least-loaded first (`tasks.providers.ollama_hosts`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import ollama
from ollama._types import ChatRequest  # the client builds its request body with this model too
from pydantic import ValidationError

from tasks.core.completion import Completion, TokenLogprob, TopToken, Usage, normalise_finish_reason
from tasks.core.errors import ModelError, ModelRequestError, ModelUnavailable
from tasks.core.redact import redact
from tasks.core.settings import Settings
from tasks.core.tokens import count_tokens
from tasks.providers.base import TOP_LOGPROBS, ChatCall
from tasks.providers.http import LoopClients, check_status, post
from tasks.providers.ollama_hosts import HostPool
from tasks.providers.openai import served
from tasks.providers.retry import RetryPolicy, with_retries

NAME = "ollama"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


def normalise_host(host: str) -> str:
    """``host:port`` as OLLAMA_HOST may give it, as a URL."""
    return host if "://" in host else f"http://{host}"


def token_logprobs(logprobs: Any) -> list[TokenLogprob] | None:
    if logprobs is None:
        return None
    return [
        TokenLogprob(
            token=t.token, logprob=t.logprob, top=[TopToken(token=a.token, logprob=a.logprob) for a in t.top_logprobs or ()]
        )
        for t in logprobs
    ]


def connect_failed(exc: ModelUnavailable) -> bool:
    """The request never reached the server (nothing was sent): safe to send to another host."""
    return isinstance(exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout))


class OllamaProvider:
    """An Ollama server at `host`, or several (``a,b``: OLLAMA_HOSTS), each call to the least-loaded healthy one."""

    name = NAME

    def __init__(
        self,
        host: str = DEFAULT_OLLAMA_HOST,
        *,
        policy: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.pool = HostPool(host)
        self.host = self.pool.public
        self.secrets = self.pool.secrets
        self.policy = policy or RetryPolicy(attempt_timeout=timeout, timeout_hint="raise FRUGAL_SLM_TIMEOUT")
        self.clients = LoopClients(timeout, http_client)

    @classmethod
    def from_settings(cls, settings: Settings, endpoint: str | None = None) -> OllamaProvider:
        slm = settings.slm
        policy = RetryPolicy.from_settings(settings.llm, attempt_timeout=slm.timeout, timeout_hint="raise FRUGAL_SLM_TIMEOUT")
        return cls(endpoint or ",".join(slm.ollama_hosts()) or DEFAULT_OLLAMA_HOST, policy=policy, timeout=slm.timeout)

    def body(self, call: ChatCall) -> dict[str, Any]:
        request = ChatRequest(
            model=call.model,
            messages=call.messages,  # type: ignore[arg-type]  # plain dicts validate into ollama.Message
            stream=False,
            format=call.json_schema,
            options={"temperature": call.temperature, "num_predict": call.max_tokens},
            logprobs=True if call.logprobs else None,
            top_logprobs=TOP_LOGPROBS if call.logprobs else None,
        )
        return request.model_dump(exclude_none=True)

    async def complete(self, call: ChatCall) -> Completion:
        body = self.body(call)

        async def attempt() -> httpx.Response:
            tried: set[str] = set()
            error: ModelUnavailable | None = None
            while True:
                host = self.pool.pick(tried)
                if host is None:  # every host refused the connection: the last refusal stands
                    assert error is not None
                    raise error
                tried.add(host.url)
                try:
                    response = await post(
                        self.clients.get(),
                        host.public + "/api/chat",
                        body,
                        {},
                        provider=NAME,
                        where=host.public,
                        secrets=self.secrets,
                        auth=host.auth,
                        hint="start it (`ollama serve`) or set OLLAMA_HOST / OLLAMA_HOSTS",
                    )
                except ModelUnavailable as exc:
                    if not connect_failed(exc):
                        raise
                    self.pool.failed(host, type(exc.__cause__).__name__)
                    error = exc
                    continue
                finally:
                    self.pool.done(host)
                self.pool.answered(host)
                if response.status_code == 404:
                    raise ModelRequestError(
                        f"ollama at {host.public} has no model '{call.model}': run `ollama pull {call.model}` "
                        "or set FRUGAL_SLM_MODEL",
                        provider=NAME,
                        status=404,
                    )
                check_status(response, provider=NAME, key_variable="OLLAMA_HOST", secrets=self.secrets)
                return response

        started = time.perf_counter()
        response = await with_retries(attempt, self.policy, NAME)
        latency = (time.perf_counter() - started) * 1000
        try:
            parsed = ollama.ChatResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise ModelError(
                f"ollama at {self.host} sent a chat response without a message: {redact(response.text[:200], *self.secrets)}",
                provider=NAME,
            ) from exc
        text = parsed.message.content or ""
        if parsed.prompt_eval_count is not None and parsed.eval_count is not None:
            usage = Usage(input_tokens=parsed.prompt_eval_count, output_tokens=parsed.eval_count)
        else:  # Ollama leaves the counts out in some cases: count them, and say so
            model_id = f"{NAME}/{call.model}"
            usage = Usage(
                input_tokens=parsed.prompt_eval_count
                if parsed.prompt_eval_count is not None
                else count_tokens((m["content"] for m in call.messages), model_id),
                output_tokens=parsed.eval_count if parsed.eval_count is not None else count_tokens([text], model_id),
                estimated=True,
            )
        return Completion(
            text=text,
            model=f"{NAME}/{call.model}",
            served_model=served(NAME, call.model, parsed.model),
            usage=usage,
            latency_ms=latency,
            finish_reason=normalise_finish_reason(parsed.done_reason),
            logprobs=token_logprobs(parsed.logprobs),
        )

    async def aclose(self) -> None:
        await self.clients.aclose()
