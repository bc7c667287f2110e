"""HTTP for the model providers: one httpx client per provider and event loop, and the mapping of
httpx's errors and the providers' error answers onto `tasks.core.errors` (never with a secret)."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

import httpx
import orjson

from tasks.core.errors import ModelAuthError, ModelRequestError, ModelTimeout, ModelUnavailable
from tasks.core.loops import for_loop
from tasks.core.redact import redact
from tasks.providers.retry import TRANSIENT_STATUS, Transient, retry_after_seconds
from tasks.providers.transport import make_client, timed_out, underlying


class LoopClients:
    """A provider's httpx client, one per event loop (an asyncio client belongs to the loop that made it),
    made on first use; or the one client injected, used as given and never closed here."""

    def __init__(self, timeout: float, injected: httpx.AsyncClient | None = None) -> None:
        self.timeout = timeout
        self.injected = injected
        self._per_loop: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def get(self) -> httpx.AsyncClient:
        if self.injected is not None:
            return self.injected
        loop = asyncio.get_running_loop()
        client = self._per_loop.get(loop)
        if client is None or client.is_closed:
            self._per_loop.pop(loop, None)
            client = for_loop(self._per_loop, loop, self._make)  # drops the clients of closed loops too
        return client

    def _make(self) -> httpx.AsyncClient:
        # httpx's own timeouts are per read; the attempt's total deadline is `retry.with_retries`'s
        return make_client(self.timeout)

    async def aclose(self) -> None:
        """Close this loop's client."""
        client = self._per_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def error_text(response: httpx.Response) -> str:
    """The provider's own error message, from its error object if present (OpenAI, Anthropic, Ollama alike)."""
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


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    provider: str,
    where: str,
    secrets: tuple[str, ...],
    auth: httpx.Auth | None = None,
    hint: str = "",
) -> httpx.Response:
    """POST `body`; httpx's errors become ours (`where` names the endpoint without credentials; `hint`
    says what to do when it cannot be reached).

    The endpoint is parsed once (`endpoint`) and the body written by orjson: given a string and
    `json=`, httpx parses the URL and runs `json.dumps` on every call (2.1 % of the gateway's
    event-loop CPU on all-new prompts at concurrency 32, sampled). The same bytes on the wire:
    compact UTF-8 JSON, `content-type: application/json`."""
    try:
        return await client.post(
            endpoint(url),
            content=orjson.dumps(body),
            headers={"content-type": "application/json", **headers},
            auth=auth or httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.TransportError as exc:
        cause = underlying(exc)
        if timed_out(exc):
            raise ModelTimeout(
                f"{provider} at {where} did not answer in time ({type(cause).__name__})", provider=provider
            ) from exc
        detail = redact(f"{type(cause).__name__}: {cause}", *secrets)
        fix = f"; {hint}" if hint else ""
        raise ModelUnavailable(f"{provider} cannot be reached at {where}: {detail}{fix}", provider=provider) from exc


@lru_cache(maxsize=256)
def endpoint(url: str) -> httpx.URL:
    """`url` parsed, once per process: a provider posts to the same few endpoints."""
    return httpx.URL(url)


def check_status(response: httpx.Response, *, provider: str, key_variable: str, secrets: tuple[str, ...]) -> None:
    """Raise for an error answer: transient ones retryable, 401/403 an auth error naming `key_variable`."""
    status = response.status_code
    if status < 400:
        return
    said = redact(error_text(response), *secrets)
    if status in TRANSIENT_STATUS:
        raise Transient(
            f"{provider} answered {status}: {said}",
            provider=provider,
            status=status,
            retry_after=retry_after_seconds(response.headers),
        )
    if status in (401, 403):
        raise ModelAuthError(
            f"{provider} refused the credentials ({status}): {said}; check {key_variable}", provider=provider, status=status
        )
    raise ModelRequestError(f"{provider} refused the request ({status}): {said}", provider=provider, status=status)
