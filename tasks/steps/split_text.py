"""`split_text`: cut a long text into parts of at most `max_words` words (map-reduce)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SplitRequest(BaseModel):
    """Arguments of `split_text`."""

    model_config = ConfigDict(extra="forbid")

    text: str
    max_words: int = Field(1500, ge=10, description="words per part")


def split_words(text: str, max_words: int) -> list[str]:
    """Parts of at most `max_words` words, cut at paragraph ends where possible."""
    parts: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        while words:
            room = max_words - count
            if len(words) <= room:
                current.append(" ".join(words))
                count += len(words)
                words = []
            elif count:
                parts.append("\n\n".join(current))
                current, count = [], 0
            else:
                parts.append(" ".join(words[:max_words]))
                words = words[max_words:]
    if current:
        parts.append("\n\n".join(current))
    return parts


async def split_text(request: SplitRequest) -> dict[str, object]:
    """Split a text for map-reduce summarisation."""
    parts = split_words(request.text, request.max_words)
    return {"parts": parts, "count": len(parts)}
