"""`for_each:` nodes: many items, in chunks, with bounded concurrency.

Items stream from their source (`tasks.steps.sources`) and are cut into chunks of
`chunk_size`; each chunk is one unit for the runner (one Prefect task run when
orchestrated, never one per item). Inside a chunk, items run as plain async
code under one semaphore of `concurrency` shared by every chunk, and up to
`chunks_in_flight` chunks run at once so the model never idles at a chunk's
tail (by default twice the chunks the runner can run at once: 2 in process, twice the
Dask workers' threads on Dask). A runner may instead send a chunk to another process as plain data
(`flows.engine.chunk_job`; Dask workers, `flows.orchestration.dask_chunks`),
where the chunk runs its items with the same `concurrency`. Progress is counted
per item, wherever the item ran. An item that fails is an item error, recorded
with its reason; the node itself does not fail for it.

The node's output is a small summary. Per-item results go to spool files
(one JSONL per chunk) that later nodes read back in input order, so memory
does not grow with the number of items. A list source (a small fan-out)
returns the list of per-item outputs instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.engine.chunk_job import ChunkJob, JobMaker
from flows.engine.frozen_heap import frozen_heap
from flows.engine.node_call import build_request, call_with_retries, jsonable
from flows.engine.runners import Chunk, Runner
from flows.language.templates import TemplateProblem, evaluate
from tasks.core.canonical import sha256_of
from tasks.core.errors import StepError
from tasks.core.settings import get_settings
from tasks.steps.sources import count_items, iter_items

if TYPE_CHECKING:
    from flows.language.compiler import Node, Pipeline

MAX_LISTED_FAILURES = 20
log = logging.getLogger("frugal")


@dataclass
class Tally:
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    cache: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        self.total += 1
        if record["status"] == "error":
            self.failed += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures.append({"index": record["index"], "id": record.get("id"), "error": record["error"]})
            return
        if record["status"] == "skipped":
            self.skipped += 1
            return
        self.ok += 1
        out = record.get("output")
        if isinstance(out, dict):
            for key, counter in (("cache", self.cache), ("route", self.routes), ("model", self.models)):
                if isinstance(out.get(key), str):
                    counter[out[key]] += 1


def _item_id(item: Any, index: int) -> str:
    if isinstance(item, dict) and item.get("id") is not None:
        return str(item["id"])
    return str(index)


async def run_item(node: Node, context: dict[str, Any], item: Any, index: int) -> dict[str, Any]:
    """Run one item through the node's step; never raises for the item's own failure."""
    record: dict[str, Any] = {"index": index, "id": _item_id(item, index)}
    if isinstance(item, dict) and item.get("source") is not None:
        record["source"] = item["source"]
    scope = {**context, "item": item, "index": index}
    try:
        if node.condition is not None and not evaluate(node.condition, scope):
            return {**record, "status": "skipped"}
        request = build_request(node, scope)
        value = await call_with_retries(node, request)
    except TemplateProblem as exc:
        return {**record, "status": "error", "error": f"{node.id}: {exc}"}
    except Exception as exc:  # an item's failure is recorded, the batch goes on
        message = str(exc) or type(exc).__name__
        return {**record, "status": "error", "error": message}
    return {**record, "status": "ok", "output": jsonable(value)}


class Spool:
    """Per-chunk JSONL files of item records, in a directory removed after the run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, chunk: int, records: list[dict[str, Any]]) -> None:
        final = self.root / f"chunk-{chunk:07d}.jsonl"
        tmp = final.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for record in sorted(records, key=lambda r: r["index"]):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(final)


#: runs whose spool folder this process made (the others have nothing to remove)
_spooled: set[str] = set()


def run_directory(run_id: str | None) -> Path:
    return get_settings().engine.data_dir / "runs" / (run_id or uuid.uuid4().hex)


def remove_run_directory(run_id: str | None) -> None:
    if run_id and run_id in _spooled:
        _spooled.discard(run_id)
        shutil.rmtree(run_directory(run_id), ignore_errors=True)


def _item_identity(item: Any) -> Any:
    """An item as it affects the result: a file's size and modification time stand for its text."""
    if isinstance(item, dict) and item.get("text") is None and isinstance(item.get("source"), str):
        try:
            stat = os.stat(item["source"])
        except OSError:
            return item
        return {**item, "stat": [stat.st_size, stat.st_mtime_ns]}
    return item


def chunk_key(node: Node, context: dict[str, Any], chunk: list[tuple[int, Any]]) -> str | None:
    """The Prefect result-cache key of a chunk: same pipeline, node, inputs, settings and items, same records.

    A chunk that finished in an earlier run (even one that was killed later) is then
    served from Prefect's persisted results and costs nothing, not even cache look-ups.
    """
    try:
        return "chunk-" + sha256_of(
            {
                "pipeline": context["pipeline"],
                "node": node.id,
                "with": node.spec.with_,
                "inputs": context["inputs"],
                "settings": context["settings"],
                "upstream": {dep: context.get(dep) for dep in node.deps},
                "items": [[index, _item_identity(item)] for index, item in chunk],
            }
        )
    except (TypeError, ValueError):  # something that is not JSON: no result caching for this chunk
        return None


