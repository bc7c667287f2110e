"""A chunk's items spread over this process and its chunk workers (`FRUGAL_BATCH_WORKERS` > 1).

A batch leases its workers when it starts (`flows.chunk_workers.lease`); they
start up (~1.5 s of imports) while this process already runs items. Inside
every chunk, items are taken from one queue: this process takes them one at a
time, under its share of the concurrency; each ready worker takes parts of
`share` items, two parts in flight so that it never waits for the next one.
So no chunk waits for a worker that is still starting, and no process idles at
the end of the batch while another finishes a whole chunk: the last part is
the most any process runs after the others are done.

A part whose worker fails or dies runs here (the items it answered already are
cache hits); data that cannot travel to a worker (not picklable) keeps every
later item here. The chunk's records come back in input order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.chunk_workers import Worker
    from flows.compiler import Node

log = logging.getLogger("frugal")

Item = tuple[int, Any]
Record = dict[str, Any]

#: parts in flight per worker: one running, one waiting, so a worker never idles between parts
PARTS_IN_FLIGHT = 2


class Spread:
    def __init__(self, node: Node, context: dict[str, Any], workers: int, share: int) -> None:
        from flows.chunk_workers import lease

        self.node, self.context, self.share = node, context, share
        self.workers: list[Worker] = lease(workers - 1) if workers > 1 else []
        self._slots: dict[Worker, asyncio.Semaphore] = {w: asyncio.Semaphore(PARTS_IN_FLIGHT) for w in self.workers}
        self._stay_here = False
        if self.workers:  # what every job of this batch carries: the caller's variables, flow run and folder
            from flows.chunk_workers import caller_env
            from flows.ledger.record import enclosing_flow_run

            self._job_context = (caller_env(), enclosing_flow_run(), os.getcwd())

    def close(self) -> None:
        """The batch is over: its workers wait for the next batch of this process."""
        from flows.chunk_workers import give_back

        give_back(self.workers)
        self.workers = []

    async def run(
        self, chunk: list[Item], limit: asyncio.Semaphore, run_one: Callable[[Item], Awaitable[Record]]
    ) -> list[Record]:
        """The chunk's records: its items run here (`run_one`, at most `limit` at once) or in the workers."""

        async def run_here(item: Item) -> Record:
            async with limit:
                return await run_one(item)

        if not self.workers or self._stay_here:
            return list(await asyncio.gather(*(run_here(item) for item in chunk)))
        queue = deque(chunk)
        records: list[Record] = []
        parts: list[asyncio.Task[list[Record]]] = []

        async def here() -> None:
            while queue:
                async with limit:  # an item is taken only once it can run: the ones left may go to a worker
                    if not queue:
                        return
                    records.append(await run_one(queue.popleft()))

        async def feed(worker: Worker) -> None:
            if not await worker.ready():
                return
            slots = self._slots[worker]
            while queue and worker.alive() and not self._stay_here:
                await slots.acquire()
                if not queue:
                    slots.release()
                    return
                part = [queue.popleft() for _ in range(min(self.share, len(queue)))]
                parts.append(asyncio.create_task(self._part(worker, part, slots, run_here)))

        feeders = [asyncio.create_task(feed(worker)) for worker in self.workers if worker.alive()]
        try:
            await asyncio.gather(*(here() for _ in range(min(self.share, len(chunk)))))
        finally:
            for feeder in feeders:  # every item is taken: a feeder still waiting has nothing to send
                feeder.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)
        for done in await asyncio.gather(*parts):
            records.extend(done)
        records.sort(key=lambda record: record["index"])
        return records

    async def _part(
        self, worker: Worker, part: list[Item], slots: asyncio.Semaphore, run_here: Callable[[Item], Awaitable[Record]]
    ) -> list[Record]:
        from flows.chunk_workers import ChunkJob, WorkerFailed
        from flows.ledger.observer import LEDGER

        job = ChunkJob(self.node.file, self.node.id, self.context, part, self.share, *self._job_context)
        try:
            done = await worker.run(job)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # the run's data cannot travel: here, from now on
            log.warning("for_each %s: items run in this process only (%s: %s)", self.node.id, type(exc).__name__, exc)
            self._stay_here = True
        except (WorkerFailed, OSError) as exc:  # here; the items it answered already are cache hits
            log.warning("for_each %s: a worker process failed, its items run here: %s", self.node.id, exc)
        else:
            LEDGER.adopt_records(done.ledger)
            return done.records
        finally:
            slots.release()
        return list(await asyncio.gather(*(run_here(item) for item in part)))
