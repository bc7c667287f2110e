"""One POST to a model provider: retries, then typed errors with the provider's message (never the key)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tasks.core.errors import ModelAuthError, ModelRequestError
from tasks.core.redact import redact
from tasks.providers.retry import RetryPolicy, send_with_retries


def error_text(response: httpx.Response) -> str:
    """The provider's own error message, from its error object if present (OpenAI and Anthropic alike)."""
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


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    provider: str,
    api_key: str | None,
    key_variable: str,
    policy: RetryPolicy,
) -> tuple[httpx.Response, float]:
    """POST with retries; return the successful response and its latency in ms, or raise a typed error."""
    started = time.perf_counter()
    response = await send_with_retries(
        lambda: http.post(url, json=body, headers=headers), policy, provider, lambda r: redact(error_text(r), api_key)
    )
    latency = (time.perf_counter() - started) * 1000
    if response.status_code in (401, 403):
        raise ModelAuthError(
            f"{provider} refused the credentials ({response.status_code}): {redact(error_text(response), api_key)}; "
            f"check {key_variable}",
            provider=provider,
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise ModelRequestError(
            f"{provider} refused the request ({response.status_code}): {redact(error_text(response), api_key)}",
            provider=provider,
            status=response.status_code,
        )
    return response, latency
