"""While a batch runs, Python's cyclic garbage collector leaves alone what was alive when it began.

A process that runs a batch holds ~170,000 objects that live as long as it does: the modules of
Prefect, pydantic, redis-py and ours, the compiled pipelines, the settings. Each full collection
walks all of them, and a batch's items make enough short-lived objects to start one every ~2,000
documents: 150-250 ms each on this 2-core host, ~10 % of an all-cached rerun's CPU.
`gc.freeze()` when the first batch of the process begins moves them to the permanent generation,
which no collection looks at; `gc.unfreeze()` when the last one ends gives them back to the
collector (a cycle among them that became garbage meanwhile is collected then, so nothing stays
frozen after the batch). What a batch makes is collected as before: a cycle of its own objects is
freed as soon as a young-generation collection finds it.

Measured on the inline all-cached rerun of 2,000 documents (`tests/benchmarks/bench_dask_batch.py`
runs it on 10,000; this host, load ~1.5, runs of each interleaved in one process): the collector's
own time per run 250 ms -> 75 ms; CPU per document 1.46-1.56 ms -> 1.20-1.27 ms (docs/performance.md).
`gc.disable()` gained as much but leaves a cycle-heavy batch to grow without bound, and a higher
`gc.set_threshold` gained half as much, unevenly (a full collection still walks everything).

Batches of one process may overlap (a served deployment runs several flows; a Dask worker runs
a chunk per thread): the first in freezes, the last out unfreezes. Code that calls `gc.freeze`
itself (before a `fork`, say) should not run alongside a batch: the batch's end would unfreeze
its objects too.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_running = 0


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive now are left out of garbage collections until the last batch in it ends."""
    global _running
    with _lock:
        _running += 1
        if _running == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                gc.unfreeze()


def batches_running() -> int:
    """Batches of this process inside `frozen_heap` now (what a test observes)."""
    return _running
