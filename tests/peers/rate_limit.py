"""A provider's rate limit, as the stand-in enforces it: requests and tokens per minute.

Like OpenAI's, a minute's limit is enforced over shorter spans: each limit is a token bucket that
refills continuously at rpm/60 (tpm/60) per second and holds one second's worth (at least one
request, at least one request's tokens). A request over the limit is refused at once, before any
latency, with 429, OpenAI's (or Anthropic's) error JSON, ``retry-after`` (whole seconds, as OpenAI
sends it) and the ``x-ratelimit-*`` headers. Tokens counted: the prompt's words + max_tokens.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from starlette.responses import JSONResponse

from .wire import error_response, prompt_tokens


class RateLimit:
    """Buckets of `rpm` requests and `tpm` tokens per minute (None: no limit); counts what it let through and refused."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.admitted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._requests = self._capacity(rpm, 1)
        self._tokens = self._capacity(tpm, 1)
        self._at = time.monotonic()

    @staticmethod
    def _capacity(per_minute: float | None, least: float) -> float:
        return max(per_minute / 60, least) if per_minute else 0.0

    def check(self, protocol: str, body: Any) -> JSONResponse | None:
        """None: admitted (and counted against the buckets); else the provider's 429."""
        tokens = 0
        if isinstance(body, dict):
            limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
            tokens = prompt_tokens(body) + (limit if isinstance(limit, int) else 0)
        with self._lock:
            now = time.monotonic()
            elapsed, self._at = now - self._at, now
            if self.rpm:
                self._requests = min(self._requests + elapsed * self.rpm / 60, self._capacity(self.rpm, 1))
            if self.tpm:
                self._tokens = min(self._tokens + elapsed * self.tpm / 60, self._capacity(self.tpm, tokens))
            short = None
            if self.rpm and self._requests < 1:
                short = ("requests", "RPM", self.rpm, (1 - self._requests) * 60 / self.rpm, 1)
            elif self.tpm and self._tokens < tokens:
                short = ("tokens", "TPM", self.tpm, (tokens - self._tokens) * 60 / self.tpm, tokens)
            if short is None:
                self._requests -= 1 if self.rpm else 0
                self._tokens -= tokens if self.tpm else 0
                self.admitted += 1
                return None
            self.refused += 1
        kind, unit, limit_value, wait, requested = short
        model = body.get("model", "") if isinstance(body, dict) else ""
        message = (
            f"Rate limit reached for {model} in organization org-standin on {kind} per min ({unit}): "
            f"Limit {limit_value:g}, Used {limit_value:g}, Requested {requested}. Please try again in "
            f"{wait * 1000:.0f}ms. Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        headers = {
            "retry-after": str(max(1, math.ceil(wait))),
            "x-ratelimit-limit-requests": f"{self.rpm or 0:g}",
            "x-ratelimit-remaining-requests": str(max(int(self._requests), 0)),
            "x-ratelimit-reset-requests": f"{wait * 1000:.0f}ms",
        }
        fields = {"type": kind, "code": "rate_limit_exceeded"} if protocol == "openai" else {}
        return error_response(protocol, 429, message, headers=headers, **fields)

    def reset(self) -> None:
        with self._lock:
            self.admitted = self.refused = 0
            self._requests = self._capacity(self.rpm, 1)
            self._tokens = self._capacity(self.tpm, 1)
            self._at = time.monotonic()
