"""A Dask cluster made ready for a batch's chunks before the first one arrives.

What the first chunk of a batch paid on a cluster started afresh, measured with
`tests/benchmarks/bench_dask_batch.py` (one `dask worker` of two threads, 2-core host at load ~1):

- **the scheduler** unpickles every task it is given (Dask requires the same software there as on
  the client), so the first chunk made it import Prefect and the project: 2.0-2.9 s before the
  chunk reached a worker; the next chunks ~10 ms;
- **the worker**, on top of the imports a chunk needs (the benchmark imported those before its
  clock started), compiled the pipelines and loaded the provider transport and the price
  database on the first chunk: ~0.5 s before its first model call, ~0.1 s on the next chunks.

So when a batch connects to the cluster (`flows.orchestration.dask_chunks`: at the flow's start,
while the nodes before the batch run), it sends both their work at once, in the background: the
scheduler imports what unpickling a chunk needs, on a thread of its own (its event loop keeps
serving); every worker, and every worker that joins later, does the same and compiles the batch's
pipelines (`WarmUp`, a worker plugin). The first chunk's submission does not wait for it: whatever
is done when it arrives is not paid again. Warming a warm process costs a few milliseconds.

That hides what fits before the first chunk: the flow reaches it ~0.4 s after it starts, and a
bare scheduler's imports take longer. A cluster whose processes start with
`--preload flows.orchestration.dask_warmup` (`dask scheduler --preload ...`, `dask worker
--preload ...`, README) does the imports when each process starts (`dask_setup`), so not even the
first batch after a restart waits for them. The benchmark's first batch on one worker (400 calls at
a 600 requests/min limit): 87.2 % of the limit before (its first chunk reached the provider 5.3 s
after the run began), 88.2 % (4.8 s) with the warm-up at connect alone, 94.2 % (1.6 s) with
`--preload` (the in-process runner: 91-92 %, 2.4-2.8 s, in the same runs).

A warm-up that fails is logged and costs nothing else: the chunk then meets the same problem and
says what it is (a worker without the project, say).

Kept light: this module is imported by the scheduler and the workers to unpickle the warm-up.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger("frugal")

#: what unpickling and running a chunk imports: the chunk task and Prefect's task engine
CHUNK_MODULES = ("flows.orchestration.dask_chunks", "prefect.task_engine")
#: the worker plugin's name: registered again by each batch, it replaces the last one
PLUGIN_NAME = "frugal-warm-up"


def import_chunk_modules() -> None:
    for module in CHUNK_MODULES:
        importlib.import_module(module)


def warm(pipeline: str | None = None) -> float:
    """Do here what a chunk of `pipeline` would otherwise do on its first run; seconds it took."""
    started = time.perf_counter()
    import_chunk_modules()
    from flows.language import catalog
    from tasks.core.pricing import rates_for
    from tasks.providers.tiers import public_settings, reference_model
    from tasks.providers.transport import load_transport

    load_transport()
    tiers = public_settings()  # what a chunk compares with the flow's (an Ollama probe, if the tier is `auto`)
    for model in {f"{tiers[t]['provider']}/{tiers[t]['model']}" for t in ("slm", "llm")} | {reference_model()}:
        rates_for(model)  # the price database, read once per process
    if pipeline is not None:
        compiled = catalog.load(pipeline)
        for node in compiled.nodes.values():  # the pipelines its items run (`run_pipeline` with a fixed name)
            name = node.spec.with_.get("name") if node.step.name == "run_pipeline" else None
            if isinstance(name, str) and "{" not in name:
                catalog.load(name)
    return time.perf_counter() - started


class WarmUp(WorkerPlugin):
    """Set up on every worker of the cluster, now and as they join: `warm` for a batch's pipeline,
    on a thread (the worker keeps answering the scheduler meanwhile)."""

    name = PLUGIN_NAME

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline

    async def setup(self, worker: Any) -> None:
        try:
            took = await asyncio.to_thread(warm, self.pipeline)
        except Exception as exc:  # the warm-up only saves time: the first chunk meets the problem and says it
            log.warning("frugal: warming this worker up for pipeline %r failed: %s: %s", self.pipeline, type(exc).__name__, exc)
            return
        log.info("frugal: worker warmed up for pipeline %r in %.2fs", self.pipeline, took)


async def warm_scheduler() -> None:
    """Run on the scheduler (`Client.run_on_scheduler`): the imports that unpickling a chunk needs, on a thread."""
    try:
        await asyncio.to_thread(import_chunk_modules)
    except Exception as exc:  # the first chunk's graph then fails to unpickle, and Dask says why
        log.warning("frugal: warming the scheduler up failed: %s: %s", type(exc).__name__, exc)


def dask_setup(service: Any) -> None:
    """`--preload flows.orchestration.dask_warmup` on `dask scheduler` or `dask worker`: the imports at start."""
    import_chunk_modules()
