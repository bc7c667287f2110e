"""The orchestrated runner: each node a Prefect task run named after its node id, each chunk of a
`for_each:` node one task run.

Skipped nodes (an `if:` that was false) are not task runs by default: the run's Markdown
artifact lists and colours them (`flows.orchestration.run_artifact`). A cache hit of `answer`
skips 6 of its 8 nodes, and a placeholder task run costs the Prefect server as much as a real
one (~60 ms of its CPU each on a 2-core machine, docs/performance.md). First measured by
`tests/benchmarks/bench_rest.py` (30 REST cache hits per phase, SQLite server, a 2-core machine
at load ~12): with them (`frugal serve --record-skips`, 6 task runs per hit)
p50 2,945 ms and 892 ms of server CPU per call; without (2 task runs) 1,556–2,026 ms and
618–660 ms.

A run whose prompt-cache lookup said `bypass` (the `bypass_cache` input) also bypasses
Prefect's result cache for its model calls (`refresh_cache`): the model is called again and
the cached result replaced, as the prompt cache's own bypass does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID

from prefect import Task, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State
from pydantic import BaseModel

from flows.engine import progress
from flows.engine.runners import Chunk, Records
from flows.language.compiler import Node, Pipeline
from flows.orchestration.dask_chunks import CHUNK_KEY, DaskChunks, open_chunks
from tasks.core.settings import get_settings

log = logging.getLogger("frugal")


@task(name="skipped", cache_policy=NO_CACHE, persist_result=False)
async def _skipped(reason: str) -> State[None]:
    """A visible placeholder for a node whose `if:` was false: a Completed state named Skipped."""
    return Completed(name="Skipped", message=reason)


@task(name="chunk", cache_policy=NO_CACHE, persist_result=False)
async def _chunk(work: Callable[[], Awaitable[Any]], items: int, key: str | None = None) -> Any:
    """A chunk of a `for_each:` node: `items` items run as plain async code, in the flow's process."""
    return await work()


#: the default of `OrchestratedRunner(record_skips=...)` in this context (`frugal serve --record-skips`)
RECORD_SKIPS: ContextVar[bool] = ContextVar("record_skips", default=False)


