"""What the semantic indexes return: neighbours of a prompt, and entries (for purges)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Neighbour:
    """A cached prompt near a new one: its request key, its text, and the cosine similarity."""

    key: str
    text: str
    similarity: float


@dataclass(frozen=True)
class Entry:
    """An indexed prompt, as `entries()` lists it (for purges)."""

    namespace: str
    group: str
    key: str
    text: str
    created_at: float
    expires_at: float
    #: the key of its normalised text (`same_text`); "" for entries indexed before there was one
    text_key: str = ""