class ProgressReporter:
    """Sends the newest progress in the background, one update at a time: an item that finishes
    does not wait for the Prefect API before the next one, and updates that queue up collapse
    into the latest (at most one send per `interval` seconds, and the last one at `flush`). A
    failed update is logged; it does not fail the batch."""

    def __init__(self, send: Callable[[int], Awaitable[None]], interval: float = 0.0) -> None:
        self._send = send
        self._interval = interval
        self._latest: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    def report(self, done: int) -> None:
        self._latest = done
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._latest is not None:
            done, self._latest = self._latest, None
            try:
                await self._send(done)
            except Exception as exc:  # progress is for the eye: the batch goes on
                log.warning("progress update failed: %s: %s", type(exc).__name__, exc)
            if self._interval and self._latest is None and not self._hurry.is_set():
                # wait: the items that finish meanwhile go in one update (unless the batch ends first)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._interval)

    async def flush(self) -> None:
        self._hurry.set()
        if self._task is not None:
            await self._task


#: seconds between two progress updates of a batch (the CLI bar, the Prefect progress artifact)
PROGRESS_INTERVAL = 0.25


async def run_batch(node: Node, context: dict[str, Any], runner: Runner, run_id: str, pipeline: Pipeline | None = None) -> Any:
    """Run a `for_each:` node; returns its summary (or the item outputs, for a list source)."""
    name = str(context["pipeline"]["name"])
    try:
        source = evaluate(node.for_each, context) if node.for_each is not None else None
    except TemplateProblem as exc:
        raise StepError(node.id, f"for_each: {exc}") from exc
    if source is None:  # nothing to fan out over (e.g. the parts of a document that needs no parts)
        return []
    settings = get_settings().batch
    chunk_size = node.spec.chunk_size or settings.chunk_size
    concurrency = node.spec.concurrency or settings.concurrency
    items = iter_items(node.id, source)
    total = count_items(source)
    in_memory = source is None or isinstance(source, list)
    semaphore = asyncio.Semaphore(concurrency)
    chunks_in_flight = settings.chunks_in_flight
    outputs: dict[int, Any] = {}
    if not in_memory:
        _spooled.add(run_id)
    spool = None if in_memory else Spool(run_directory(run_id) / node.id)
    tally = Tally()
    started = time.perf_counter()
    reporter = ProgressReporter(lambda done: runner.progress(name, node, done, total), PROGRESS_INTERVAL)
    progress_done = 0

    def advance(n: int) -> None:
        """Items done (per document: a chunk in this process reports each item as it ends)."""
        nonlocal progress_done
        progress_done += n
        if not in_memory:
            reporter.report(progress_done)

    async def run_here(indexed_item: tuple[int, Any], done: Callable[[int], None]) -> dict[str, Any]:
        index, item = indexed_item
        async with semaphore:
            record = await run_item(node, context, item, index)
        done(1)
        return record

    async def chunk_work(chunk: list[tuple[int, Any]], done: Callable[[int], None]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(run_here(indexed_item, done) for indexed_item in chunk)))

    jobs: list[JobMaker] = []

    def job_for(chunk_index: int, chunk: list[tuple[int, Any]]) -> ChunkJob:
        if pipeline is None:
            raise StepError(node.id, "this batch cannot run its chunks in another process: its pipeline is not known")
        if not jobs:
            jobs.append(JobMaker(pipeline, node, context, run_id, concurrency))
        return jobs[0](chunk_index, chunk)

    async def finished(records: list[dict[str, Any]]) -> None:
        for record in records:
            tally.add(record)
            if in_memory:
                outputs[record["index"]] = record.get("output")

    pending: set[asyncio.Future[list[dict[str, Any]]]] = set()

    async def run_chunk(chunk_index: int, chunk: list[tuple[int, Any]]) -> list[dict[str, Any]]:
        key = None if in_memory or not runner.caches_chunks else chunk_key(node, context, chunk)
        counted = 0

        def chunk_advance(n: int) -> None:
            nonlocal counted
            n = min(n, len(chunk) - counted)
            if n > 0:
                counted += n
                advance(n)

        call = Chunk(
            index=chunk_index,
            size=len(chunk),
            work=lambda: chunk_work(chunk, chunk_advance),
            job=lambda: job_for(chunk_index, chunk),
            advance=chunk_advance,
            key=key,
        )
        records = await runner.run_chunk(node, call)
        chunk_advance(len(records))  # what was not counted item by item (a chunk from Prefect's result cache)
        if spool is not None:  # written here, so a chunk served from Prefect's result cache is spooled too
            spool.write(chunk_index, records)
        return records

    if not in_memory:  # a small in-memory fan-out (e.g. a document's parts) is not worth a progress display
        await runner.progress(name, node, 0, total)
    indexed = enumerate(items)
    # what lives as long as the process is left out of garbage collections while a batch of documents runs
    with contextlib.nullcontext() if in_memory else frozen_heap():
        try:
            for chunk_index in itertools.count():
                chunk = list(itertools.islice(indexed, chunk_size))
                if not chunk:
                    break
                pending.add(asyncio.create_task(run_chunk(chunk_index, chunk)))
                if not chunks_in_flight:  # auto: twice what can run at once, so none waits at a chunk's end
                    chunks_in_flight = 2 * await runner.chunk_slots(node, run_id)
                if len(pending) >= chunks_in_flight:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        await finished(task.result())
            for task in asyncio.as_completed(pending):
                await finished(await task)
        except BaseException:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        finally:
            await runner.end_batch(node)
            await reporter.flush()
    if in_memory:
        return [outputs.get(i) for i in range(len(outputs))]
    assert spool is not None
    return {
        "kind": "batch",
        "spool": str(spool.root),
        "count": tally.total,
        "total": tally.total,
        "ok": tally.ok,
        "failed": tally.failed,
        "skipped": tally.skipped,
        "failed_share": round(tally.failed / tally.total, 6) if tally.total else 0.0,
        "cache": dict(tally.cache),
        "routes": dict(tally.routes),
        "models": dict(tally.models),
        "failures": tally.failures,
        "seconds": round(time.perf_counter() - started, 3),
    }
