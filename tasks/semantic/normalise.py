"""The form of a prompt that meaning is compared by: Unicode-normalised (NFKC), case-folded,
runs of spaces collapsed, leading and trailing punctuation and spaces dropped.

"How do I reset my password?" and "how do i  reset my password" are the same text here: such
variants need no embedding at all (their similarity is 1): the semantic index keeps each
prompt's `text_key`, and a look-up asks for an entry of the same key before it embeds anything."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"\s+")
_EDGES = re.compile(r"^[\s¿¡\"'«»“”„]+|[\s?!.。,;:…\"'«»“”]+$")


def normalise(text: str) -> str:
    folded = _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return _EDGES.sub("", folded)


def text_key(text: str) -> str:
    """The key of a prompt's normalised form: equal for "How do I reset my password?" and
    "how do i  reset my password" (sha256, 32 hex characters)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:32]
