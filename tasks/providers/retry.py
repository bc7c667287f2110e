"""Retries for HTTP model calls: exponential backoff that honours Retry-After.

Connect errors, timeouts, 429 and 5xx are transient and retried, bounded in
attempts and in total time; anything else is returned to the caller, which
turns it into a typed error. Retry-After (seconds or an HTTP date) and
`retry-after-ms` replace the backoff when the server sends them.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from tasks.core.errors import ModelTimeout, ModelUnavailable
from tasks.core.log import step_logger

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 60.0


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait a server asked for, in seconds, or None."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # neither seconds nor an HTTP date: use our own backoff
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Full-jitter exponential backoff for the given (1-based) failed attempt."""
    ceiling = min(policy.base_delay * 2 ** (attempt - 1), policy.max_delay)
    return random.uniform(ceiling / 2, ceiling)


async def send_with_retries(
    send: Callable[[], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    provider: str,
    describe_error: Callable[[httpx.Response], str],
) -> httpx.Response:
    """Call `send` until it returns a non-transient response or the policy is spent."""
    deadline = time.monotonic() + policy.budget
    attempt = 0
    while True:
        attempt += 1
        wait: float | None = None
        try:
            response = await send()
        except httpx.TimeoutException as exc:
            error: ModelUnavailable = ModelTimeout(f"{provider} did not answer in time ({type(exc).__name__})", provider=provider)
        except httpx.TransportError as exc:
            error = ModelUnavailable(f"{provider} cannot be reached: {type(exc).__name__}: {exc}", provider=provider)
        else:
            if response.status_code not in TRANSIENT_STATUS:
                return response
            error = ModelUnavailable(
                f"{provider} answered {response.status_code}: {describe_error(response)}",
                provider=provider,
                status=response.status_code,
            )
            wait = retry_after_seconds(response.headers)
        if attempt >= policy.max_attempts:
            raise ModelUnavailable(
                f"{error} (gave up after {attempt} attempts)", provider=provider, status=error.status
            ) from error
        wait = backoff(policy, attempt) if wait is None else wait
        if time.monotonic() + wait > deadline:
            raise ModelTimeout(
                f"{error} (retry budget of {policy.budget:g}s spent after {attempt} attempts; "
                "raise FRUGAL_LLM_MAX_RETRY_SECONDS to wait longer)",
                provider=provider,
                status=error.status,
            ) from error
        step_logger().warning("%s; retry %d/%d in %.2fs", error, attempt, policy.max_attempts - 1, wait)
        await asyncio.sleep(wait)
