"""Counting tokens where a server reports none, and a prefix's length before it is sent.

Servers usually say how many tokens a call used, and those figures are what is
billed. When one does not (an OpenAI-compatible server that sends no ``usage``,
an Ollama answer without counts), the count is made here and the `Usage` is
marked ``estimated``: with the model's own tokenizer when one is installed
(`tiktoken` for OpenAI models), else with OpenAI's rule of thumb of about four
characters per token. The same count decides whether a prefix is long enough
for Anthropic's prompt cache.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable

log = logging.getLogger("frugal")

#: characters per token in English text (OpenAI's and Anthropic's documented rule of thumb)
CHARS_PER_TOKEN = 4


def heuristic_count(text: str) -> int:
    """About one token per four characters; at least one for any non-empty text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@functools.lru_cache(maxsize=32)
def _tokenizer(model: str) -> Callable[[str], int] | None:
    """The model's own tokenizer when one is installed, else None."""
    name = model.split("/", 1)[-1]
    try:
        import tiktoken  # optional: not a dependency
    except ImportError:
        return None
    try:
        encoding = tiktoken.encoding_for_model(name)
    except KeyError:  # tiktoken does not know this model
        return None
    except Exception as exc:  # its vocabulary could not be loaded (offline, no cache): count by heuristic
        log.info("no tokenizer for %s (%s); token counts are estimated from characters", model, exc)
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def count_tokens(texts: Iterable[str], model: str = "") -> int:
    """Tokens in `texts` for `model` (``provider/name``): its tokenizer if installed, else the heuristic."""
    count = _tokenizer(model) if model else None
    return sum((count or heuristic_count)(text) for text in texts if text)