class OrchestratedRunner:
    """Each node is a Prefect task run named after its node id."""

    mode: Literal["orchestrated"] = "orchestrated"
    caches_chunks = True  # a chunk's records persist as a Prefect result under its key

    def __init__(self, *, record_skips: bool | None = None) -> None:
        #: a *Skipped* task run per skipped node (the engine asks `shows_skips`)
        self.shows_skips = RECORD_SKIPS.get() if record_skips is None else record_skips
        #: set once this run's cache lookup said `bypass`: model calls refresh Prefect's result cache
        self.bypass = False
        self._tasks: dict[int, Task[Any, Any]] = {}
        self._refreshing: dict[int, Task[Any, Any]] = {}
        self._skips: dict[int, Task[Any, Any]] = {}
        self._progress: dict[int, UUID] = {}
        #: each finished node's state, so a node's task run names its upstream nodes (the UI's run graph)
        self._states: dict[str, State[Any]] = {}
        #: batch nodes whose chunks run on Dask, while they run (opened once: its chunks ask at the same time)
        self._remote: dict[str, asyncio.Task[DaskChunks]] = {}

    def _upstream(self, node: Node) -> list[State[Any]]:
        """The completed states of the node's dependencies (a failed one would stop Prefect from running it)."""
        return [state for dep in node.deps if (state := self._states.get(dep)) is not None and state.is_completed()]

    def task_for(self, node: Node) -> Task[Any, Any]:
        prepared = self._tasks.get(id(node))
        if prepared is None:
            spec = node.spec
            options: dict[str, Any] = {
                "name": node.id,
                "task_run_name": node.id,
                "retries": spec.retries,
                "retry_delay_seconds": spec.retry_delay_seconds,
                "timeout_seconds": spec.timeout_seconds,
            }
            if node.step.model_call and spec.cache_ttl is not None:
                options["cache_expiration"] = timedelta(seconds=spec.cache_ttl)
            prepared = self._tasks[id(node)] = node.step.task.with_options(**options)
        return prepared

    def _refreshing_task(self, node: Node) -> Task[Any, Any]:
        prepared = self._refreshing.get(id(node))
        if prepared is None:
            prepared = self._refreshing[id(node)] = self.task_for(node).with_options(refresh_cache=True)
        return prepared

    async def call(self, node: Node, request: BaseModel) -> tuple[Any, bool]:
        prepared = self._refreshing_task(node) if self.bypass and node.step.model_call else self.task_for(node)
        state = await prepared(request, return_state=True, wait_for=self._upstream(node))
        self._states[node.id] = state
        value = await state.aresult()
        if getattr(value, "cache", None) == "bypass":
            self.bypass = True
        return value, state.name == "Cached"

    async def run_chunk(self, node: Node, chunk: Chunk) -> Records:
        """One task run per chunk, named `node[index]`: never one per item.

        With a key, the chunk's records persist as a Prefect result: a re-run (after a
        kill, say) gets a finished chunk back as *Cached* without running its items.
        With FRUGAL_BATCH_RUNNER=dask the chunk goes to a Dask worker as plain data
        (`flows.orchestration.dask_chunks`); otherwise it runs here.
        """
        if get_settings().batch.runner == "dask":
            return await (await self._dask(node, chunk.job().run_id)).run(chunk)
        options: dict[str, Any] = {"name": node.id, "task_run_name": f"{node.id}[{chunk.index}]"}
        if chunk.key is not None:
            options |= {
                "cache_policy": CHUNK_KEY,
                "persist_result": True,
                "cache_expiration": timedelta(seconds=get_settings().cache.ttl),
            }
        return await _chunk.with_options(**options)(chunk.work, chunk.size, chunk.key)  # type: ignore[no-any-return]

    async def _dask(self, node: Node, run_id: str) -> DaskChunks:
        opening = self._remote.get(node.id)
        if opening is None:
            opening = self._remote[node.id] = asyncio.create_task(open_chunks(node, run_id))
        return await asyncio.shield(opening)  # a chunk cancelled meanwhile leaves it to the others

    async def chunk_slots(self, node: Node, run_id: str) -> int:
        """1 in this process; on Dask, the threads of the cluster's workers."""
        if get_settings().batch.runner != "dask":
            return 1
        return await (await self._dask(node, run_id)).slots()

    def connect_early(self, pipeline: Pipeline, run_id: str) -> None:
        """With FRUGAL_BATCH_RUNNER=dask, start opening the Dask session of each batch node the run
        will reach (a `for_each:` without an `if:`) now, in the background: connecting and warming
        the cluster up (`flows.orchestration.dask_warmup`) then overlap the nodes before it
        instead of holding up its first chunk. `close` ends those the run never reached."""
        if get_settings().batch.runner != "dask":
            return
        for node in pipeline.nodes.values():
            if node.for_each is not None and node.condition is None and node.id not in self._remote:
                self._remote[node.id] = asyncio.create_task(open_chunks(node, run_id))

    async def end_batch(self, node: Node) -> None:
        opening = self._remote.pop(node.id, None)
        if opening is not None:
            await self._close(opening)

    async def close(self) -> None:
        """The run is over: close the Dask sessions of batch nodes it did not reach (it failed before them)."""
        while self._remote:
            await self._close(self._remote.pop(next(iter(self._remote))))

    @staticmethod
    async def _close(opening: asyncio.Task[DaskChunks]) -> None:
        try:
            remote = await opening
        except Exception as exc:  # never opened: a chunk that asked for it failed saying why, if one did
            log.warning("the Dask cluster was not reached: %s: %s", type(exc).__name__, exc)
            return
        await remote.close()

    async def progress(self, pipeline: str, node: Node, done: int, total: int | None) -> None:
        progress.report(pipeline, node.id, done, total)
        description = f"{pipeline}: {node.id}: {done} of {total if total is not None else '?'} items"
        artifact = self._progress.get(id(node))
        if artifact is None:
            self._progress[id(node)] = await acreate_progress_artifact(
                progress.percent(done, total), key=f"{pipeline}-{node.id}-progress".replace("_", "-"), description=description
            )
        else:
            await aupdate_progress_artifact(artifact, progress.percent(done, total), description=description)

    async def skip(self, node: Node, reason: str) -> None:
        skip = self._skips.get(id(node))
        if skip is None:
            skip = self._skips[id(node)] = _skipped.with_options(name=node.id, task_run_name=node.id)
        self._states[node.id] = await skip(reason, return_state=True, wait_for=self._upstream(node))  # type: ignore[misc]
