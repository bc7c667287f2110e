"""Runs a `ChunkJob` (`flows.engine.chunk_job`) in the process it lands in: a Dask worker, say.

The pipeline is loaded and compiled once per process (the catalog keeps it), the items run with
the node's concurrency, and the item records come back. The worker must run the same pipeline
with the same settings as the flow, or the chunk fails saying what differs: a worker that read
another pipeline file or another model setting would compute other cache keys and pay again for
what is cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flows.engine.batch import run_item
from flows.engine.chunk_job import ChunkJob, pipeline_digest
from flows.engine.executor import run_subpipeline
from flows.engine.frozen_heap import frozen_heap
from flows.language import catalog
from tasks.core.errors import ConfigError
from tasks.core.settings import pin_settings, unpin_settings
from tasks.core.subpipelines import SUBPIPELINES
from tasks.providers.tiers import public_settings

if TYPE_CHECKING:
    from flows.language.compiler import Node, Pipeline


def _differences(mine: dict[str, Any], theirs: dict[str, Any], path: str = "") -> list[str]:
    found: list[str] = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{path}{key}.")
        elif a != b:
            found.append(f"{path}{key}: the flow's {b!r}, this worker's {a!r}")
    return found


def resolve_job(job: ChunkJob) -> tuple[Pipeline, Node]:
    """The compiled pipeline and node a job names, after checking this process runs the flow's
    pipeline with the flow's settings."""
    pipeline = catalog.load(job.pipeline)
    if pipeline_digest(pipeline) != job.digest:
        raise ConfigError(
            f"pipeline '{job.pipeline}' on this worker ({pipeline.file}) differs from the flow's: "
            "give every worker the same pipeline files (the same project checkout or FRUGAL_PIPELINES_DIR)"
        )
    node = pipeline.nodes.get(job.node)
    if node is None or node.for_each is None:
        raise ConfigError(f"pipeline '{job.pipeline}' has no for_each node '{job.node}'")
    differ = _differences(public_settings(), job.context.get("settings") or {})
    if differ:
        raise ConfigError(
            "this worker's settings differ from the flow's (" + "; ".join(differ) + "): give every worker the same "
            "FRUGAL_* environment, or its cache keys and models would not be the flow's"
        )
    return pipeline, node


async def run_job(job: ChunkJob, item_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Run a job's items here, `job.concurrency` at a time; `item_done` is called after each one.
    Returns the item records (never raises for an item's own failure)."""
    pinned = pin_settings()
    subpipelines = SUBPIPELINES.set(run_subpipeline)
    try:
        _, node = resolve_job(job)
        semaphore = asyncio.Semaphore(job.concurrency)

        async def one(index: int, item: Any) -> dict[str, Any]:
            async with semaphore:
                record = await run_item(node, job.context, item, index)
            if item_done is not None:
                item_done()
            return record

        with frozen_heap():  # a chunk is a batch in this process: see flows.engine.frozen_heap
            return list(await asyncio.gather(*(one(index, item) for index, item in job.items)))
    finally:
        SUBPIPELINES.reset(subpipelines)
        unpin_settings(pinned)
