"""How the engine runs a node: the `Runner` seam, and the inline runner (a plain function call).

The orchestrated runner (each node a Prefect task run) is Prefect integration and
lives in `flows.orchestration.task_runs`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from flows.engine import progress
from flows.engine.chunk_job import ChunkJob
from flows.engine.node_call import call_with_retries
from flows.language.compiler import Node

Records = list[dict[str, Any]]


@dataclass
class Chunk:
    """One chunk of a `for_each:` node, as a runner gets it: two ways to run the same items."""

    index: int
    size: int
    #: runs the items in this process, calling the batch's progress once per item
    work: Callable[[], Awaitable[Records]]
    #: the same chunk as plain data (`flows.engine.chunk_job`), for a runner that sends it to another process
    job: Callable[[], ChunkJob]
    #: moves the batch's progress by n items: a runner that runs `job` elsewhere reports through it
    advance: Callable[[int], None]
    #: the Prefect result-cache key of the chunk's records (None: not cached)
    key: str | None = None


class Runner(Protocol):
    mode: Any
    #: whether `skip` does anything (a visible task run): if not, the engine does not call it
    shows_skips: bool
    #: whether `run_chunk` keeps a chunk's records under `chunk.key` (if not, no key is computed)
    caches_chunks: bool

    async def call(self, node: Node, request: BaseModel) -> tuple[Any, bool]:
        """Run the node's step; return (value, served from Prefect's result cache)."""
        ...

    async def skip(self, node: Node, reason: str) -> None: ...

    async def run_chunk(self, node: Node, chunk: Chunk) -> Records:
        """Run one chunk of a for_each node (a task run when orchestrated, its result cached under `chunk.key`)."""
        ...

    async def end_batch(self, node: Node) -> None:
        """The node's last chunk has finished (or the batch failed): release what its chunks held."""
        ...

    async def chunk_slots(self, node: Node, run_id: str) -> int:
        """Chunks that can run at once (FRUGAL_BATCH_CHUNKS_IN_FLIGHT=0 keeps twice that in flight)."""
        ...

    async def progress(self, pipeline: str, node: Node, done: int, total: int | None) -> None: ...


class InlineRunner:
    """Calls the step function directly: no task runs, same retries and timeouts."""

    mode: Literal["inline"] = "inline"
    shows_skips = False
    caches_chunks = False  # nothing to keep records in: computing a key cost ~4 % of an all-cached rerun

    async def call(self, node: Node, request: BaseModel) -> tuple[Any, bool]:
        spec = node.spec
        if not spec.retries and spec.timeout_seconds is None:  # the usual node: one plain call, one frame less
            return await node.step.fn(request), False
        return await call_with_retries(node, request), False

    async def skip(self, node: Node, reason: str) -> None:
        return None

    async def run_chunk(self, node: Node, chunk: Chunk) -> Records:
        return await chunk.work()

    async def end_batch(self, node: Node) -> None:
        return None

    async def chunk_slots(self, node: Node, run_id: str) -> int:
        return 1  # chunks share this process's event loop

    async def progress(self, pipeline: str, node: Node, done: int, total: int | None) -> None:
        progress.report(pipeline, node.id, done, total)
