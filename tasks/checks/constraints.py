"""The node's declared constraints: labels / JSON schema (validated when the answer was made), and length limits."""

from __future__ import annotations

import re

from tasks.checks.rejection import Rejection

_WORD = re.compile(r"\S+")


def word_count(text: str) -> int:
    """Words as a reader counts them: runs of non-space characters."""
    return len(_WORD.findall(text))


def well_formed(valid: bool, reason: str | None) -> Rejection | None:
    """The labels/schema verdict `to_answer` already reached, as a rejection."""
    if valid:
        return None
    return Rejection("invalid", reason or "the answer does not fit the node's labels or schema")


def within_limits(text: str, max_words: int | None, max_chars: int | None) -> Rejection | None:
    """A rejection when the answer is longer than the node allows."""
    if max_words is not None and (n := word_count(text)) > max_words:
        return Rejection("too_long", f"{n} words, more than max_words={max_words}")
    if max_chars is not None and (n := len(text.strip())) > max_chars:
        return Rejection("too_long", f"{n} characters, more than max_chars={max_chars}")
    return None
