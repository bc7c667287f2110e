"""The vectors of recently embedded texts, per embedder, so a text is embedded once per process
while it is recent.

    vectors = remembered(embedder, ["a prompt"])   # (1, dim): embedded now, or found
    vectors = await remembered_async(embedder, ["a prompt"])   # the same, encoder calls shared (batching)

A request that misses the cache needs the vector of its prompt up to three times: the
semantic cache's look-up and store and the router, all of the prompt as written. Each
embedding costs ~3.5 ms of CPU with the bundled embedder; the memo makes the store's and the
router's a dictionary look-up, so a miss embeds its prompt once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .base import Embedder
from .batching import batcher_for

#: vectors kept per process (512 float32 each: 2 KB; 8 MB in all)
REMEMBERED = 4096

_lock = threading.Lock()
_vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def _recall(embedder: Embedder, texts: Sequence[str]) -> tuple[list[np.ndarray | None], list[str]]:
    """The remembered vector of each text (None: not remembered) and the distinct texts to embed."""
    keys = [(embedder.id, text) for text in texts]
    with _lock:
        found = [_vectors.get(key) for key in keys]
        for key, vector in zip(keys, found, strict=True):
            if vector is not None:
                _vectors.move_to_end(key)
    missing = list(dict.fromkeys(text for text, vector in zip(texts, found, strict=True) if vector is None))
    return found, missing


def _keep(
    embedder: Embedder, texts: Sequence[str], found: list[np.ndarray | None], missing: list[str], rows: np.ndarray
) -> np.ndarray:
    fresh = dict(zip(missing, rows, strict=True))
    if fresh:
        with _lock:
            for text, vector in fresh.items():
                _vectors[(embedder.id, text)] = vector
            while len(_vectors) > REMEMBERED:
                _vectors.popitem(last=False)
    vectors = [vector if vector is not None else fresh[text] for text, vector in zip(texts, found, strict=True)]
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(vectors)


def remembered(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """The vectors of `texts`, embedding only those not seen recently (in one call to `embedder.embed`)."""
    found, missing = _recall(embedder, texts)
    rows = embedder.embed(missing) if missing else np.zeros((0, 0), dtype=np.float32)
    return _keep(embedder, texts, found, missing, rows)


async def remembered_async(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """`remembered` for the event loop: the texts not remembered are embedded on a worker thread,
    in one call shared with the other requests' texts waiting for the same embedder
    (`tasks.embedders.batching`)."""
    found, missing = _recall(embedder, texts)
    rows = await batcher_for(embedder).embed(missing) if missing else np.zeros((0, 0), dtype=np.float32)
    return _keep(embedder, texts, found, missing, rows)


def forget_remembered() -> None:
    """Drop every remembered vector (a benchmark that must embed each prompt anew)."""
    with _lock:
        _vectors.clear()
