"""Chunks of a `for_each:` node as Prefect task runs on Dask (`FRUGAL_BATCH_RUNNER=dask`).

Each chunk is submitted through `prefect-dask`'s `DaskTaskRunner` as the task `chunk`, whose
arguments are plain data (`flows.engine.chunk_job.ChunkJob` as JSON, the item count, the
result-cache key), so any Dask worker on any machine with the project installed can run it:
it loads the pipeline, runs the items with the node's concurrency, and returns the item
records. The flow writes them to its spool (the spool stays on the flow's machine), counts
them, and reports progress per document from the counts the workers write to the shared Redis
(`flows.engine.remote_progress`).

The task runner is opened once per batch node, when the flow starts (the orchestrated runner's
`connect_early`, for a node without an `if:`) or else when its first chunks ask for it, and closed
with the node: `FRUGAL_BATCH_DASK_ADDRESS` names a running scheduler (workers on other machines),
else a local cluster of `FRUGAL_BATCH_DASK_WORKERS` worker processes is started for the batch and
stopped after it. Once connected, the scheduler and the workers are warmed up in the background
(`flows.orchestration.dask_warmup`) while the nodes before the batch run.

A worker that dies takes its running chunks with it; Dask's scheduler gives them to another
worker, which runs them again: items answered before the death are prompt-cache hits (the
shared Redis), items that were in flight wait on their lease and are asked again once it
expires. The same happens if Dask gives up on a chunk (`KilledWorker`, after its
`allowed-failures`): the flow submits it once more (`RESUBMITS`).

What each worker needs: the project installed (the scheduler too: it unpickles the chunks), the
same pipeline files and the same FRUGAL_* settings and provider keys as the flow (a chunk fails,
saying what differs, otherwise), the shared Redis as FRUGAL_CACHE_URL, the batch's source at the
same path, its destination at the same path or a URL every worker reaches (`s3://...`, with the
store's credentials in its environment), and PREFECT_API_URL (its chunk task runs report to the
flow's Prefect server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE, CachePolicy

from flows import ledger
from flows.engine.chunk_job import ChunkJob, file_reference
from flows.engine.job_runner import run_job
from flows.engine.remote_progress import ChunkCounter, ProgressPoll, progress_key, redis_url
from flows.engine.runners import Chunk, Records
from flows.orchestration.observers import install
from tasks.core.errors import ConfigError
from tasks.core.settings import BatchSettings, get_settings

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner
    from prefect_dask.task_runners import PrefectDaskFuture

    from flows.language.compiler import Node

log = logging.getLogger("frugal")

#: times the flow submits a chunk again after Dask gave up on it (its workers kept dying)
RESUBMITS = 2
#: seconds a batch's end waits for the cluster's warm-up calls still under way before closing its client
WARM_UP_WAIT = 30.0


#: a chunk's result is cached under the key the batch computed (None: not cached)
CHUNK_KEY = CachePolicy.from_cache_key_fn(lambda ctx, parameters: parameters.get("key"))


@task(name="chunk", cache_policy=NO_CACHE, persist_result=False)
async def chunk_task(job: dict[str, Any], items: int, key: str | None = None) -> Records:
    """A chunk of a `for_each:` node, run wherever the task runner put it: `items` items, from plain data."""
    install()  # this process's model calls go to the run's cost ledger (the shared Redis)
    parsed = ChunkJob.model_validate(job)
    url = redis_url()
    counter = ChunkCounter(url, progress_key(parsed.run_id, parsed.node), parsed.chunk) if url else None
    try:
        records = await run_job(parsed, counter.item_done if counter is not None else None)
    finally:
        if counter is not None:
            await counter.close()
    if not await asyncio.to_thread(ledger.flush):  # stored before the flow reads its cost table back
        log.warning("cost ledger: some entries of chunk %d were not stored in time", parsed.chunk)
    ledger.LEDGER.forget(parsed.run_id)  # stored: the flow reads its cost table back from the store
    return records


def task_runner(settings: BatchSettings) -> DaskTaskRunner:
    """The Dask task runner the settings ask for (not started)."""
    try:  # imported here: `distributed` takes a second to import, and only batches on Dask need it
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError(
            "FRUGAL_BATCH_RUNNER=dask needs prefect-dask: pip install 'frugal-flows[dask]' (or set FRUGAL_BATCH_RUNNER=inprocess)"
        ) from exc
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # no dashboard (it needs bokeh), and the scheduler's HTTP server on a free port: a second batch,
    # or anything else on 8787, must not get in this one's way
    cluster: dict[str, Any] = {
        "n_workers": settings.dask_workers,
        "threads_per_worker": 2,  # a worker starts its next chunk while a chunk's last items finish (docs/batches.md)
        "processes": True,
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": ":0"},
    }
    return DaskTaskRunner(cluster_kwargs=cluster)


def _warm_up_reference(node: Node) -> str | None:
    """How a worker finds the node's pipeline to compile it ahead of the first chunk: None for a
    pipeline compiled from memory."""
    path = Path(node.file)
    return file_reference(node.file, path.stem) if path.is_file() else None


class DaskChunks:
    """The chunks of one batch node on Dask: submits them, waits for them, polls their progress."""

    def __init__(self, node: Node, run_id: str | None, settings: BatchSettings) -> None:
        self.node = node
        self.runner = task_runner(settings)
        self._started = False
        self._warming: list[asyncio.Task[None]] = []
        url = redis_url()
        self.poll = ProgressPoll(url, progress_key(run_id, node.id)) if url and run_id else None

    async def start(self) -> None:
        # the runner's client is a synchronous dask Client (and may start a local cluster): off the loop
        def enter() -> None:
            self.runner.__enter__()
            _ = self.runner.client

        await asyncio.to_thread(enter)
        self._started = True
        self._warm_up()

    def _warm_up(self) -> None:
        """The scheduler and the workers get ready for the chunks while the first ones are on their
        way (`flows.orchestration.dask_warmup`): two calls in the background, each on a thread."""
        from flows.orchestration.dask_warmup import PLUGIN_NAME, WarmUp, warm_scheduler

        client = self.runner.client
        reference = _warm_up_reference(self.node)
        calls: list[tuple[str, Callable[[], object]]] = [("scheduler", lambda: client.run_on_scheduler(warm_scheduler))]
        if reference is not None:
            calls.append(("workers", lambda: client.register_plugin(WarmUp(reference), name=PLUGIN_NAME)))
        for what, call in calls:
            self._warming.append(asyncio.create_task(self._warm(what, call)))

    async def _warm(self, what: str, call: Callable[[], object]) -> None:
        try:
            await asyncio.to_thread(call)
        except Exception as exc:  # only time is lost: the chunks meet the problem and say what it is
            log.warning("%s: warming the Dask %s up failed: %s: %s", self.node.id, what, type(exc).__name__, exc)

    async def slots(self) -> int:
        """The threads of the cluster's workers now (at least 1: workers may join later)."""
        threads = await asyncio.to_thread(lambda: sum(self.runner.client.nthreads().values()))
        return max(1, int(threads))

    def _submit(self, chunk: Chunk) -> PrefectDaskFuture[Records]:
        options: dict[str, Any] = {"name": self.node.id, "task_run_name": f"{self.node.id}[{chunk.index}]"}
        if chunk.key is not None:
            options |= {
                "cache_policy": CHUNK_KEY,
                "persist_result": True,
                "cache_expiration": timedelta(seconds=get_settings().cache.ttl),
            }
        job = chunk.job().model_dump(mode="json")
        return self.runner.submit(
            chunk_task.with_options(**options), parameters={"job": job, "items": chunk.size, "key": chunk.key}
        )

    async def run(self, chunk: Chunk) -> Records:
        from distributed import KilledWorker  # imported with prefect-dask, only by batches that use Dask

        if self.poll is not None:
            self.poll.started(chunk.index, chunk.size, chunk.advance)
        try:
            for attempt in range(RESUBMITS + 1):
                future = await asyncio.to_thread(self._submit, chunk)
                try:
                    return await asyncio.to_thread(future.result)
                except KilledWorker as exc:
                    if attempt == RESUBMITS:
                        raise
                    log.warning("%s[%d]: Dask gave up on it (%s); submitting it again", self.node.id, chunk.index, exc)
            raise AssertionError("unreachable")
        finally:
            if self.poll is not None:
                self.poll.finished(chunk.index)

    async def close(self) -> None:
        if self.poll is not None:
            await self.poll.close()
        if self._warming:  # long done, unless the batch was shorter than the warm-up: then not closed under it
            await asyncio.wait(self._warming, timeout=WARM_UP_WAIT)
            self._warming.clear()
        if self._started:
            self._started = False
            await asyncio.to_thread(self.runner.__exit__, None, None, None)


async def open_chunks(node: Node, run_id: str | None) -> DaskChunks:
    """Open the Dask session of a batch node: the flow's ledger then reads this run's cost table
    back from the shared store, where the workers record their calls."""
    started = time.time()
    chunks = DaskChunks(node, run_id, get_settings().batch)
    await chunks.start()
    if run_id is not None:
        ledger.LEDGER.recorded_elsewhere(run_id, started)
    return chunks
