"""Chunks of a `for_each:` node in worker processes, so that a batch uses more than one CPU.

One event loop spends ~1.5 ms of CPU on a cold batch item (most of it in the HTTP
client), so one process tops out near 600 items/s whatever the model allows.
With ``FRUGAL_BATCH_WORKERS=N`` (N > 1) a batch runs in N processes: this one
and N - 1 workers (``python -m flows.chunk_workers``), started on first use and
kept for later batches of the same event loop.

A chunk sent to a worker travels as plain data (`ChunkJob`, pickled over the
worker's stdin): the pipeline file, the node id, the run's context (JSON), the
chunk's items, the `FRUGAL_*` and provider variables of the caller's
environment, its working directory, and the flow run the items belong to.
The worker runs the items exactly as the caller would (`run_item`, bounded by its share of the
concurrency), stores their cost-ledger entries before answering, and returns
the item records with the ledger records of the items (the caller's cost table
counts them). Identical requests in two processes share one model call through
the cache's leases, as across workers.

A worker dies with the process that started it (Linux: PR_SET_PDEATHSIG; else
at the end of its input), so a killed batch leaves nothing behind that goes on
calling the model. A worker that dies mid-chunk costs nothing but time: the
chunk runs again in the caller, where the items already answered are cache hits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flows.settings import WATCHED

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if TYPE_CHECKING:
    from flows.ledger.record import RunRecord

#: variables a worker takes from the caller with each chunk (the caller's environment may have changed
#: since the worker started): the settings' own, and the ones the project reads directly
PASSED_PREFIXES = ("FRUGAL_", "OLLAMA_", "OPENAI_", "ANTHROPIC_")


@dataclass
class ChunkJob:
    pipeline_file: str
    node_id: str
    context: dict[str, Any]
    chunk: list[tuple[int, Any]]
    concurrency: int
    env: dict[str, str]
    flow_run: tuple[str | None, str | None]
    #: the caller's working directory: relative paths (a destination, a source) mean the same there
    cwd: str = "."


@dataclass
class ChunkDone:
    records: list[dict[str, Any]]
    #: the ledger records of the items, for the caller's cost table (their entries are stored already)
    ledger: list[RunRecord]


_WATCHED = frozenset(WATCHED)


def _passed(name: str) -> bool:
    return name in _WATCHED or name.startswith(PASSED_PREFIXES)


def caller_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if _passed(k)}


# -- the caller's side -------------------------------------------------------------------------


class WorkerFailed(RuntimeError):
    """A worker could not run a chunk (it died, or its run raised): the caller runs the chunk itself."""


@dataclass
class _Failure:
    message: str


class Worker:
    """One worker process, talking length-prefixed pickles over its stdin and stdout.

    Plain pipes, read and written on a thread (one hop per chunk): a worker then
    serves any event loop of this process, so a long-lived process (`frugal
    serve`, a Prefect worker) starts its workers once.
    """

    def __init__(self) -> None:
        path = os.environ.get("PYTHONPATH")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.chunk_workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": PROJECT_DIR + (os.pathsep + path if path else "")},
        )

    def run(self, job: ChunkJob) -> ChunkDone:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(len(data).to_bytes(8, "big") + data)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(8)
            if len(head) < 8:
                raise EOFError
            body = self.proc.stdout.read(int.from_bytes(head, "big"))
            answer = pickle.loads(body)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self.stop()
            raise WorkerFailed(f"worker process {self.proc.pid} ended ({self.proc.poll()})") from exc
        if isinstance(answer, _Failure):
            raise WorkerFailed(answer.message)
        assert isinstance(answer, ChunkDone)
        return answer

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


_idle: list[Worker] = []
_idle_lock = threading.Lock()
_pid = os.getpid()


def _take() -> Worker:
    global _pid
    with _idle_lock:
        if _pid != os.getpid():  # a forked child does not own its parent's workers
            _idle.clear()
            _pid = os.getpid()
        while _idle:
            worker = _idle.pop()
            if worker.alive():
                return worker
            worker.stop()
    return Worker()


def _give_back(worker: Worker) -> None:
    with _idle_lock:
        _idle.append(worker)


def idle_workers() -> list[Worker]:
    with _idle_lock:
        return list(_idle)


async def run_remote(job: ChunkJob) -> ChunkDone:
    """Run `job` in an idle worker of this process, or in a new one."""
    worker = await asyncio.to_thread(_take)
    try:
        done = await asyncio.to_thread(worker.run, job)
    except BaseException:
        worker.stop()  # cancelled or failed mid-chunk: its state is unknown
        raise
    _give_back(worker)
    return done


# -- the worker's side -------------------------------------------------------------------------


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker ends at the end of its input
        pass
    if os.getppid() == 1:  # the parent died before the line above
        sys.exit(0)


def _use_env(env: dict[str, str]) -> None:
    for name in [k for k in os.environ if _passed(k) and k not in env]:
        del os.environ[name]
    os.environ.update(env)


async def _run(job: ChunkJob) -> ChunkDone:
    from flows import catalog
    from flows.batch import run_item
    from flows.ledger.observer import LEDGER
    from flows.ledger.record import working_for
    from flows.ledger.writer import WRITER

    node = catalog.load(job.pipeline_file).nodes[job.node_id]
    limit = asyncio.Semaphore(job.concurrency)

    async def limited(item: Any, index: int) -> dict[str, Any]:
        async with limit:
            return await run_item(node, job.context, item, index)

    with working_for(job.flow_run):
        records = list(await asyncio.gather(*(limited(item, index) for index, item in job.chunk)))
    await asyncio.to_thread(WRITER.flush)  # the items' cost entries are stored before the chunk counts as done
    flow_run_id = job.flow_run[0]
    return ChunkDone(records, LEDGER.take_children(flow_run_id) if flow_run_id else [])


def main() -> None:
    """The worker: read a job, run it, write the answer; until the input ends."""
    _die_with_parent()
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    loop = asyncio.new_event_loop()
    while True:
        head = source.read(8)
        if len(head) < 8:
            return
        job = pickle.loads(source.read(int.from_bytes(head, "big")))
        _use_env(job.env)
        os.chdir(job.cwd)
        answer: ChunkDone | _Failure
        try:
            answer = loop.run_until_complete(_run(job))
        except Exception as exc:  # the caller runs the chunk itself
            answer = _Failure(f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(len(data).to_bytes(8, "big") + data)
        sink.flush()


if __name__ == "__main__":
    from flows.chunk_workers import main as worker_main  # this module by its name: what it pickles, the caller can load

    worker_main()
