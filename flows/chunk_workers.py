"""Worker processes for the items of a `for_each:` node, so that a batch uses more than one CPU.

One event loop spends ~0.9-1.5 ms of CPU on a cold batch item (by host), so one
process tops out near 650-1,100 items/s whatever the model allows. With ``FRUGAL_BATCH_WORKERS=N``
(N > 1) a batch runs in N processes: this one and N - 1 workers (``python -m
flows.chunk_workers``), leased when the batch starts and kept for the later
batches of this process. How a chunk's items are spread over them is
`flows.spread`'s business; this module is the processes and their protocol.

A job (a part of a chunk) travels as plain data (`ChunkJob`, pickled over the
worker's stdin, with its id): the pipeline file, the node id, the run's context
(JSON), the items, the `FRUGAL_*` and provider variables of the caller's
environment, its working directory, and the flow run the items belong to. A
worker runs several jobs at once on one event loop, under one semaphore of the
caller's share of the concurrency, exactly as the caller would (`run_item`); it
stores the items' cost-ledger entries before answering, and returns the item
records with the ledger records of the items (the caller's cost table counts
them). Identical requests in two processes share one model call through the
cache's leases, as across Prefect workers. A worker says it is ready once it
has imported what a job needs (~1.5 s); until then the caller runs every item.

A worker dies with the process that started it (Linux: PR_SET_PDEATHSIG; else
at the end of its input), so a killed batch leaves nothing behind that goes on
calling the model. A worker that dies mid-job costs nothing but time: its
items run in the caller, where the ones already answered are cache hits (a
request it had in flight waits for its lease to run out, FRUGAL_CACHE_LEASE_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flows.settings import WATCHED
from tasks.loops import call_soon_in

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
    """A worker could not run a job (it died, or its run raised): the caller runs those items itself."""


@dataclass
class _Failure:
    message: str


READY = "ready"


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    """Settle `future` from another thread, on its own loop."""
    call_soon_in(future.get_loop(), _settle, future, value)


class Worker:
    """One worker process, talking length-prefixed pickles over its stdin and stdout.

    Several jobs can be in flight at once (each frame carries its job's id); a
    thread reads the answers and settles each job's future on the loop that
    sent it, so a worker serves any event loop of this process, and a
    long-lived process (`frugal serve`, a Prefect worker) starts its workers once.
    The worker says it is ready once it has imported what a job needs.
    """

    def __init__(self) -> None:
        path = os.environ.get("PYTHONPATH")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.chunk_workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": PROJECT_DIR + (os.pathsep + path if path else "")},
        )
        self.items = 0  # items this worker has answered
        self.dead = False
        self._ready = False
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._jobs: dict[int, asyncio.Future[Any]] = {}
        self._ready_waiters: list[asyncio.Future[Any]] = []
        self._ids = itertools.count()
        threading.Thread(target=self._read, name=f"frugal-chunk-worker-{self.proc.pid}", daemon=True).start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                head = stdout.read(16)
                if len(head) < 16:
                    break
                job_id, size = int.from_bytes(head[:8], "big"), int.from_bytes(head[8:], "big")
                answer = pickle.loads(stdout.read(size))
                if answer == READY:
                    with self._lock:
                        self._ready, waiters, self._ready_waiters = True, self._ready_waiters, []
                    for waiter in waiters:
                        _resolve(waiter, True)
                    continue
                with self._lock:
                    future = self._jobs.pop(job_id, None)
                if future is not None:
                    _resolve(future, answer)
            reason = ""
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # its answers cannot be read any more
            reason = f": {type(exc).__name__}: {exc}"
        with self._lock:
            self.dead = True
            jobs, self._jobs = self._jobs, {}
            waiters, self._ready_waiters = self._ready_waiters, []
        failure = _Failure(self._ended() + reason)
        for future in jobs.values():
            _resolve(future, failure)
        for waiter in waiters:
            _resolve(waiter, False)

    async def ready(self) -> bool:
        """Wait until the worker can take jobs; False if it died first."""
        with self._lock:
            if self._ready or self.dead:
                return not self.dead
            waiter = asyncio.get_running_loop().create_future()
            self._ready_waiters.append(waiter)
        return bool(await waiter)

    async def run(self, job: ChunkJob) -> ChunkDone:
        """Run `job` in the worker; raises WorkerFailed if it cannot (and pickling errors for data that cannot travel)."""
        job_id = next(self._ids)
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self.dead:
                raise WorkerFailed(self._ended())
            self._jobs[job_id] = future
        assert self.proc.stdin is not None
        try:
            with self._write_lock:
                self.proc.stdin.write(job_id.to_bytes(8, "big") + len(data).to_bytes(8, "big") + data)
                self.proc.stdin.flush()
        except OSError as exc:
            self.stop()
            raise WorkerFailed(self._ended()) from exc
        try:
            answer = await future
        except BaseException:
            self.stop()  # cancelled mid-job: what the worker does next is unknown
            raise
        if isinstance(answer, _Failure):
            raise WorkerFailed(answer.message)
        assert isinstance(answer, ChunkDone)
        self.items += len(job.chunk)
        return answer

    def _ended(self) -> str:
        return f"worker process {self.proc.pid} ended (exit status {self.proc.poll()})"

    def busy(self) -> bool:
        with self._lock:
            return bool(self._jobs)

    def alive(self) -> bool:
        return not self.dead and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    pipe.close()


_idle: list[Worker] = []
_idle_lock = threading.Lock()
_pid = os.getpid()


def lease(n: int) -> list[Worker]:
    """`n` workers for one batch: idle ones of this process first, new ones (starting now) for the rest."""
    global _pid
    taken: list[Worker] = []
    with _idle_lock:
        if _pid != os.getpid():  # a forked child does not own its parent's workers
            _idle.clear()
            _pid = os.getpid()
        while _idle and len(taken) < n:
            worker = _idle.pop()
            if worker.alive():
                taken.append(worker)
            else:
                worker.stop()
    return taken + [Worker() for _ in range(n - len(taken))]


def give_back(workers: list[Worker]) -> None:
    """The batch is over: workers alive and idle wait for the next one, the others are stopped."""
    for worker in workers:
        if worker.alive() and not worker.busy():
            with _idle_lock:
                _idle.append(worker)
        else:
            worker.stop()


def idle_workers() -> list[Worker]:
    with _idle_lock:
        return list(_idle)


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


_limits: dict[int, asyncio.Semaphore] = {}


async def _run(job: ChunkJob) -> ChunkDone:
    from flows import catalog
    from flows.batch import run_item
    from flows.ledger.observer import LEDGER
    from flows.ledger.record import working_for
    from flows.ledger.writer import WRITER

    node = catalog.load(job.pipeline_file).nodes[job.node_id]
    limit = _limits.get(job.concurrency)  # shared by every job in flight: the caller's share of the concurrency
    if limit is None:
        limit = _limits[job.concurrency] = asyncio.Semaphore(job.concurrency)

    async def limited(item: Any, index: int) -> dict[str, Any]:
        async with limit:
            return await run_item(node, job.context, item, index)

    with working_for(job.flow_run):
        records = list(await asyncio.gather(*(limited(item, index) for index, item in job.chunk)))
    await asyncio.to_thread(WRITER.flush)  # the items' cost entries are stored before the job counts as done
    flow_run_id = job.flow_run[0]
    return ChunkDone(records, LEDGER.take_children(flow_run_id) if flow_run_id else [])


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's where it is installed (its event loop costs less CPU per item), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> None:
    """The worker: take jobs as they come, run them at once on one event loop, answer each; until the input ends."""
    _die_with_parent()
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    import flows.batch  # noqa: F401  what a job needs, imported before saying ready
    import flows.catalog  # noqa: F401
    import flows.ledger.observer  # noqa: F401
    import flows.ledger.writer  # noqa: F401

    gc.freeze()  # the ~140,000 objects of the imports stay: full collections need not walk them again
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    write_lock = threading.Lock()
    running: set[asyncio.Task[None]] = set()

    def answer(job_id: int, message: Any) -> None:
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer that cannot travel: the caller must still hear of its job
            data = pickle.dumps(_Failure(f"the answer cannot be sent back: {type(exc).__name__}: {exc}"))
        with write_lock:
            sink.write(job_id.to_bytes(8, "big") + len(data).to_bytes(8, "big") + data)
            sink.flush()

    async def serve(job_id: int, data: bytes) -> None:
        message: ChunkDone | _Failure
        try:
            job = pickle.loads(data)
            _use_env(job.env)  # the jobs in flight at once are one batch's: the same variables, the same folder
            os.chdir(job.cwd)
            message = await _run(job)
        except Exception as exc:  # the caller runs the job's items itself
            message = _Failure(f"{type(exc).__name__}: {exc}")
        answer(job_id, message)

    def start(job_id: int, data: bytes) -> None:
        task = loop.create_task(serve(job_id, data))
        running.add(task)
        task.add_done_callback(running.discard)

    def read() -> None:
        while True:
            head = source.read(16)
            if len(head) < 16:
                break
            data = source.read(int.from_bytes(head[8:], "big"))
            loop.call_soon_threadsafe(start, int.from_bytes(head[:8], "big"), data)
        loop.call_soon_threadsafe(loop.stop)

    answer(0, READY)
    threading.Thread(target=read, name="frugal-chunk-jobs", daemon=True).start()
    loop.run_forever()


if __name__ == "__main__":
    from flows.chunk_workers import main as worker_main  # this module by its name: what it pickles, the caller can load

    worker_main()
