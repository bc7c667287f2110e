"""The embedder seam: text in, one L2-normalised row per text out.

    class Embedder(Protocol):
        id: str                                   # e.g. "bundled/use-multilingual-v3"
        def embed(self, texts: Sequence[str]) -> np.ndarray: ...   # (n, dim) float32

`embed` is synchronous (the bundled model is CPU work; the HTTP ones use a blocking
client) so the CLI and a trainer call it directly; a step runs it in a worker thread
so the event loop is never held. Every failure is an `EmbedderUnavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from tasks.core.errors import FrugalError


class EmbedderUnavailable(FrugalError):
    """An embedder could not embed: not installed, not reachable, or it answered something unusable."""


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into unit vectors; `id` names the model so vectors are never mixed."""

    id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalised(rows: object, expected: int, source: str) -> np.ndarray:
    """Rows as a float32 (n, dim) array with unit length, or `EmbedderUnavailable` saying what was wrong."""
    try:
        array = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbedderUnavailable(f"{source} returned embeddings that are not numbers: {exc}") from exc
    if array.ndim != 2 or array.shape[0] != expected or array.shape[1] == 0:
        raise EmbedderUnavailable(f"{source} returned {array.shape} embeddings for {expected} texts")
    if not np.isfinite(array).all():
        raise EmbedderUnavailable(f"{source} returned non-finite embeddings")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)
