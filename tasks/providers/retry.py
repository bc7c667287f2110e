"""Retries and deadlines for model calls.

Every attempt runs under one total deadline (connect, send and the whole
response, however slowly it trickles in: `asyncio.timeout` around the attempt,
not httpx's per-read timeouts), and the call under a hard ceiling, the retry
budget, across all its attempts and waits. Transient failures
(`ModelUnavailable`: connect errors, timeouts, 408/409/429/5xx) are retried with
full-jitter exponential backoff, bounded in attempts and in total time;
Retry-After (seconds or an HTTP date) and ``retry-after-ms`` replace the backoff
when the server sends them. Anything else is raised at once. Inside a model
call's rate-limit gate (`tasks.providers.limits`), every attempt waits for its
turn first, and a 429 is retried until the budget is spent.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from tasks.core.errors import ModelTimeout, ModelUnavailable
from tasks.core.log import step_logger
from tasks.core.settings import LlmSettings
from tasks.providers.limits import current_gate

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    #: seconds for the whole call, every attempt and wait included (a hard ceiling)
    budget: float = 60.0
    #: seconds for one attempt, connect to the last byte of the answer
    attempt_timeout: float = 60.0
    #: what to raise when attempts time out, e.g. "raise FRUGAL_LLM_TIMEOUT"
    timeout_hint: str = "raise FRUGAL_LLM_TIMEOUT"

    @classmethod
    def from_settings(cls, llm: LlmSettings, *, attempt_timeout: float, timeout_hint: str) -> RetryPolicy:
        """The retry settings (FRUGAL_LLM_MAX_ATTEMPTS, ..._BACKOFF_BASE, ..._MAX_RETRY_SECONDS) hold for every provider."""
        return cls(
            max_attempts=llm.max_attempts,
            base_delay=llm.backoff_base,
            budget=llm.max_retry_seconds,
            attempt_timeout=attempt_timeout,
            timeout_hint=timeout_hint,
        )


class Transient(ModelUnavailable):
    """A transient answer (429, 5xx, ...): retried, after `retry_after` seconds when the server said so."""

    def __init__(self, message: str, *, provider: str, status: int, retry_after: float | None) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


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


async def with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, provider: str) -> T:
    """`attempt()` under its deadline, again on transient failures, until it answers or the policy is spent.

    Inside a model call's rate-limit gate (`tasks.providers.limits.gated`), each attempt first takes a
    turn (a slot in flight and the bucket's start time, before the call's ceiling), and a 429 backs the
    model off (AIMD, Retry-After shared) and is retried until the ceiling, not counted as an attempt.
    """
    loop = asyncio.get_running_loop()
    ceiling = loop.time() + policy.budget
    gate = current_gate()
    count = throttled = 0
    while True:
        count += 1
        turn = await gate.enter(ceiling) if gate is not None else None  # ModelTimeout past the ceiling: not retried
        allowed = min(policy.attempt_timeout, ceiling - loop.time())
        error: ModelUnavailable
        try:
            async with asyncio.timeout(allowed):
                result = await attempt()
        except TimeoutError as exc:
            error = ModelTimeout(f"{provider} did not answer within {allowed:.3g}s ({policy.timeout_hint})", provider=provider)
            error.__cause__ = exc
        except ModelUnavailable as exc:
            error = exc
        else:
            if turn is not None:
                turn.succeeded()
            return result
        finally:
            if turn is not None:
                turn.leave()
        wait = getattr(error, "retry_after", None)
        limited = turn is not None and error.status == 429
        if limited:
            assert turn is not None
            await turn.throttled(wait)
            count, throttled = count - 1, throttled + 1  # rate limited: retried until the ceiling, not counted
        if count >= policy.max_attempts:
            kind = ModelTimeout if isinstance(error, ModelTimeout) else ModelUnavailable
            raise kind(f"{error} (gave up after {count} attempts)", provider=provider, status=error.status) from error
        wait = backoff(policy, count + throttled) if wait is None else wait
        if loop.time() + wait >= ceiling:
            raise ModelTimeout(
                f"{error} (retry budget of {policy.budget:g}s spent after {count + throttled} attempts; "
                "raise FRUGAL_LLM_MAX_RETRY_SECONDS to wait longer)",
                provider=provider,
                status=error.status,
            ) from error
        if limited:
            step_logger().warning("%s; retry in %.2fs (429s are retried until the budget is spent)", error, wait)
        else:
            step_logger().warning("%s; retry %d/%d in %.2fs", error, count, policy.max_attempts - 1, wait)
        await asyncio.sleep(wait)
