"""Ollama through the official `ollama` client."""

from __future__ import annotations

import time
from typing import Any

import httpx
import ollama

from tasks.core.completion import Completion, Usage
from tasks.core.errors import ModelError, ModelRequestError, ModelTimeout, ModelUnavailable
from tasks.core.tokens import count_tokens


async def chat(
    client: ollama.AsyncClient,
    *,
    host: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    json_schema: dict[str, Any] | None,
) -> Completion:
    started = time.perf_counter()
    try:
        response = await client.chat(
            model=model,
            messages=messages,
            format=json_schema,
            options={"temperature": temperature, "num_predict": max_tokens},
            stream=False,
        )
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise ModelRequestError(
                f"ollama at {host} has no model '{model}': run `ollama pull {model}` or set FRUGAL_SLM_MODEL",
                provider="ollama",
                status=404,
            ) from exc
        kind = ModelUnavailable if exc.status_code >= 500 or exc.status_code == 429 else ModelRequestError
        raise kind(
            f"ollama at {host} answered {exc.status_code}: {exc.error}", provider="ollama", status=exc.status_code
        ) from exc
    except httpx.TimeoutException as exc:
        raise ModelTimeout(f"ollama at {host} did not answer in time; raise FRUGAL_SLM_TIMEOUT", provider="ollama") from exc
    except (ConnectionError, httpx.TransportError) as exc:
        raise ModelUnavailable(
            f"ollama cannot be reached at {host}: start it (`ollama serve`) or set OLLAMA_HOST", provider="ollama"
        ) from exc
    latency = (time.perf_counter() - started) * 1000
    if response.message is None:
        raise ModelError(f"ollama at {host} sent a chat response without a message", provider="ollama")
    text = response.message.content or ""
    if response.prompt_eval_count is not None and response.eval_count is not None:
        usage = Usage(input_tokens=response.prompt_eval_count, output_tokens=response.eval_count)
    else:  # Ollama leaves the counts out in some cases: count them, and say so
        usage = Usage(
            input_tokens=response.prompt_eval_count
            if response.prompt_eval_count is not None
            else count_tokens((m["content"] for m in messages), f"ollama/{model}"),
            output_tokens=response.eval_count if response.eval_count is not None else count_tokens([text], f"ollama/{model}"),
            estimated=True,
        )
    return Completion(
        text=text,
        model=f"ollama/{response.model or model}",
        usage=usage,
        latency_ms=latency,
        finish_reason=response.done_reason,
    )
