"""Ollama through the official `ollama` client."""

from __future__ import annotations

import time
from typing import Any

import httpx
import ollama

from flows.errors import ModelError, ModelRequestError, ModelTimeout, ModelUnavailable
from tasks.adapters.base import Completion, Usage


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
    return Completion(
        text=response.message.content or "",
        model=f"ollama/{response.model or model}",
        usage=Usage(input_tokens=response.prompt_eval_count or 0, output_tokens=response.eval_count or 0),
        latency_ms=latency,
        finish_reason=response.done_reason,
    )
