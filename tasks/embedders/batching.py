"""Concurrent requests share encoder calls: texts that arrive while an embedder is busy are
embedded together in its next call.

    rows = await batcher_for(embedder).embed(["a prompt"])   # (1, dim), like embedder.embed

No added wait when idle: the first text goes straight to the embedder (on a worker thread);
texts that arrive while that call runs are queued, and when it returns they all go in one
call, then the next queue, until none is waiting. One call at a time per embedder, so the
bundled encoder (which runs one call at a time anyway) never has a queue of single calls.

Why: much of the bundled encoder's cost is per call, not per text (it streams its weight
matrices once per call, whatever the number of texts in it). Measured with
`tests/benchmarks/bench_embed_batch.py` (short prompts, one BLAS thread, CPU time, 2-core host
at load 2.3): 1 prompt per call 3.70 ms; 2 prompts 6.49 ms (3.24 per prompt); 4 prompts 9.18 ms
(2.30); 8 prompts 16.15 ms (2.02): 1.8x less CPU per prompt at 8. 32 requests at once, each
embedding one new prompt: 4.60 ms of CPU per prompt with a worker-thread call each (448 encoder
calls), 2.04 ms through the batcher (15 calls): 2.3x less. An HTTP embedder saves a round trip
per text the same way.

The calls run on one thread of the batcher's own, not on the event loop's pool of worker threads:
the encoder's temporaries are then allocated in one malloc arena. Drawn from the pool, each of up
to six threads grew an arena of its own under load: the gateway's resident memory after a run at
concurrency 32 was 43 MB (15 %) above its size after its first thousand requests (and stayed
there), 17 MB (6 %) with glibc held to two arenas, and 13 MB (4 %) on this thread
(`bench_gateway.py --rss-requests 12000`, quiet machine).

`calls`, `texts` and `largest` count what went to the embedder, `waiting` what is queued (what a test
observes).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .base import Embedder, EmbedderUnavailable


@dataclass
class _Waiting:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


class Batcher:
    """The queue in front of one embedder (held weakly: the batcher does not keep it loaded)."""

    def __init__(self, embedder: Embedder) -> None:
        self.id = embedder.id
        self._embedder = _reference(embedder)
        self.calls = 0  # calls made to the embedder through this batcher
        self.texts = 0  # texts sent in them (duplicates within a call sent once)
        self.largest = 0  # most texts in one call
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._busy = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frugal-embedder")  # see the docstring

    @property
    def waiting(self) -> int:
        """Requests queued for the next call."""
        with self._lock:
            return len(self._waiting)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The rows of `texts`, embedded in a call shared with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(list(texts), loop.create_future(), loop)
        with self._lock:
            self._waiting.append(waiting)
            start = not self._busy
            self._busy = True
        if start:
            try:
                loop.run_in_executor(self._thread, self._drain)
            except RuntimeError:  # the loop's executor is shut down: embed here rather than never
                self._drain()
        return await waiting.future

    def _drain(self) -> None:
        """On a worker thread: embed everything waiting, in one call, until nothing is."""
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._busy = False
                    return
            unique = list(dict.fromkeys(text for waiting in batch for text in waiting.texts))
            embedder = self._embedder()
            try:
                if embedder is None:
                    raise EmbedderUnavailable(f"embedder {self.id} was unloaded while texts waited for it")
                rows = embedder.embed(unique) if unique else np.zeros((0, 0), dtype=np.float32)
            except Exception as exc:  # every waiter hears of the failure; the next batch still runs
                for waiting in batch:
                    _settle(waiting, None, exc)
                continue
            finally:
                self.calls += 1 if unique else 0
                self.texts += len(unique)
                self.largest = max(self.largest, len(unique))
            index = {text: i for i, text in enumerate(unique)}
            for waiting in batch:
                _settle(waiting, rows[[index[text] for text in waiting.texts]] if waiting.texts else rows[:0], None)


def _reference(embedder: Embedder) -> Callable[[], Embedder | None]:
    try:
        return weakref.ref(embedder)
    except TypeError:  # an object without weak references is held for good
        return lambda: embedder


def _settle(waiting: _Waiting, rows: np.ndarray | None, error: BaseException | None) -> None:
    def settle() -> None:
        if waiting.future.done():  # the caller was cancelled meanwhile
            return
        if error is not None:
            waiting.future.set_exception(error)
        else:
            waiting.future.set_result(rows)  # type: ignore[arg-type]

    try:
        waiting.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # that event loop is closed: nobody is waiting any more
        pass


_lock = threading.Lock()
_batchers: weakref.WeakKeyDictionary[Embedder, Batcher] = weakref.WeakKeyDictionary()


def batcher_for(embedder: Embedder) -> Batcher:
    """The process's batcher of `embedder` (one per embedder object, made on first use)."""
    with _lock:
        try:
            batcher = _batchers.get(embedder)
        except TypeError:  # an embedder that cannot be weakly referenced gets a batcher of its own each time
            return Batcher(embedder)
        if batcher is None:
            batcher = _batchers[embedder] = Batcher(embedder)
        return batcher
