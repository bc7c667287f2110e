"""Routing one prompt with a trained router, falling back instead of failing.

The configured embedder (`FRUGAL_EMBEDDER`) is used when the router has a head for it;
when it is down, or the router was not trained on it, the bundled embedder's head is
used; when that cannot run either, `route` returns None and the caller routes by rules.
Each distinct fallback is logged once per process, as a warning, not per request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.settings import get_settings
from tasks.embedders import (
    BUNDLED_ID,
    DEFAULT_MODELS,
    Embedder,
    EmbedderUnavailable,
    bundled_embedder,
    bundled_embedder_async,
    configured_embedder,
    remembered,
    remembered_async,
)

from .router_file import RECHECK_SECONDS, Head, LoadedRouter, load_router

log = logging.getLogger("frugal.router")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message)


@dataclass(frozen=True)
class Routed:
    large: bool
    probability: float
    threshold: float
    embedder: str
    version: str
    nearest: list[tuple[str, str, float]]  # (prompt, label, cosine similarity)

    def reason(self) -> str:
        sign = ">=" if self.large else "<"
        near = "; ".join(f"{label} {similarity:.2f} '{_short(text)}'" for text, label, similarity in self.nearest)
        return f"P(large)={self.probability:.2f} {sign} {self.threshold:.2f} (router {self.version}); nearest: {near}"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def configured_id() -> str:
    config = get_settings().embedder
    return BUNDLED_ID if config.kind == "bundled" else f"{config.kind}/{config.model or DEFAULT_MODELS[config.kind]}"


def decide(head: Head, vector: np.ndarray, text: str, version: str, neighbours: int = 3) -> Routed:
    probability = float(head.probability(vector.reshape(1, -1), [text])[0])
    similarities = head.example_vectors @ vector.astype(np.float32)
    order = np.argsort(-similarities, kind="stable")[:neighbours]
    nearest = [(head.examples.text[i], head.examples.label[i], float(similarities[i])) for i in order]
    return Routed(probability >= head.threshold, probability, head.threshold, head.embedder, version, nearest)


@dataclass(frozen=True)
class _Try:
    """One head to route with, the embedder it needs, and what to log when that embedder fails."""

    head: Head
    embedder: Callable[[], Embedder]
    down_key: str
    down: Callable[[EmbedderUnavailable], str]  # the warning when the embedder fails


def _tries(router_file: Path | str | None) -> tuple[str, list[_Try]]:
    """The router's version and the heads to try in order: the configured embedder's, then the bundled one's."""
    router: LoadedRouter = load_router(router_file, within=RECHECK_SECONDS)
    doc = router.doc
    wanted = configured_id()
    tries = []
    if wanted != BUNDLED_ID:
        head = doc.head(wanted)
        if head is None:
            warn_once(
                f"nohead:{router.path}:{wanted}", f"router {router.path} has no head for embedder {wanted}; using {BUNDLED_ID}"
            )
        else:
            tries.append(
                _Try(
                    head,
                    configured_embedder,
                    f"down:{wanted}",
                    lambda exc: f"embedder {wanted} failed ({exc}); routing with {BUNDLED_ID}",
                )
            )
    head = doc.head(BUNDLED_ID)
    if head is None:
        warn_once(f"nobundled:{router.path}", f"router {router.path} has no head for {BUNDLED_ID}; routing by rules")
    else:
        tries.append(
            _Try(
                head, bundled_embedder, f"down:{BUNDLED_ID}", lambda exc: f"the bundled embedder failed ({exc}); routing by rules"
            )
        )
    return doc.version, tries


def route(text: str, router_file: Path | str | None = None) -> Routed | None:
    """The learned decision for `text`, or None when no embedder the router knows can run (route by rules).

    A missing or malformed router file raises `RouterFileError` (a configuration to fix, not an outage)."""
    version, tries = _tries(router_file)
    for attempt in tries:
        try:
            # the semantic cache may have embedded this very text for this request: the memo has it
            return decide(attempt.head, remembered(attempt.embedder(), [text])[0], text, version)
        except EmbedderUnavailable as exc:
            warn_once(attempt.down_key, attempt.down(exc))
    return None


async def route_async(text: str, router_file: Path | str | None = None) -> Routed | None:
    """`route` from the event loop: the prompt's vector from the memo, else embedded on a worker
    thread in an encoder call shared with other requests (`tasks.embedders.batching`)."""
    version, tries = _tries(router_file)
    for attempt in tries:
        try:
            embedder = await bundled_embedder_async() if attempt.embedder is bundled_embedder else attempt.embedder()
            vector = (await remembered_async(embedder, [text]))[0]
            return decide(attempt.head, vector, text, version)
        except EmbedderUnavailable as exc:
            warn_once(attempt.down_key, attempt.down(exc))
    return None
