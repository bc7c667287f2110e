"""`classify`: decide which tier should answer, as a typed decision.

`router: embedding` (the `answer` pipeline's) embeds the prompt and asks the trained
router (`tasks.routing`) for P(needs the large model); the decision carries that
probability, the threshold it was compared with and the nearest labelled examples.
On the held-out prompts of evals/router it routes 95 % right against 48 % for the
rules (docs/routing.md). When no embedder can run it falls back to the rules, with
one warning. `router: rules` is the declared task type, keywords and a length threshold.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.routing import route_async

SIMPLE_TASKS = ["classification", "extraction", "rewrite", "summary", "sentiment", "translation"]
COMPLEX_KEYWORDS = [
    "step by step",
    "prove",
    "derive",
    "analyse",
    "analyze",
    "design",
    "architecture",
    "write code",
    "debug",
    "compare",
    "plan",
    "strategy",
    "legal",
    "diagnose",
]


class ClassifyRequest(BaseModel):
    """Arguments of `classify`."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the prompt to route")
    task: str = Field("general", description="declared task type, e.g. sentiment, summary, general")
    router: Literal["rules", "embedding"] = Field(
        "rules", description="rules: task type, keywords, length; embedding: the trained router (falls back to rules)"
    )
    router_file: str | None = Field(
        None, description="router file for `embedding`; default FRUGAL_ROUTER_FILE, DATA_DIR/router.json, the packaged one"
    )
    simple_tasks: list[str] = Field(default_factory=lambda: list(SIMPLE_TASKS))
    complex_keywords: list[str] = Field(default_factory=lambda: list(COMPLEX_KEYWORDS))
    simple_keywords: list[str] = Field(default_factory=list)
    max_simple_words: int = Field(80, ge=0, description="longer prompts go to the large model")


class Decision(BaseModel):
    """Where a prompt goes, why, and how sure the router is (0..1)."""

    model_config = ConfigDict(extra="forbid")

    label: Literal["simple", "complex"]
    reason: str
    score: float = Field(ge=0.0, le=1.0)
    router: Literal["rules", "embedding"] = "rules"
    probability: float | None = Field(None, description="embedding: P(the prompt needs the large model)")
    threshold: float | None = Field(None, description="embedding: probabilities at or above it go to the large model")


def _found(text: str, keywords: list[str]) -> str | None:
    lowered = text.lower()
    for keyword in keywords:
        if re.search(r"\b" + re.escape(keyword.lower()) + r"\b", lowered):
            return keyword
    return None


def route_by_rules(request: ClassifyRequest) -> Decision:
    words = len(request.text.split())
    limit = request.max_simple_words
    if keyword := _found(request.text, request.complex_keywords):
        return Decision(label="complex", reason=f"keyword '{keyword}'", score=0.8)
    if request.task in request.simple_tasks and words <= limit * 4:
        return Decision(label="simple", reason=f"task '{request.task}' is simple work", score=0.9)
    if keyword := _found(request.text, request.simple_keywords):
        if words <= limit:
            return Decision(label="simple", reason=f"keyword '{keyword}'", score=0.7)
    if words <= limit:
        margin = (limit - words) / max(limit, 1)
        return Decision(label="simple", reason=f"{words} words <= {limit}", score=round(0.5 + margin / 2, 3))
    margin = min((words - limit) / max(limit, 1), 1.0)
    return Decision(label="complex", reason=f"{words} words > {limit}", score=round(0.5 + margin / 2, 3))


async def classify(request: ClassifyRequest) -> Decision:
    """Route a prompt: `simple` work to the small model, `complex` to the large one."""
    if request.router == "embedding":
        routed = await route_async(request.text, request.router_file)  # the embedding on a worker thread, calls shared
        if routed is not None:
            p = routed.probability
            return Decision(
                label="complex" if routed.large else "simple",
                reason=routed.reason(),
                score=round(p if routed.large else 1.0 - p, 4),
                router="embedding",
                probability=round(p, 4),
                threshold=routed.threshold,
            )
        fallback = route_by_rules(request)
        return fallback.model_copy(update={"reason": "no embedder could run; rules: " + fallback.reason})
    return route_by_rules(request)
