"""The form of a prompt that meaning is compared by: Unicode-normalised (NFKC), case-folded,
runs of spaces collapsed, leading and trailing punctuation and spaces dropped.

"How do I reset my password?" and "how do i  reset my password" are the same text here: such
variants need no embedding at all (their similarity is 1)."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")
_EDGES = re.compile(r"^[\s¿¡\"'«»“”„]+|[\s?!.。,;:…\"'«»“”]+$")


def normalise(text: str) -> str:
    folded = _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return _EDGES.sub("", folded)
