"""Overlapping batches of one process: the first in freezes the heap, the last out unfreezes it."""

from __future__ import annotations

import gc
import threading

from flows.engine.frozen_heap import batches_running, frozen_heap


def test_the_last_batch_out_gives_the_objects_back_to_the_collector() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
        kept = [[n] for n in range(1000)]  # made during the batch: collected as before, never frozen
        with frozen_heap():  # another batch of the process (a served deployment's second flow)
            # not frozen again (a frozen object that is freed leaves the count: other threads run)
            assert 0 < gc.get_freeze_count() <= frozen and batches_running() == 2
        assert gc.get_freeze_count() > 10_000 and batches_running() == 1  # the first batch still runs
        del kept
    assert gc.get_freeze_count() == 0 and batches_running() == 0


def test_batches_on_threads_of_one_worker() -> None:
    """A Dask worker runs a chunk per thread: they start and end in any order."""
    inside = threading.Barrier(4)
    frozen: list[int] = []

    def chunk() -> None:
        with frozen_heap():
            inside.wait(10)
            frozen.append(gc.get_freeze_count())
            inside.wait(10)

    threads = [threading.Thread(target=chunk) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(frozen) == 4 and min(frozen) > 0
    assert gc.get_freeze_count() == 0 and batches_running() == 0


def test_a_failing_batch_unfreezes_too() -> None:
    try:
        with frozen_heap():
            raise RuntimeError("a batch that failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0 and batches_running() == 0
