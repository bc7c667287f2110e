"""Truncation: the provider says the answer stopped at the token limit."""

from __future__ import annotations

from tasks.checks.rejection import Rejection

#: finish reasons that mean "cut at max_tokens", as the providers spell them before normalisation
LENGTH_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})


def truncated(finish_reason: str | None, output_tokens: int | None = None) -> Rejection | None:
    """A rejection when `finish_reason` says the token limit cut the answer; None otherwise
    (also when the provider gave no finish reason: nothing is known)."""
    if finish_reason is None or finish_reason.lower() not in LENGTH_REASONS:
        return None
    at = f" after {output_tokens} tokens" if output_tokens else ""
    return Rejection("truncated", f"the answer stopped at the token limit{at} (finish_reason={finish_reason!r})")
