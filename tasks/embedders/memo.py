"""The vectors of recently embedded texts, per embedder, so a text is embedded once per process
while it is recent.

    vectors = remembered(embedder, ["a prompt"])   # (1, dim): embedded now, or found

A request that misses the cache needs the vector of its prompt up to three times: the
semantic cache's look-up and store (the normalised prompt) and the router (the prompt as
written). Each embedding costs ~3.5 ms of CPU with the bundled embedder; the memo makes the
store's a dictionary look-up, and a prompt that normalises to itself is embedded once for
all three. (The router cannot simply take the normalised prompt's vector: USE is
case-sensitive, and routing normalised prompts fell from 95.3 % to 91.1 % right on the
held-out prompts of evals/router.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .base import Embedder

#: vectors kept per process (512 float32 each: 2 KB; 8 MB in all)
REMEMBERED = 4096

_lock = threading.Lock()
_vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def remembered(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """The vectors of `texts`, embedding only those not seen recently (in one call to `embedder.embed`)."""
    keys = [(embedder.id, text) for text in texts]
    with _lock:
        found = [_vectors.get(key) for key in keys]
        for key, vector in zip(keys, found, strict=True):
            if vector is not None:
                _vectors.move_to_end(key)
    missing = list(dict.fromkeys(text for text, vector in zip(texts, found, strict=True) if vector is None))
    if missing:
        fresh = dict(zip(missing, embedder.embed(missing), strict=True))
        with _lock:
            for text, vector in fresh.items():
                _vectors[(embedder.id, text)] = vector
            while len(_vectors) > REMEMBERED:
                _vectors.popitem(last=False)
        found = [vector if vector is not None else fresh[text] for text, vector in zip(texts, found, strict=True)]
    if not found:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(found)  # type: ignore[arg-type]


def forget_remembered() -> None:
    """Drop every remembered vector (a benchmark that must embed each prompt anew)."""
    with _lock:
        _vectors.clear()
