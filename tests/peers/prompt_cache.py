"""The providers' own prompt caches, as the peer simulates them (one token per word).

Off unless ``peer.prompt_cache`` is True. Then:

- **Anthropic** caches the prefix up to the last content block that carries
  ``cache_control`` (system blocks first, then messages), if that prefix has at
  least ``peer.cache_min_tokens`` tokens. The first request writes it
  (``cache_creation_input_tokens``), later ones read it
  (``cache_read_input_tokens``); ``input_tokens`` counts only the rest of the
  prompt, as the real API does. Writes are reported as 5-minute writes
  (``cache_creation.ephemeral_5m_input_tokens``), the default ``ttl``.
- **OpenAI** caches every prompt of 1,024 tokens or more by itself; a later
  prompt sharing a prefix of 1,024 tokens or more with an earlier one reports
  the shared part, rounded down to a multiple of 128, as
  ``prompt_tokens_details.cached_tokens`` (included in ``prompt_tokens``).
"""

from __future__ import annotations

import threading
from typing import Any

OPENAI_MIN_TOKENS = 1024
OPENAI_INCREMENT = 128


def _blocks(content: Any) -> list[tuple[str, bool]]:
    """(text, marked with cache_control) for each text block of a system or message content."""
    if isinstance(content, str):
        return [(content, False)]
    if isinstance(content, list):
        return [
            (b["text"], bool(b.get("cache_control"))) for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        ]
    return []


def _words(body: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for text, _ in _blocks(body.get("system")):
        words += text.split()
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            for text, _ in _blocks(message.get("content")):
                words += text.split()
    return words


class PromptCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._anthropic: set[tuple[str, ...]] = set()
        self._openai: list[tuple[str, ...]] = []

    def clear(self) -> None:
        with self._lock:
            self._anthropic.clear()
            self._openai.clear()

    def anthropic(self, body: dict[str, Any], min_tokens: int) -> tuple[int, int]:
        """(cache read tokens, cache write tokens) of one messages request."""
        words: list[str] = []
        end = 0
        contents = [body.get("system")] + [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
        for content in contents:
            for text, marked in _blocks(content):
                words += text.split()
                if marked:
                    end = len(words)
        if end == 0 or end < min_tokens:
            return 0, 0
        prefix = tuple(words[:end])
        with self._lock:
            if prefix in self._anthropic:
                return end, 0
            self._anthropic.add(prefix)
        return 0, end

    def openai(self, body: dict[str, Any]) -> int:
        """Cached tokens of one chat completion request."""
        words = tuple(_words(body))
        with self._lock:
            shared = max((_common(words, seen) for seen in self._openai), default=0)
            if len(words) >= OPENAI_MIN_TOKENS:
                self._openai.append(words)
        if shared < OPENAI_MIN_TOKENS:
            return 0
        return shared // OPENAI_INCREMENT * OPENAI_INCREMENT


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
