"""The sentence embedder the semantic cache compares prompts with.

`embedder()` returns one function `texts -> (n, 512) float32 array` of L2-normalised rows:
the process's bundled multilingual Universal Sentence Encoder (`tasks.embedders`, the one the
router uses: one copy of its weights per process; no network; a short prompt takes 1-2.5 ms on
onnxruntime, 2-4 ms on numpy, on an idle core). `embed(texts)` runs it off the event loop
through the process's memo of recent vectors (`tasks.embedders.remembered_async`), so
`cache_store` and the router reuse the vector `cache_lookup` computed for the same prompt (all
three embed the prompt as written), and concurrent requests' prompts are embedded in shared
encoder calls (`tasks.embedders.batching`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tasks.core.errors import CacheError
from tasks.embedders import Embedder, EmbedderUnavailable, bundled_embedder, bundled_embedder_async, remembered, remembered_async

Embed = Callable[[list[str]], np.ndarray]


def _bundled() -> Embedder:
    try:
        return bundled_embedder()
    except EmbedderUnavailable as exc:
        raise CacheError(f"the semantic cache cannot embed: {exc}") from exc


def embedder() -> Embed:
    """The process's embedder, loaded on first use (~0.3 s)."""
    return _bundled().embed


def embed_now(texts: list[str]) -> np.ndarray:
    """Vectors of `texts`, on the caller's thread."""
    model = _bundled()
    try:
        return remembered(model, texts)
    except EmbedderUnavailable as exc:
        raise CacheError(f"the semantic cache cannot embed: {exc}") from exc


async def embed(texts: list[str]) -> np.ndarray:
    """Vectors of `texts`, computed on a worker thread (the encoder holds a core for 1-4 ms a prompt),
    in one encoder call with the texts of other requests waiting meanwhile."""
    try:
        return await remembered_async(await bundled_embedder_async(), texts)
    except EmbedderUnavailable as exc:
        raise CacheError(f"the semantic cache cannot embed: {exc}") from exc
